"""The portal's view of each member's site: the keys it signs with, and when it was last heard.

A site is an institution's training worker, running on the institution's own machine. The
portal never holds a site's private key: an institution's admin registers the public half, and
every answer and heartbeat the site sends must carry a signature that this key verifies.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class SiteKey(models.Model):
    """The public half of an Ed25519 key an institution's site worker signs with.

    At most one key of an institution is active: registering a new one retires the old (a
    rotation), and a revoked key signs nothing the portal accepts from then on.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        RETIRED = "retired", _("Retired (replaced)")
        REVOKED = "revoked", _("Revoked")

    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="site_keys",
        verbose_name=_("institution"),
    )
    public_key = models.CharField(_("public key (base64)"), max_length=44, unique=True)
    fingerprint = models.CharField(_("fingerprint"), max_length=32, unique=True)
    label = models.CharField(_("label"), max_length=100, blank=True)
    status = models.CharField(
        _("status"), max_length=8, choices=Status.choices, default=Status.ACTIVE
    )
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        verbose_name=_("registered by"),
    )
    registered_at = models.DateTimeField(_("registered at"), auto_now_add=True)
    retired_at = models.DateTimeField(_("retired at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        verbose_name=_("revoked by"),
    )
    reason = models.TextField(_("reason for revoking"), blank=True)

    class Meta:
        ordering = ["institution", "-registered_at"]
        verbose_name = _("site key")
        verbose_name_plural = _("site keys")
        constraints = [
            models.UniqueConstraint(
                fields=["institution"],
                condition=models.Q(status="active"),
                name="one_active_site_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.institution} key {self.fingerprint[:8]}"


class SiteHeartbeat(models.Model):
    """The last signed heartbeat of an institution's site worker: alive when, which version."""

    institution = models.OneToOneField(
        "alliance.Institution",
        on_delete=models.CASCADE,
        related_name="heartbeat",
        verbose_name=_("institution"),
    )
    key = models.ForeignKey(
        SiteKey, on_delete=models.PROTECT, related_name="+", verbose_name=_("signed with")
    )
    sent_at = models.DateTimeField(_("sent at"))
    received_at = models.DateTimeField(_("received at"))
    version = models.CharField(_("worker version"), max_length=40)

    class Meta:
        verbose_name = _("site heartbeat")
        verbose_name_plural = _("site heartbeats")

    def __str__(self) -> str:
        return f"{self.institution} heard at {self.received_at:%Y-%m-%d %H:%M:%S}"
