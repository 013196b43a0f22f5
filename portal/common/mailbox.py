"""The demo mailbox: on the embedded default, sent emails are kept for staff to read.

With no ``EMAIL_BACKEND`` configured and not behind TLS (``PORTAL_HTTPS``), the portal sends
email through ``DemoMailboxBackend``: each message is printed as the console backend does and
also kept as one JSON file under ``<VAR_DIR>/mailbox/``, which the staff's "Demo mailbox" page
lists, newest first, with its links. A newcomer finds an invitation link there instead of in
the worker's log.

It can never serve a production portal: ``mailbox_enabled`` is false as soon as
``PORTAL_HTTPS`` is set or another backend is configured, the backend then refuses to store,
the page answers 404, and ``manage.py check`` reports the combination as an error.
"""

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.console import EmailBackend as ConsoleBackend

BACKEND = "portal.common.mailbox.DemoMailboxBackend"
# The newest this many messages are listed; older files stay on disk.
LISTED = 100
# A link in a plain-text email: up to the first space or closing bracket.
LINK = re.compile(r"https?://[^\s<>\"')\]]+")


def mailbox_enabled() -> bool:
    """Whether the demo mailbox is in use: the embedded default's email, never behind TLS."""
    return (
        bool(getattr(settings, "DEMO_MAILBOX", False))
        and settings.EMAIL_BACKEND == BACKEND
        and not settings.PORTAL_HTTPS
    )


def mailbox_dir() -> Path:
    return Path(settings.VAR_DIR) / "mailbox"


class DemoMailboxBackend(ConsoleBackend):
    """Prints each message like the console backend and keeps a copy in the mailbox folder."""

    def send_messages(self, email_messages: Any) -> int:
        if not mailbox_enabled():
            raise ImproperlyConfigured(
                "The demo mailbox serves the embedded default only: set EMAIL_BACKEND (and "
                "EMAIL_HOST) to send real email."
            )
        sent = super().send_messages(email_messages)
        folder = mailbox_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for message in email_messages:
            now = datetime.now(UTC)
            record = {
                "sent_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "from": message.from_email,
                "to": list(message.to),
                "subject": str(message.subject),
                "body": str(message.body),
            }
            # The name sorts by time; the random part keeps two messages of one moment apart.
            name = f"{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json"
            partial = folder / f".{name}.part"
            partial.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
            partial.replace(folder / name)  # whole files only: the page never reads half of one
        return sent


@dataclass(frozen=True)
class Mail:
    """One kept message, as the mailbox page shows it."""

    sent_at: datetime
    sender: str
    to: list[str]
    subject: str
    body: str

    @property
    def links(self) -> list[str]:
        return list(dict.fromkeys(LINK.findall(self.body)))


def mailbox_messages(limit: int = LISTED) -> list[Mail]:
    """The newest ``limit`` kept messages, newest first; unreadable files are skipped."""
    folder = mailbox_dir()
    if not folder.is_dir():
        return []
    mails = []
    for path in sorted(folder.glob("*.json"), reverse=True)[:limit]:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            mails.append(
                Mail(
                    sent_at=datetime.strptime(record["sent_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                        tzinfo=UTC
                    ),
                    sender=str(record.get("from", "")),
                    to=[str(address) for address in record.get("to", [])],
                    subject=str(record.get("subject", "")),
                    body=str(record.get("body", "")),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return mails


@checks.register(checks.Tags.security, deploy=False)
def mailbox_not_in_production(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The mailbox backend behind TLS is a configuration error: production sends real email."""
    if settings.EMAIL_BACKEND == BACKEND and settings.PORTAL_HTTPS:
        return [
            checks.Error(
                "EMAIL_BACKEND is the demo mailbox, which keeps emails (invitation links "
                "included) for staff to read; it serves the embedded default only.",
                hint="Set EMAIL_BACKEND to an SMTP backend when PORTAL_HTTPS=1.",
                id="portal.E001",
            )
        ]
    return []
