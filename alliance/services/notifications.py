"""Email to people, rendered now in their language and sent by a worker after commit."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import translation

from alliance.tasks import email_send_task

_muted: ContextVar[bool] = ContextVar("notifications_muted", default=False)


@contextmanager
def notifications_muted() -> Iterator[None]:
    """Send no email inside this block (seeding fictional people, for instance)."""
    token = _muted.set(True)
    try:
        yield
    finally:
        _muted.reset(token)


def absolute_url(path: str) -> str:
    """A link for an email: the portal's public base URL plus a path from ``reverse``."""
    return settings.PORTAL_BASE_URL.rstrip("/") + path


def email_notify(
    *, to: list[str], template: str, context: dict[str, Any], language: str | None = None
) -> None:
    """Render ``alliance/email/<template>.txt`` (first line is the subject) and send on commit.

    A template name with a slash (``projects/email/agreement_pending``) names the file under
    ``templates/`` of another app. Nothing is sent if the surrounding transaction rolls back.
    """
    email_notify_each(to=[list(to)], template=template, context=context, language=language)


def email_notify_each(
    *,
    to: list[list[str]],
    template: str,
    context: dict[str, Any],
    language: str | None = None,
) -> None:
    """Like ``email_notify``, rendered once and sent as one email to each list of addresses
    (nobody sees the others'), for a message that is the same for all of them."""
    if _muted.get() or not to:
        return
    name = f"{template}.txt" if "/" in template else f"alliance/email/{template}.txt"
    with translation.override(language or translation.get_language() or settings.LANGUAGE_CODE):
        rendered = render_to_string(name, context).strip()
    subject, _, body = rendered.partition("\n")
    for addresses in to:
        email_send_task.delay_on_commit(subject.strip(), body.strip() + "\n", list(addresses))
