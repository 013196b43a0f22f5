"""The audit log's signed head, as Certificate Transparency does it.

The audit events are the leaves of an RFC 6962 Merkle tree (a leaf is an event's canonical bytes,
the same bytes its chain hash covers). A signer extends the tree over the events committed since
the last checkpoint and signs a C2SP checkpoint of its new size and root with ``AUDIT_LOG_KEY``;
the checkpoint is stored, appended to the checkpoint file log (``AUDIT_CHECKPOINT_LOG``, one JSON
object a line) and served to every member. Members keep checkpoints and ask for proofs: an
inclusion proof that an event is in a checkpointed tree, a consistency proof that a newer tree
extends an older one. A log that lost or rewrote events cannot produce either.

When checkpoints are issued: right after every transaction that appended audit events commits
(``audit_record`` registers it), in the same process. The signer takes the head row with SKIP
LOCKED, so an append never waits for a signature: when another signer holds the head, that one
loops until no committed event is left unsigned. ``manage.py audit_checkpoint --issue`` does the
same by hand (e.g. once after an upgrade over a long existing trail).

Concurrency: appends commit in sequence order (the chain's advisory lock is held until commit),
so the committed events are always a gapless prefix 1..N, and one SELECT reads a consistent
prefix. The signer only ever extends the stored frontier, and checks that the chain continues
from the last signed event, so it never signs two checkpoints that disagree.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alliance import tlog
from alliance.models import AuditEvent, AuditLogHead, AuditTreeNode, SignedCheckpoint
from alliance.models.audit import canonical_event_bytes
from alliance.services.audit import ChainVerification, audit_rows, verify_stored
from portal.common.errors import ApplicationError
from portal.common.keys import portal_key

logger = logging.getLogger(__name__)

# Perfect subtrees from this level up (256 events) are stored; smaller ones are re-hashed.
STORED_LEVEL = 8
_MAX_ROUNDS = 20  # a signer catching up with a burst of appends stops after this many passes


class CheckpointNotFound(ApplicationError):
    """No signed checkpoint of that size (or none at all yet)."""

    status_code = 404


class AuditLogBroken(ApplicationError):
    """The events in the database no longer continue the signed tree: nothing more is signed."""


def audit_log_origin() -> str:
    return settings.AUDIT_LOG_ORIGIN


def audit_log_public_key() -> str:
    """The signed-note verifier key of the audit log: what members pin to check checkpoints."""
    return tlog.verifier_key(audit_log_origin(), portal_key("AUDIT_LOG_KEY").public_key())


def _head_for_update(*, skip_locked: bool) -> AuditLogHead | None:
    AuditLogHead.objects.get_or_create(pk=1)
    return AuditLogHead.objects.select_for_update(skip_locked=skip_locked).filter(pk=1).first()


def _extend(head: AuditLogHead) -> None:
    """Append every committed event after ``head.size`` to the tree (caller holds the head)."""
    nodes: list[AuditTreeNode] = []

    def keep(level: int, index: int, digest: bytes) -> None:
        nodes.append(AuditTreeNode(level=level, index=index, hash=digest))

    tree = tlog.CompactTree(
        head.size, [bytes.fromhex(h) for h in head.frontier], on_node=keep, min_level=STORED_LEVEL
    )
    result = verify_stored(after_seq=head.size, prev_hash=head.last_hash, tree=tree)
    if not result.ok:
        raise AuditLogBroken(
            _("The audit trail no longer continues the signed log at event %(seq)d: %(reason)s")
            % {"seq": result.first_broken_seq, "reason": result.reason}
        )
    if result.count == head.size:
        return
    AuditTreeNode.objects.bulk_create(nodes, batch_size=1000)
    head.size = tree.size
    head.frontier = [node.hex() for node in tree.frontier]
    head.last_hash = result.last_hash
    head.save(update_fields=["size", "frontier", "last_hash"])


def _root(head: AuditLogHead) -> bytes:
    return tlog.CompactTree(head.size, [bytes.fromhex(h) for h in head.frontier]).root()


def _append_to_file_log(checkpoint: SignedCheckpoint) -> None:
    path = Path(settings.AUDIT_CHECKPOINT_LOG)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {
            "size": checkpoint.size,
            "root": checkpoint.root,
            "signed_at": checkpoint.created_at.isoformat(),
            "note": checkpoint.note,
        },
        ensure_ascii=False,
    )
    with path.open("a", encoding="utf-8") as log:
        log.write(line + "\n")


def _issue_once(*, wait: bool) -> SignedCheckpoint | bool | None:
    """One pass: extend and sign. False when another signer holds the head (and not ``wait``)."""
    with transaction.atomic():
        head = _head_for_update(skip_locked=not wait)
        if head is None:
            return False
        _extend(head)
        latest = SignedCheckpoint.objects.order_by("-size").first()
        if head.size == 0 or (latest is not None and latest.size >= head.size):
            return latest
        root = _root(head)
        body = tlog.Checkpoint(audit_log_origin(), head.size, root).body()
        checkpoint = SignedCheckpoint.objects.create(
            size=head.size,
            root=root.hex(),
            note=tlog.sign_note(body, audit_log_origin(), portal_key("AUDIT_LOG_KEY")),
            created_at=timezone.now(),
        )
        transaction.on_commit(lambda: _append_to_file_log(checkpoint))
        return checkpoint


def audit_checkpoint_issue(*, wait: bool = True) -> SignedCheckpoint | None:
    """Sign a checkpoint over every committed event, unless the newest one already covers them.

    ``wait=False`` (after an append) returns at once when another signer holds the head: that
    signer looks again for unsigned events after it commits. Raises AuditLogBroken when the
    events no longer continue the signed tree; it signs nothing then.
    """
    checkpoint: SignedCheckpoint | None = None
    for _round in range(_MAX_ROUNDS):
        issued = _issue_once(wait=wait)
        if issued is False:
            return None
        checkpoint = issued or None
        newest = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
        if checkpoint is None or newest <= checkpoint.size:
            return checkpoint
    return checkpoint


def audit_checkpoint_after_append() -> None:
    """Issue a checkpoint after a transaction that appended events committed (never raises)."""
    try:
        audit_checkpoint_issue(wait=False)
    except Exception:  # the act itself is committed; the next signer tries again
        logger.exception("Could not sign an audit checkpoint")


def audit_checkpoint_latest() -> SignedCheckpoint | None:
    return SignedCheckpoint.objects.order_by("-size").first()


# --- Proofs from the stored tree -----------------------------------------------------------------


def _leaf_hashes(lo: int, hi: int) -> list[bytes]:
    """Leaf hashes of events lo+1..hi, from their canonical bytes."""
    leaves = []
    for row in audit_rows(after_seq=lo, upto_seq=hi):
        leaves.append(tlog.leaf_hash(canonical_event_bytes(*row[:12])))
    if len(leaves) != hi - lo:
        raise ApplicationError(_("Events %(lo)d to %(hi)d are missing.") % {"lo": lo + 1, "hi": hi})
    return leaves


def _stored_perfect(wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The hashes of the perfect subtrees ``wanted``: stored ones read, small ones re-hashed."""
    found: dict[tuple[int, int], bytes] = {}
    big = {(lo, hi) for lo, hi in wanted if hi - lo >= 1 << STORED_LEVEL}
    if big:
        keys = {((hi - lo).bit_length() - 1, lo // (hi - lo)): (lo, hi) for lo, hi in big}
        levels = {level for level, _index in keys}
        indexes = {index for _level, index in keys}
        for level, index, digest in AuditTreeNode.objects.filter(
            level__in=levels, index__in=indexes
        ).values_list("level", "index", "hash"):
            if (level, index) in keys:
                found[keys[(level, index)]] = bytes(digest)
    for lo, hi in wanted:
        if (lo, hi) in found:
            continue
        tree = tlog.CompactTree()
        for leaf in _leaf_hashes(lo, hi):
            tree.append(leaf)
        found[(lo, hi)] = tree.root()
    return found


def _prove(compute) -> list[bytes]:
    wanted = tlog.needed_subtrees(compute)
    hashes = _stored_perfect(wanted)
    return compute(lambda lo, hi: hashes[(lo, hi)])


def _checkpoint_of_size(size: int | None) -> SignedCheckpoint:
    checkpoints = SignedCheckpoint.objects.order_by("-size")
    checkpoint = checkpoints.filter(size=size).first() if size else checkpoints.first()
    if checkpoint is None:
        raise CheckpointNotFound(
            _("No signed checkpoint of %(size)d events.") % {"size": size}
            if size
            else _("No checkpoint has been signed yet.")
        )
    return checkpoint


@dataclass(frozen=True)
class InclusionProof:
    seq: int
    leaf_index: int
    tree_size: int
    entry: bytes
    leaf_hash: bytes
    proof: list[bytes]
    checkpoint: SignedCheckpoint


def audit_inclusion_proof(*, seq: int, size: int | None = None) -> InclusionProof:
    """The proof that event ``seq`` is in the signed tree of ``size`` events (default: newest)."""
    checkpoint = _checkpoint_of_size(size)
    if not 1 <= seq <= checkpoint.size:
        raise ApplicationError(
            _("Event %(seq)d is not in the checkpoint of %(size)d events.")
            % {"seq": seq, "size": checkpoint.size}
        )
    rows = list(audit_rows(after_seq=seq - 1, upto_seq=seq))
    if not rows:
        raise ApplicationError(_("Event %(seq)d is missing.") % {"seq": seq})
    entry = canonical_event_bytes(*rows[0][:12])
    proof = _prove(lambda perfect: tlog.inclusion_path(seq - 1, checkpoint.size, perfect))
    return InclusionProof(
        seq, seq - 1, checkpoint.size, entry, tlog.leaf_hash(entry), proof, checkpoint
    )


def audit_consistency_proof(*, first: int, second: int | None = None) -> tuple[list[bytes], int]:
    """The proof that the signed tree of ``first`` events is a prefix of that of ``second``."""
    newer = _checkpoint_of_size(second)
    if not 1 <= first <= newer.size:
        raise ApplicationError(
            _("The first size must be between 1 and %(size)d.") % {"size": newer.size}
        )
    return _prove(lambda perfect: tlog.consistency_proof(first, newer.size, perfect)), newer.size


# --- Verification against a checkpoint a member kept ---------------------------------------------


@dataclass(frozen=True)
class ConsistencyVerification:
    ok: bool
    checkpoint_size: int
    log_size: int
    problem: str = ""
    chain: ChainVerification | None = None


def read_checkpoint_file(text: str) -> str:
    """The signed note in a kept file: the note itself, or the newest line of the file log."""
    stripped = text.strip()
    if stripped.startswith("{"):
        lines = [line for line in stripped.splitlines() if line.strip()]
        try:
            return json.loads(lines[-1])["note"]
        except (ValueError, KeyError, TypeError) as exc:
            raise tlog.ProofError(_("the checkpoint file log's last line is not JSON")) from exc
    return text if text.endswith("\n") else text + "\n"


def audit_verify_checkpoint(note: str) -> ConsistencyVerification:
    """Prove the events in the database consistent with a signed checkpoint kept outside it.

    Recomputes the whole chain and the Merkle tree from the events (nothing stored is trusted),
    then checks the RFC 6962 consistency proof from the checkpoint's tree to the current one.
    Names the problem: a bad signature, events removed from the tail, or events rewritten
    (even with every later hash recomputed, the root differs).
    """
    try:
        text = tlog.open_note(note, audit_log_origin(), portal_key("AUDIT_LOG_KEY").public_key())
        checkpoint = tlog.parse_checkpoint(text)
    except tlog.ProofError as exc:
        return ConsistencyVerification(False, 0, 0, str(exc))
    if checkpoint.origin != audit_log_origin():
        return ConsistencyVerification(
            False, checkpoint.size, 0, _("the checkpoint is of another log")
        )
    size1 = checkpoint.size
    # Appends commit in sequence order, so events 1..size2 read by a later statement are the
    # same ones the count saw (unless someone is tampering right now, which then shows).
    with transaction.atomic():
        size2 = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
        if size2 < size1:
            # The proof cannot exist; the chain still says whether the rest holds.
            chain = verify_stored()
            return ConsistencyVerification(
                False,
                size1,
                chain.count,
                _(
                    "events %(first)d to %(last)d were removed: the log has %(count)d events, "
                    "the checkpoint covers %(size)d"
                )
                % {"first": chain.count + 1, "last": size1, "count": chain.count, "size": size1},
                chain,
            )
        wanted = tlog.needed_subtrees(lambda p: tlog.consistency_proof(size1, size2, p))
        captured: dict[tuple[int, int], bytes] = {}
        by_level = {((hi - lo).bit_length() - 1, lo // (hi - lo)): (lo, hi) for lo, hi in wanted}

        def capture(level: int, index: int, digest: bytes) -> None:
            key = by_level.get((level, index))
            if key is not None:
                captured[key] = digest

        lowest = min((level for level, _index in by_level), default=0)
        tree = tlog.CompactTree(on_node=capture, min_level=lowest)
        chain = verify_stored(upto_seq=size2, tree=tree)
    if not chain.ok:
        return ConsistencyVerification(
            False,
            size1,
            chain.count,
            _("the chain is broken at event %(seq)d: %(reason)s")
            % {"seq": chain.first_broken_seq, "reason": chain.reason},
            chain,
        )
    perfect = captured.__getitem__
    proof = tlog.consistency_proof(size1, size2, lambda lo, hi: perfect((lo, hi)))
    try:
        tlog.verify_consistency(size1, size2, checkpoint.root, tree.root(), proof)
    except tlog.ProofError:
        return ConsistencyVerification(
            False,
            size1,
            size2,
            _(
                "the first %(size)d events no longer hash to the checkpoint's root "
                "(%(root)s…): events were rewritten, even if every later hash was recomputed"
            )
            % {"size": size1, "root": checkpoint.root.hex()[:16]},
            chain,
        )
    return ConsistencyVerification(True, size1, size2, "", chain)
