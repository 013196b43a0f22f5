import hashlib
import json
from datetime import UTC
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

GENESIS_HASH = "0" * 64
CREATED_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# One encoder for every event, built once: sorted keys, compact separators, UTF-8 text. The C
# encoder json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) uses,
# called directly: the same bytes without json.dumps' two Python frames per call. No circular
# check (markers None): a payload comes from JSON text, which cannot refer to itself.
_C_ENCODER = c_make_encoder(
    None, json.JSONEncoder().default, encode_basestring, None, ":", ",", True, False, True
)


def canonical_json(value: Any) -> str:
    """``value`` as the canonical JSON an event's payload is hashed in (see above)."""
    return "".join(_C_ENCODER(value, 0))


# A str's JSON form: the routine the encoder itself calls for one (C, when available).
_str = encode_basestring


def canonical_event_bytes(
    seq: int,
    created_at: str,
    actor_id: int | None,
    actor_username: str,
    actor_institution_id: int | None,
    subject_institution_id: int | None,
    action: str,
    target_type: str,
    target_id: str,
    target_label: str,
    payload: Any,
    prev_hash: str,
) -> bytes:
    """The exact bytes an event's hash covers, from plain values (``created_at`` as UTC text).

    The only encoder of an event: the model's ``canonical_bytes`` and the streaming verifier
    (rows as tuples, no model instance) both come here, so they cannot drift apart.
    """
    return canonical_event_text(
        seq,
        created_at,
        actor_id,
        actor_username,
        actor_institution_id,
        subject_institution_id,
        action,
        target_type,
        target_id,
        target_label,
        canonical_json(payload),
        prev_hash,
    ).encode()


def canonical_event_text(
    seq: int,
    created_at: str,
    actor_id: int | None,
    actor_username: str,
    actor_institution_id: int | None,
    subject_institution_id: int | None,
    action: str,
    target_type: str,
    target_id: str,
    target_label: str,
    payload_json: str,
    prev_hash: str,
) -> str:
    """``canonical_event_bytes`` as text, given the payload already as ``canonical_json``.

    The streaming verifier calls this directly: it puts each distinct payload in canonical
    form once, however many events carry it.
    """
    # The sorted keys, written out: as json.dumps(document, sort_keys=True, separators=(",",
    # ":"), ensure_ascii=False) would, byte for byte (a known-answer test pins it), without
    # building and sorting a dict per event.
    # Integers inline ({x} formats an int as json does; the columns hold ints or NULL, never
    # bools or floats): no function call per field, this runs 100,000 times a second.
    actor = "null" if actor_id is None else actor_id
    actor_inst = "null" if actor_institution_id is None else actor_institution_id
    subject = "null" if subject_institution_id is None else subject_institution_id
    return (
        f'{{"action":{_str(action)},"actor_id":{actor},"actor_institution_id":{actor_inst},'
        f'"actor_username":{_str(actor_username)},"created_at":{_str(created_at)},'
        f'"payload":{payload_json},"prev_hash":{_str(prev_hash)},"seq":{seq:d},'
        f'"subject_institution_id":{subject},'
        f'"target_id":{_str(target_id)},"target_label":{_str(target_label)},'
        f'"target_type":{_str(target_type)}}}'
    )


class AuditTrailIsAppendOnly(Exception):
    """Raised by any attempt to change or remove an audit event through the ORM."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditTrailIsAppendOnly("Audit events cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditTrailIsAppendOnly("Audit events cannot be deleted.")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise AuditTrailIsAppendOnly("Audit events cannot be updated.")

    def bulk_create(self, *args: Any, **kwargs: Any) -> list:
        raise AuditTrailIsAppendOnly("Audit events are appended one by one by audit_record().")


class AuditEvent(models.Model):
    """One act in the alliance, as a link of the append-only, hash-chained audit trail.

    ``hash`` is SHA-256 over the canonical JSON of every other field, including the previous
    event's hash, so altering, removing or reordering any event breaks every later link.
    Rows are written only by ``alliance.services.audit.audit_record`` inside the transaction
    of the act they describe.
    """

    seq = models.PositiveBigIntegerField(_("sequence number"), unique=True)
    created_at = models.DateTimeField(_("time"), db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    actor_username = models.CharField(_("actor's username"), max_length=150, blank=True)
    actor_institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor's institution"),
    )
    subject_institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("institution concerned"),
    )
    action = models.CharField(_("action"), max_length=64)
    target_type = models.CharField(_("target type"), max_length=64, blank=True)
    target_id = models.CharField(_("target id"), max_length=64, blank=True)
    target_label = models.CharField(_("target"), max_length=255, blank=True)
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    prev_hash = models.CharField(_("previous event's hash"), max_length=64)
    hash = models.CharField(_("hash"), max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        # Every filter of the audit explorer pairs with the keyset order (-seq), so a page of
        # 50 is an index range scan whatever the filter and however deep the cursor.
        indexes = [
            models.Index(fields=["actor_institution", "-seq"]),
            models.Index(fields=["subject_institution", "-seq"]),
            models.Index(fields=["target_type", "target_id", "-seq"]),
            models.Index(fields=["action", "-seq"]),
            models.Index(fields=["actor_username", "-seq"]),
        ]
        # The chain starts at 1. The badge's checkpoint only re-reads events after it, so an
        # event slipped in below the first one would otherwise go unseen until verify_audit.
        constraints = [
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_seq_from_one"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditTrailIsAppendOnly("Audit events cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditTrailIsAppendOnly("Audit events cannot be deleted.")

    def canonical_bytes(self) -> bytes:
        """The exact bytes the hash covers: sorted-key, compact, UTF-8 JSON."""
        return canonical_event_bytes(
            self.seq,
            self.created_at.astimezone(UTC).strftime(CREATED_AT_FORMAT),
            self.actor_id,
            self.actor_username,
            self.actor_institution_id,
            self.subject_institution_id,
            self.action,
            self.target_type,
            self.target_id,
            self.target_label,
            self.payload,
            self.prev_hash,
        )

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


class AuditCheckpoint(models.Model):
    """How far the chain is known to hold: events 1..``seq`` were verified, ending in ``hash``.

    At most one row (pk 1). It lets the chain badge verify only the events written since the
    last check instead of recomputing every hash on each page view. A database trigger
    (migration ``0004_audit_checkpoint_trigger``) deletes it whenever any audit event row is
    updated or deleted, even by raw SQL that bypasses the ORM's append-only guard, so the next
    check starts again from the genesis and names the altered or missing event.
    """

    class Problem(models.TextChoices):
        REMOVED = "removed", _("events removed after a signed checkpoint")
        REWRITTEN = "rewritten", _("events differ from a signed checkpoint")

    seq = models.PositiveBigIntegerField(_("verified up to event"))
    hash = models.CharField(_("hash of that event"), max_length=64)
    verified_at = models.DateTimeField(_("verified at"))
    # The chain can be intact while the events no longer match the signed Merkle root (a tail
    # cut, a rewrite with recomputed hashes): remembered here until a full verification passes.
    problem = models.CharField(_("problem"), max_length=16, choices=Problem.choices, blank=True)
    problem_seq = models.PositiveBigIntegerField(_("first event concerned"), null=True, blank=True)
    problem_upto = models.PositiveBigIntegerField(
        _("signed checkpoint size"), null=True, blank=True
    )

    class Meta:
        verbose_name = _("audit checkpoint")
        verbose_name_plural = _("audit checkpoints")

    def __str__(self) -> str:
        return f"#{self.seq} {self.hash[:12]}"


class AuditLogHead(models.Model):
    """How far the audit log's Merkle tree has been built: events 1..``size``, as a compact range.

    At most one row (pk 1), locked by whoever extends the tree and signs a checkpoint, so two
    signers never interleave. ``frontier`` holds the roots of the tree's perfect subtrees (hex,
    largest first), enough to append and to compute the root without reading old events;
    ``last_hash`` is the chain hash of event ``size``, so the next event must continue it.
    """

    size = models.PositiveBigIntegerField(_("events in the tree"), default=0)
    frontier = models.JSONField(_("perfect subtree roots"), default=list)
    last_hash = models.CharField(_("hash of the last event"), max_length=64, default=GENESIS_HASH)

    class Meta:
        verbose_name = _("audit log head")
        verbose_name_plural = _("audit log heads")

    def __str__(self) -> str:
        return f"{self.size}"


class AuditTreeNode(models.Model):
    """A perfect subtree of the audit log's Merkle tree, stored when completed (256 leaves and up).

    Subtree ``index`` at ``level`` covers events ``index * 2**level + 1`` to
    ``(index + 1) * 2**level``. Proofs read these instead of re-hashing the whole log; smaller
    subtrees are hashed from their events on demand.
    """

    level = models.PositiveSmallIntegerField(_("level"))
    index = models.PositiveBigIntegerField(_("index"))
    hash = models.BinaryField(_("hash"), max_length=32)

    class Meta:
        verbose_name = _("audit tree node")
        verbose_name_plural = _("audit tree nodes")
        constraints = [
            models.UniqueConstraint(fields=["level", "index"], name="audit_tree_node_unique")
        ]

    def __str__(self) -> str:
        return f"{self.level}/{self.index}"


class SignedCheckpoint(models.Model):
    """A signed head of the audit log: the C2SP checkpoint note over its first ``size`` events.

    Issued as events accrue, appended to the checkpoint file log and served to every member, who
    can keep it and later ask for a consistency proof: a log that lost or rewrote any of those
    events cannot produce one.
    """

    size = models.PositiveBigIntegerField(_("events"), unique=True)
    root = models.CharField(_("root hash"), max_length=64)
    note = models.TextField(_("signed note"))
    created_at = models.DateTimeField(_("signed at"))

    class Meta:
        ordering = ["-size"]
        verbose_name = _("signed checkpoint")
        verbose_name_plural = _("signed checkpoints")

    def __str__(self) -> str:
        return f"{self.size} {self.root[:12]}"
