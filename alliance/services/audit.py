"""The audit trail: append one event in the caller's transaction, and verify the whole chain."""

import hashlib
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import tlog
from alliance.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditTreeNode,
    Institution,
    SignedCheckpoint,
)
from alliance.models.audit import (
    CREATED_AT_FORMAT,
    GENESIS_HASH,
    canonical_event_bytes,
    canonical_event_text,
    canonical_json,
)

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


def _number_as_stored(text: str) -> float | int:
    """A JSON number as the database gives it back: PostgreSQL's jsonb keeps it as a decimal and
    writes one with a positive exponent (Python's form from 1e16 up) in plain digits, which
    reads back as an integer. The hash must cover that form, or the event would look altered."""
    _, e, exponent = text.lower().partition("e")
    if e and not exponent.startswith("-"):
        return int(Decimal(text))
    return float(text)


def _lock_chain_and_read_tail() -> tuple[int, str]:
    """Take the chain's lock, then read its last event's number and hash (0 and the genesis
    hash for an empty chain).

    On PostgreSQL one round trip: the lock, then the read as a second statement, which under READ
    COMMITTED sees every append committed before the lock was granted.
    """
    if connection.vendor != "postgresql":
        _lock_chain()
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        return last if last is not None else (0, GENESIS_HASH)
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT pg_advisory_xact_lock(%s); SELECT seq, hash FROM {table} "
            "ORDER BY seq DESC LIMIT 1",
            [_AUDIT_LOCK_KEY],
        )
        row = cursor.fetchone()
    return (int(row[0]), row[1]) if row is not None else (0, GENESIS_HASH)


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
    clean_payload = json.loads(
        json.dumps(payload or {}, cls=DjangoJSONEncoder), parse_float=_number_as_stored
    )

    last_seq, last_hash = _lock_chain_and_read_tail()
    event = AuditEvent(
        seq=last_seq + 1,
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
        prev_hash=last_hash,
    )
    event.hash = event.compute_hash()
    event.save()
    _sign_after_commit()
    return event


# Whether this process signs a checkpoint after each transaction that appended events. A
# coordinator worker signs from its reconciler instead (projects.tasks), off the rounds' path.
_SIGN_ON_COMMIT = True


def sign_on_commit(enabled: bool) -> None:
    """Turn this process's signing after each appending transaction on or off."""
    global _SIGN_ON_COMMIT
    _SIGN_ON_COMMIT = enabled


def _sign_after_commit() -> None:
    """Once per transaction: sign a checkpoint over the new events after it commits."""
    # Imported here: the signer builds on this module.
    from alliance.services.audit_log import audit_checkpoint_after_append

    if not _SIGN_ON_COMMIT:
        return
    if not any(item[1] is audit_checkpoint_after_append for item in connection.run_on_commit):
        transaction.on_commit(audit_checkpoint_after_append, robust=True)


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


# An event as a plain tuple, in the order of canonical_event_bytes' arguments, then its hash.
AuditRow = tuple[
    int, str, int | None, str, int | None, int | None, str, str, str, str, Any, str, str
]

_ROWS_SQL = (
    "SELECT seq, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "actor_id, actor_username, actor_institution_id, subject_institution_id, action, "
    "target_type, target_id, target_label, payload::text, prev_hash, hash "
    'FROM "alliance_auditevent"'
)
_ROW_FIELDS = (
    "seq",
    "created_at",
    "actor_id",
    "actor_username",
    "actor_institution_id",
    "subject_institution_id",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "payload",
    "prev_hash",
    "hash",
)
_CHUNK = 5000

# Rows per fetch when verifying: fewer round trips, each fetched while the last is hashed.
_VERIFY_CHUNK = 20_000
# Distinct payload texts remembered per verification (most events repeat a few shapes).
_PAYLOAD_MEMO = 50_000


def _row_chunks(
    after_seq: int = 0, upto_seq: int | None = None, *, chunk: int = _CHUNK, prefetch: bool = False
) -> tuple[Iterator[list[tuple]], bool]:
    """Events after ``after_seq`` (up to ``upto_seq``) in sequence order, in chunks of tuples.

    PostgreSQL: one server-side cursor, the time formatted by the database, the payload as its
    JSON text (the second value is True then), no model instance per event. From the genesis
    every row is read: "seq > 0" would skip a forged event numbered 0 unseen.
    """
    if connection.vendor != "postgresql":
        events = AuditEvent.objects.order_by("seq")
        if after_seq > 0:
            events = events.filter(seq__gt=after_seq)
        if upto_seq is not None:
            events = events.filter(seq__lte=upto_seq)

        def portable() -> Iterator[list[tuple]]:
            rows = []
            for row in events.values_list(*_ROW_FIELDS).iterator(chunk_size=chunk):
                created = row[1].astimezone(UTC).strftime(CREATED_AT_FORMAT)
                rows.append((row[0], created, *row[2:]))
                if len(rows) == chunk:
                    yield rows
                    rows = []
            if rows:
                yield rows

        return portable(), False
    suffix, params = _where(after_seq, upto_seq)
    sql = _ROWS_SQL + suffix

    def server_side() -> Iterator[list[tuple]]:
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, params)
            if prefetch:
                yield from _prefetched(cursor, chunk)
            else:
                while rows := cursor.fetchmany(chunk):
                    yield rows

    return server_side(), True


def _where(after_seq: int, upto_seq: int | None) -> tuple[str, list[int]]:
    where, params = [], []
    if after_seq > 0:
        where.append('"seq" > %s')
        params.append(after_seq)
    if upto_seq is not None:
        where.append('"seq" <= %s')
        params.append(upto_seq)
    return (" WHERE " + " AND ".join(where) if where else "") + ' ORDER BY "seq"', params


# An event as the chain check reads it: seq, prev_hash, hash, its canonical bytes.
_Encoded = tuple[int, str, str, bytes]


def _encoded_chunks(after_seq: int = 0, upto_seq: int | None = None) -> Iterator[list[_Encoded]]:
    """Events after ``after_seq`` (up to ``upto_seq``) in sequence order, each with its bytes.

    Each distinct payload is put in canonical form once per pass (most events repeat a few
    shapes: ``{}``, a revision, a role); the rest of an event's bytes are written by the same
    ``canonical_event_text`` the model uses.
    """
    chunks, payload_text = _row_chunks(after_seq, upto_seq, chunk=_VERIFY_CHUNK, prefetch=True)
    encode = canonical_event_text
    if not payload_text:
        for rows in chunks:
            yield [
                (r[0], r[11], r[12], encode(*r[:10], canonical_json(r[10]), r[11]).encode())
                for r in rows
            ]
        return
    scan = json.JSONDecoder().scan_once  # json.loads without its checks: jsonb text is JSON
    memo: dict[str, str] = {}
    known = memo.get

    def payload_json(text: str) -> str:
        value = canonical_json(scan(text, 0)[0])
        if len(memo) < _PAYLOAD_MEMO:
            memo[text] = value
        return value

    for rows in chunks:
        yield [
            (
                r[0],
                r[11],
                r[12],
                encode(*r[:10], known(r[10]) or payload_json(r[10]), r[11]).encode(),
            )
            for r in rows
        ]


def _prefetched(cursor: Any, size: int) -> Iterator[list[tuple]]:
    """``cursor.fetchmany(size)`` until empty, each fetch made while the caller works on the last.

    One fetch is in flight at a time, in a second thread (the driver lets go of the GIL while it
    waits for the server), so the database writes the next rows while this process hashes the
    previous ones: on two cores the two overlap instead of taking turns. The cursor is never
    used by two threads at once, and the thread is done with it before this generator ends.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(cursor.fetchmany, size)
        try:
            while rows := pending.result():
                pending = pool.submit(cursor.fetchmany, size)
                yield rows
        finally:
            wait([pending])


def audit_rows(*, after_seq: int = 0, upto_seq: int | None = None) -> Iterator[AuditRow]:
    """Events after ``after_seq`` (up to ``upto_seq``) in sequence order, as plain tuples."""
    chunks, payload_text = _row_chunks(after_seq, upto_seq)
    loads = json.loads
    for rows in chunks:
        for r in rows:
            if payload_text:
                yield (*r[:10], loads(r[10]), r[11], r[12])
            else:
                yield r


def _row_of(event: AuditEvent) -> AuditRow:
    return (
        event.seq,
        event.created_at.astimezone(UTC).strftime(CREATED_AT_FORMAT),
        event.actor_id,
        event.actor_username,
        event.actor_institution_id,
        event.subject_institution_id,
        event.action,
        event.target_type,
        event.target_id,
        event.target_label,
        event.payload,
        event.prev_hash,
        event.hash,
    )


@dataclass
class _Stream:
    """What a verification pass yields besides its verdict: the tree's root at one size."""

    root_at: int = 0
    root: bytes | None = None


def _verify_chunks(
    chunks: Iterable[Iterable[_Encoded]],
    *,
    after_seq: int = 0,
    prev_hash: str = GENESIS_HASH,
    tree: tlog.CompactTree | None = None,
    stream: _Stream | None = None,
) -> ChainVerification:
    """The chain check's loop, kept flat: it runs once per event, 100,000 times a second."""
    size, result = _check_chunks(
        chunks, after_seq, prev_hash, tree, stream, tree.size if tree else 0
    )
    if tree is not None:
        tree.size = size
    return result


def _check_chunks(
    chunks: Iterable[Iterable[_Encoded]],
    after_seq: int,
    prev_hash: str,
    tree: tlog.CompactTree | None,
    stream: _Stream | None,
    tree_size: int,
) -> tuple[int, ChainVerification]:
    """The loop of ``_verify_chunks``; also returns the tree's new size."""
    expected_prev = prev_hash
    expected_seq = after_seq + 1
    count = after_seq
    sha256 = hashlib.sha256
    root_at = stream.root_at if stream is not None else 0
    # The tree's append, inlined (tlog.CompactTree.append does the same): a method call per
    # event is a tenth of the loop's time.
    if tree is not None:
        frontier = tree.frontier
        pop, push = frontier.pop, frontier.append
        on_node = tree.on_node
        report_leaf = on_node is not None and tree.min_level == 0
        min_level = tree.min_level
    for rows in chunks:
        for seq, prev, h, data in rows:
            if seq != expected_seq:
                if seq > expected_seq:
                    reason = _("event %(seq)d is missing") % {"seq": expected_seq}
                else:
                    reason = _("event %(seq)d is out of order") % {"seq": seq}
                return tree_size, ChainVerification(
                    False, count, expected_seq, reason, expected_prev
                )
            if prev != expected_prev:
                return tree_size, ChainVerification(
                    False,
                    count,
                    seq,
                    _("event %(seq)d does not follow its predecessor") % {"seq": seq},
                    expected_prev,
                )
            if sha256(data).hexdigest() != h:
                return tree_size, ChainVerification(
                    False,
                    count,
                    seq,
                    _("event %(seq)d was altered after it was written") % {"seq": seq},
                    expected_prev,
                )
            if tree is not None:
                node = sha256(b"\x00" + data).digest()
                size = tree_size
                if report_leaf:
                    on_node(0, size, node)
                level = 0
                while size & 1:
                    node = sha256(b"\x01" + pop() + node).digest()
                    size >>= 1
                    level += 1
                    if on_node is not None and level >= min_level:
                        on_node(level, size, node)
                push(node)
                tree_size += 1
                if seq == root_at:
                    stream.root = tree.root()
            expected_prev = h
            expected_seq += 1
            count += 1
    return tree_size, ChainVerification(True, count, last_hash=expected_prev)


def verify_rows(
    rows: Iterable[AuditRow],
    *,
    after_seq: int = 0,
    prev_hash: str = GENESIS_HASH,
    tree: tlog.CompactTree | None = None,
) -> ChainVerification:
    """Recompute the chain over ``rows`` in sequence order (and append each leaf to ``tree``).

    From the genesis by default; given ``after_seq`` and ``prev_hash`` (a checkpoint: event
    ``after_seq`` is known to hold and has that hash) it checks only the events after it, with
    exactly the same rules, so the full check and the incremental badge cannot disagree. The
    leaf of the audit log's Merkle tree is the same canonical bytes the chain hashes.
    """
    encode = canonical_event_bytes
    encoded = ((r[0], r[11], r[12], encode(*r[:12])) for r in rows)
    return _verify_chunks([encoded], after_seq=after_seq, prev_hash=prev_hash, tree=tree)


def verify_stored(
    *,
    after_seq: int = 0,
    upto_seq: int | None = None,
    prev_hash: str = GENESIS_HASH,
    tree: tlog.CompactTree | None = None,
    stream: _Stream | None = None,
) -> ChainVerification:
    """``verify_rows`` over the events in the database, streamed as fast as they come."""
    return _verify_chunks(
        _encoded_chunks(after_seq, upto_seq),
        after_seq=after_seq,
        prev_hash=prev_hash,
        tree=tree,
        stream=stream,
    )


def verify_events(
    events: Iterable[AuditEvent], *, after_seq: int = 0, prev_hash: str = GENESIS_HASH
) -> ChainVerification:
    """``verify_rows`` over model instances."""
    return verify_rows((_row_of(e) for e in events), after_seq=after_seq, prev_hash=prev_hash)


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


def _tree_problem(kind: str, seq: int, upto: int) -> str:
    if kind == AuditCheckpoint.Problem.REMOVED:
        return _(
            "events %(first)d to %(upto)d were removed; a signed checkpoint covers %(upto)d events"
        ) % {"first": seq, "upto": upto}
    return _(
        "the events do not match the signed checkpoint of %(upto)d events: an event from "
        "%(first)d on was rewritten"
    ) % {"first": seq, "upto": upto}


def _verify_with_tree() -> tuple[ChainVerification, str, int]:
    """The chain from the genesis, and the events against the newest signed checkpoint.

    A rewrite with every later hash recomputed keeps the chain intact, and so does cutting the
    tail; neither keeps the Merkle root the log signed. Returns the chain's result, and when
    only the tree check fails, the problem's kind and the number of the signed checkpoint's
    size. The first altered block of 256 events is named from the stored subtree hashes.
    """
    signed = SignedCheckpoint.objects.order_by("-size").values_list("size", "root").first()
    blocks = dict(
        AuditTreeNode.objects.filter(level=_BLOCK_LEVEL).values_list("index", "hash")
    )  # fmt: skip
    first_bad_block: list[int] = []

    def on_node(level: int, index: int, digest: bytes) -> None:
        if level == _BLOCK_LEVEL and not first_bad_block:
            stored = blocks.get(index)
            if stored is not None and bytes(stored) != digest:
                first_bad_block.append(index)

    tree = tlog.CompactTree(on_node=on_node, min_level=_BLOCK_LEVEL)

    if signed is None:  # nothing signed yet: the chain is all there is to check
        return verify_stored(), "", 0
    stream = _Stream(root_at=signed[0])
    result = verify_stored(tree=tree, stream=stream)
    if not result.ok:
        return result, "", 0
    size, root = signed
    if result.count < size:
        return result, AuditCheckpoint.Problem.REMOVED, size
    if stream.root is None or stream.root.hex() != root:
        # The intact prefix ends before the first block whose stored hash differs (if known).
        before = first_bad_block[0] << _BLOCK_LEVEL if first_bad_block else 0
        last_hash = (
            AuditEvent.objects.filter(seq=before).values_list("hash", flat=True).first()
            or GENESIS_HASH
        )
        intact = ChainVerification(False, before, before + 1, "", last_hash)
        return intact, AuditCheckpoint.Problem.REWRITTEN, size
    return result, "", 0


_BLOCK_LEVEL = 8  # subtrees of 256 events are stored (alliance.services.audit_log)
_BLOCK_MASK = (1 << _BLOCK_LEVEL) - 1


def _save_checkpoint(result: ChainVerification, problem: str = "", problem_upto: int = 0) -> None:
    """Remember the verified prefix of the chain (events 1..count), or forget it when empty.

    A signed-tree problem is remembered with it, so the badge keeps reporting it cheaply until
    a full verification finds the log whole again.
    """
    # Replace rather than update: the same two queries whether a checkpoint existed or not.
    AuditCheckpoint.objects.all().delete()
    if result.count > 0 or problem:
        AuditCheckpoint.objects.create(
            pk=1,
            seq=result.count,
            hash=result.last_hash,
            verified_at=timezone.now(),
            problem=problem,
            problem_seq=result.first_broken_seq if problem else None,
            problem_upto=problem_upto if problem else None,
        )


def _full_check() -> ChainVerification:
    result, problem, upto = _verify_with_tree()
    if problem:
        seq = result.count + 1
        result = ChainVerification(
            False, result.count, seq, _tree_problem(problem, seq, upto), result.last_hash
        )
    _save_checkpoint(result, problem, upto)
    return result


def audit_verify() -> ChainVerification:
    """Recompute the whole chain and Merkle tree from the database, and reset the checkpoint.

    This is ``manage.py verify_audit``: it trusts no stored hash, only the newest signed
    checkpoint's root, which also left the database. Afterwards the badge's checkpoint covers
    exactly the events found intact, so the badge agrees with it from then on.
    """
    with transaction.atomic():
        _lock_checkpoint()
        return _full_check()


def _remembered_problem(checkpoint: AuditCheckpoint) -> ChainVerification:
    return ChainVerification(
        False,
        checkpoint.seq,
        checkpoint.problem_seq,
        _tree_problem(checkpoint.problem, checkpoint.problem_seq, checkpoint.problem_upto),
        checkpoint.hash,
    )


def audit_chain_status() -> ChainVerification:
    """The state of the chain, cheaply enough for every page view.

    The same verification as ``audit_verify``, but it starts from the checkpoint: only events
    written since the last check are re-hashed (none, usually: two small queries), and the
    checkpoint then advances over them. The checkpoint is trustworthy because a database
    trigger deletes it whenever any audit event is updated or deleted, so after tampering the
    next call verifies from the genesis, chain and signed Merkle root, and names the first
    altered or missing event. After a failure the checkpoint is moved to the intact prefix
    before the broken event (or remembers the signed-tree problem), so later calls keep
    reporting it without re-hashing everything. The checkpoint table itself is trusted;
    ``manage.py verify_audit`` trusts nothing and recomputes every hash.
    """
    checkpoint = AuditCheckpoint.objects.filter(pk=1).first()
    if checkpoint is not None:
        if checkpoint.problem:
            return _remembered_problem(checkpoint)
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
            return _full_check()
        if checkpoint.problem:
            return _remembered_problem(checkpoint)
        result = verify_stored(after_seq=checkpoint.seq, prev_hash=checkpoint.hash)
        if result.count != checkpoint.seq:
            _save_checkpoint(result)
        return result
