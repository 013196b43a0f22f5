import hashlib
import json
from datetime import UTC
from typing import Any

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

GENESIS_HASH = "0" * 64


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
        document = {
            "seq": self.seq,
            "created_at": self.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor_id": self.actor_id,
            "actor_username": self.actor_username,
            "actor_institution_id": self.actor_institution_id,
            "subject_institution_id": self.subject_institution_id,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "target_label": self.target_label,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
        }
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

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

    seq = models.PositiveBigIntegerField(_("verified up to event"))
    hash = models.CharField(_("hash of that event"), max_length=64)
    verified_at = models.DateTimeField(_("verified at"))

    class Meta:
        verbose_name = _("audit checkpoint")
        verbose_name_plural = _("audit checkpoints")

    def __str__(self) -> str:
        return f"#{self.seq} {self.hash[:12]}"
