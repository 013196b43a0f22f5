"""The audit trail: append one event in the caller's transaction, and verify the whole chain."""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance.models import AuditEvent, Institution
from alliance.models.audit import GENESIS_HASH

# Any constant works; it names "the audit chain" among PostgreSQL advisory locks.
_AUDIT_LOCK_KEY = 0x41554449  # "AUDI"


def _actor_institution(actor: AbstractBaseUser | None) -> Institution | None:
    membership = getattr(actor, "membership", None) if actor is not None else None
    return membership.institution if membership is not None else None


def _lock_chain() -> None:
    """Serialise appends so that two writers can never fork the chain.

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback. SQLite:
    the connection opens immediate transactions (settings), so writers are already serialised.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_LOCK_KEY])


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    target: models.Model | None = None,
    payload: dict[str, Any] | None = None,
    subject_institution: Institution | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the transaction that performs the act.

    ``actor`` None (or anonymous) means the system or an anonymous visitor. ``subject_institution``
    is the institution the act concerns (defaults to the target when it is an institution);
    its members can read the event.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record() must run inside the transaction of the act it records.")
    if actor is not None and not actor.is_authenticated:
        actor = None
    if subject_institution is None and isinstance(target, Institution):
        subject_institution = target
    # Normalise the payload to plain JSON now, so the hash covers what the database returns.
    clean_payload = json.loads(json.dumps(payload or {}, cls=DjangoJSONEncoder))

    _lock_chain()
    last = AuditEvent.objects.order_by("-seq").only("seq", "hash").first()
    event = AuditEvent(
        seq=(last.seq + 1) if last else 1,
        created_at=timezone.now(),
        actor=actor,
        actor_username=actor.get_username() if actor is not None else "",
        actor_institution=_actor_institution(actor),
        subject_institution=subject_institution,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=str(target)[:255] if target is not None else "",
        payload=clean_payload,
        prev_hash=last.hash if last else GENESIS_HASH,
    )
    event.hash = event.compute_hash()
    event.save()
    return event


@dataclass(frozen=True)
class ChainVerification:
    """The outcome of recomputing the chain: how many events hold, and where it first breaks."""

    ok: bool
    count: int
    first_broken_seq: int | None = None
    reason: str = ""


def verify_events(events: Iterable[AuditEvent]) -> ChainVerification:
    """Recompute the chain over ``events`` in sequence order, from the genesis."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    for event in events:
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                reason = _("event %(seq)d is missing") % {"seq": expected_seq}
            else:
                reason = _("event %(seq)d is out of order") % {"seq": event.seq}
            return ChainVerification(False, count, expected_seq, reason)
        if event.prev_hash != expected_prev:
            return ChainVerification(
                False,
                count,
                event.seq,
                _("event %(seq)d does not follow its predecessor") % {"seq": event.seq},
            )
        if event.compute_hash() != event.hash:
            return ChainVerification(
                False,
                count,
                event.seq,
                _("event %(seq)d was altered after it was written") % {"seq": event.seq},
            )
        expected_prev = event.hash
        expected_seq += 1
        count += 1
    return ChainVerification(True, count)


def audit_verify() -> ChainVerification:
    """Recompute the whole chain from the database (read in one repeatable snapshot)."""
    with transaction.atomic():
        events = AuditEvent.objects.order_by("seq").iterator(chunk_size=2000)
        return verify_events(events)
