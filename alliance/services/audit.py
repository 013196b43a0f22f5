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

from alliance.models import AuditCheckpoint, AuditEvent, Institution
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
    """The outcome of recomputing the chain: how many events hold, and where it first breaks.

    ``count`` is the number of events, from the genesis, known to hold: events 1..count.
    ``last_hash`` is the hash of event ``count`` (the genesis hash when it is 0).
    """

    ok: bool
    count: int
    first_broken_seq: int | None = None
    reason: str = ""
    last_hash: str = GENESIS_HASH


def verify_events(
    events: Iterable[AuditEvent], *, after_seq: int = 0, prev_hash: str = GENESIS_HASH
) -> ChainVerification:
    """Recompute the chain over ``events`` in sequence order.

    From the genesis by default; given ``after_seq`` and ``prev_hash`` (a checkpoint: event
    ``after_seq`` is known to hold and has that hash) it checks only the events after it, with
    exactly the same rules, so the full check and the incremental badge cannot disagree.
    """
    expected_prev = prev_hash
    expected_seq = after_seq + 1
    count = after_seq
    for event in events:
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                reason = _("event %(seq)d is missing") % {"seq": expected_seq}
            else:
                reason = _("event %(seq)d is out of order") % {"seq": event.seq}
            return ChainVerification(False, count, expected_seq, reason, expected_prev)
        if event.prev_hash != expected_prev:
            return ChainVerification(
                False,
                count,
                event.seq,
                _("event %(seq)d does not follow its predecessor") % {"seq": event.seq},
                expected_prev,
            )
        if event.compute_hash() != event.hash:
            return ChainVerification(
                False,
                count,
                event.seq,
                _("event %(seq)d was altered after it was written") % {"seq": event.seq},
                expected_prev,
            )
        expected_prev = event.hash
        expected_seq += 1
        count += 1
    return ChainVerification(True, count, last_hash=expected_prev)


def _lock_checkpoint() -> None:
    """Keep audit-event changes out while a verification reads events and moves the checkpoint.

    The trigger that clears the checkpoint runs inside the transaction that changes an event.
    Without this lock, a change committed after a check read the events but before it saved
    the checkpoint would be covered by a checkpoint nobody invalidates. PostgreSQL: SHARE ROW
    EXCLUSIVE conflicts with the trigger's DELETE (and with itself, so two checks do not race),
    and the events are read after the lock is granted, so they include any change committed
    before. SQLite: transactions are immediate (settings), so writers are already serialised.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE alliance_auditcheckpoint IN SHARE ROW EXCLUSIVE MODE")


def _events_after(seq: int) -> Iterable[AuditEvent]:
    events = AuditEvent.objects.order_by("seq")
    if seq > 0:
        events = events.filter(seq__gt=seq)
    # From the genesis, every row: "seq > 0" would skip a forged event numbered 0 unseen.
    return events.iterator(chunk_size=2000)


def _save_checkpoint(result: ChainVerification) -> None:
    """Remember the verified prefix of the chain (events 1..count), or forget it when empty."""
    # Replace rather than update: the same two queries whether a checkpoint existed or not.
    AuditCheckpoint.objects.all().delete()
    if result.count > 0:
        AuditCheckpoint.objects.create(
            pk=1, seq=result.count, hash=result.last_hash, verified_at=timezone.now()
        )


def audit_verify() -> ChainVerification:
    """Recompute the whole chain from the database, ignoring any checkpoint, and reset it.

    This is ``manage.py verify_audit``: it trusts nothing stored. Afterwards the checkpoint
    covers exactly the events it found intact, so the badge agrees with it from then on.
    """
    with transaction.atomic():
        _lock_checkpoint()
        result = verify_events(_events_after(0))
        _save_checkpoint(result)
        return result


def audit_chain_status() -> ChainVerification:
    """The state of the chain, cheaply enough for every page view.

    The same verification as ``audit_verify``, but it starts from the checkpoint: only events
    written since the last check are re-hashed (none, usually: two small queries), and the
    checkpoint then advances over them. The checkpoint is trustworthy because a database
    trigger deletes it whenever any audit event is updated or deleted, so after tampering the
    next call verifies from the genesis and names the first altered or missing event. After a
    failure the checkpoint is moved to the intact prefix before the broken event, so later
    calls keep reporting it without re-hashing everything. The checkpoint table itself is
    trusted; ``manage.py verify_audit`` trusts nothing and recomputes every hash.
    """
    checkpoint = AuditCheckpoint.objects.filter(pk=1).first()
    if checkpoint is not None:
        # The newest seq, read backwards along the unique index: one probe, whatever the
        # planner's statistics say (a "seq > N" test may be planned as a full scan).
        newest = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
        if newest == checkpoint.seq:
            return ChainVerification(True, checkpoint.seq, last_hash=checkpoint.hash)
    with transaction.atomic():
        _lock_checkpoint()
        # Read again under the lock: a change committed meanwhile has cleared it.
        checkpoint = AuditCheckpoint.objects.filter(pk=1).first()
        if checkpoint is None:
            result = verify_events(_events_after(0))
        else:
            result = verify_events(
                _events_after(checkpoint.seq), after_seq=checkpoint.seq, prev_hash=checkpoint.hash
            )
        if checkpoint is None or result.count != checkpoint.seq:
            _save_checkpoint(result)
        return result
