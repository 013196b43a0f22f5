"""Webhooks: an institution's integrators register endpoints; the portal POSTs each event there.

Every body is JSON, signed with HMAC-SHA256 under the webhook's secret::

    X-Portal-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>." + body)>
    X-Portal-Timestamp: <Unix seconds>

A receiver recomputes the signature over the timestamp and the exact bytes it received, compares
in constant time, and refuses an old timestamp (a replay). A delivery is a row, created in the
transaction of the event it carries and sent by a worker after commit; a failed attempt (no
answer, or not a 2xx) is tried again after a delay that doubles each time, up to
``WEBHOOK_MAX_ATTEMPTS`` attempts, and every outcome is recorded on the delivery.
"""

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import Event, Institution, Webhook, WebhookDelivery
from alliance.permissions import acting_membership
from alliance.services.audit import audit_record

User = AbstractBaseUser | AnonymousUser

SIGNATURE_HEADER = "X-Portal-Signature"
TIMESTAMP_HEADER = "X-Portal-Timestamp"
EVENT_HEADER = "X-Portal-Event"
DELIVERY_HEADER = "X-Portal-Delivery"
# An institution registers this many webhooks at most.
MAX_WEBHOOKS = 20
URL_MAX = 500
_url_check = URLValidator(schemes=["http", "https"])


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 under ``secret`` of ``<timestamp>.`` followed by ``body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_manager_institution(actor: User | None) -> Institution:
    """The institution whose webhooks ``actor`` manages (their own, as one of its admins)."""
    own = acting_membership(actor)
    if not actor.has_perm("alliance.change_institution", own.institution):  # type: ignore[union-attr]
        raise PermissionDenied(_("Only the institution's admins manage its webhooks."))
    return own.institution


def _require_admin(actor: User | None, institution: Institution) -> None:
    """Only the institution's own admins manage its webhooks."""
    own = acting_membership(actor)
    if own.institution_id != institution.pk or not actor.has_perm(  # type: ignore[union-attr]
        "alliance.change_institution", institution
    ):
        raise PermissionDenied(_("Only the institution's admins manage its webhooks."))


def clean_url(url: Any) -> str:
    """An absolute http(s) URL without credentials, or ValidationError saying what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError({"url": _("Give the URL the portal should send events to.")})
    url = url.strip()
    if len(url) > URL_MAX:
        raise ValidationError({"url": _("A URL has at most %(n)s characters.") % {"n": URL_MAX}})
    try:
        _url_check(url)
    except ValidationError:
        raise ValidationError({"url": _("Give an absolute http:// or https:// URL.")}) from None
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValidationError({"url": _("Put no user name or password in the URL.")})
    return url


def clean_events(events: Any) -> list[str]:
    """A non-empty list of known event names, in a fixed order."""
    if isinstance(events, str) or not isinstance(events, list | tuple | set):
        raise ValidationError({"events": _("Choose the events as a list.")})
    known = set(Event.values)
    if not events or not all(isinstance(e, str) and e in known for e in events):
        raise ValidationError(
            {"events": _("Choose at least one of: %(names)s.") % {"names": ", ".join(Event.values)}}
        )
    return [e for e in Event.values if e in set(events)]


@transaction.atomic
def webhook_create(
    *, actor: User | None, institution: Institution, url: Any, events: Any, is_active: bool = True
) -> Webhook:
    """Register an endpoint for the institution; its signing secret is generated here."""
    _require_admin(actor, institution)
    url, events = clean_url(url), clean_events(events)
    if Webhook.objects.filter(institution=institution).count() >= MAX_WEBHOOKS:
        raise ValidationError(
            _("An institution registers at most %(n)s webhooks.") % {"n": MAX_WEBHOOKS}
        )
    webhook = Webhook.objects.create(
        institution=institution,
        url=url,
        events=events,
        is_active=bool(is_active),
        secret=secrets.token_hex(32),
        created_by=actor,
    )
    audit_record(
        actor=actor,
        action="webhook.registered",
        target=webhook,
        subject_institution=institution,
        payload={"url": url, "events": events, "active": webhook.is_active},
    )
    return webhook


@transaction.atomic
def webhook_update(
    *,
    actor: User | None,
    webhook: Webhook,
    url: Any = None,
    events: Any = None,
    is_active: bool | None = None,
) -> Webhook:
    """Change what is given (URL, events, active); the change is audited, field by field."""
    _require_admin(actor, webhook.institution)
    webhook = Webhook.objects.select_for_update().get(pk=webhook.pk)
    changes: dict[str, dict[str, Any]] = {}
    new = {
        "url": clean_url(url) if url is not None else webhook.url,
        "events": clean_events(events) if events is not None else webhook.events,
        "is_active": bool(is_active) if is_active is not None else webhook.is_active,
    }
    for name, value in new.items():
        if getattr(webhook, name) != value:
            changes[name] = {"from": getattr(webhook, name), "to": value}
            setattr(webhook, name, value)
    if changes:
        webhook.save()
        audit_record(
            actor=actor,
            action="webhook.updated",
            target=webhook,
            subject_institution=webhook.institution,
            payload={"changes": changes},
        )
    return webhook


@transaction.atomic
def webhook_rotate_secret(*, actor: User | None, webhook: Webhook) -> Webhook:
    """A new signing secret; the old one stops verifying at once."""
    _require_admin(actor, webhook.institution)
    webhook = Webhook.objects.select_for_update().get(pk=webhook.pk)
    webhook.secret = secrets.token_hex(32)
    webhook.save(update_fields=["secret", "updated_at"])
    audit_record(
        actor=actor,
        action="webhook.secret_rotated",
        target=webhook,
        subject_institution=webhook.institution,
        payload={"url": webhook.url},
    )
    return webhook


@transaction.atomic
def webhook_reveal_secret(*, actor: User | None, webhook: Webhook) -> str:
    """The signing secret, shown to one of the institution's admins (and audited)."""
    _require_admin(actor, webhook.institution)
    audit_record(
        actor=actor,
        action="webhook.secret_revealed",
        target=webhook,
        subject_institution=webhook.institution,
        payload={"url": webhook.url},
    )
    return webhook.secret


@transaction.atomic
def webhook_delete(*, actor: User | None, webhook: Webhook) -> None:
    """Remove the endpoint and its delivery records."""
    _require_admin(actor, webhook.institution)
    audit_record(
        actor=actor,
        action="webhook.deleted",
        target=webhook,
        subject_institution=webhook.institution,
        payload={"url": webhook.url, "events": webhook.events},
    )
    webhook.delete()


def webhooks_emit(*, institution_ids: Iterable[int], event: str, data: dict[str, Any]) -> int:
    """Inside the event's transaction: one delivery per active webhook of these institutions
    that subscribed to ``event``, sent after commit. How many deliveries were created."""
    from alliance.tasks import webhook_deliver_task

    hooks = [
        hook
        for hook in Webhook.objects.filter(
            institution_id__in=set(institution_ids), is_active=True
        ).order_by("pk")
        if event in hook.events
    ]
    if not hooks:
        return 0
    event_id = uuid.uuid4()
    body = json.dumps(
        {
            "id": str(event_id),
            "event": event,
            "created_at": timezone.now().isoformat(),
            "data": data,
        },
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(webhook=hook, event=event, event_id=event_id, body=body) for hook in hooks
    )
    for delivery in deliveries:
        webhook_deliver_task.delay_on_commit(delivery.pk)
    return len(deliveries)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a place to send the signed event on to."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST once: (status code, error text); no status code when nothing answered."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:  # an answer, just not a 2xx
        exc.close()
        return exc.code, _("The receiver answered %(code)s.") % {"code": exc.code}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, str(reason)[:400] or exc.__class__.__name__


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling, capped."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS
    return float(min(base * 2 ** max(attempts - 1, 0), settings.WEBHOOK_RETRY_MAX_SECONDS))


def webhook_attempt(delivery_id: int) -> float | None:
    """Send a pending delivery once and record the outcome; the seconds to wait before trying
    again, or None when the delivery is settled (delivered, failed for good, or gone)."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
            return None
        now = timezone.now()
        if delivery.next_attempt_at is not None and now < delivery.next_attempt_at:
            return None  # a duplicate of the scheduled attempt (a redelivered task, a sweep)
        hook = delivery.webhook
        body = delivery.body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "alliance-portal-webhooks/1",
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: str(delivery.event_id),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(hook.secret, timestamp, body),
        }
        if not hook.is_active:
            code, error = None, _("The webhook was deactivated.")
            delivery.status = WebhookDelivery.Status.FAILED
        else:
            # The row stays locked while the receiver answers: a duplicate task waits, then
            # finds the delivery settled (or tries again itself if this attempt failed).
            code, error = _post(hook.url, body, headers)
        delivery.attempts += 1
        delivery.attempted_at = timezone.now()
        delivery.response_code = code
        delivery.error = error[:500]
        if code is not None and 200 <= code < 300:
            delivery.status = WebhookDelivery.Status.SUCCEEDED
            delivery.error = ""
        elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.FAILED
        delay = retry_delay(delivery.attempts)
        if delivery.status == WebhookDelivery.Status.PENDING:
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        else:
            delivery.next_attempt_at = None
        delivery.save()
        return delay if delivery.status == WebhookDelivery.Status.PENDING else None


# A pending delivery this late for its attempt lost its task (a broker restart, a worker killed).
OVERDUE = timedelta(seconds=60)


def webhooks_resume(now: datetime | None = None) -> int:
    """Send again every pending delivery whose attempt is overdue; how many were sent.

    The database says what is due, the broker only carries the work: a task lost on its way
    delays a delivery, it never drops it. Called by Celery beat every minute.
    """
    from alliance.tasks import webhook_deliver_task

    now = now or timezone.now()
    due = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).filter(
        Q(next_attempt_at__lte=now - OVERDUE)
        | Q(next_attempt_at__isnull=True, created_at__lte=now - OVERDUE)
    )
    ids = list(due.order_by("pk").values_list("pk", flat=True)[:500])
    with transaction.atomic():
        for pk in ids:
            webhook_deliver_task.delay_on_commit(pk)
    return len(ids)
