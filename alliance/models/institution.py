from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


class Sector(models.TextChoices):
    MEDICINE = "medicine", _("Medicine")
    TRANSPORTATION = "transportation", _("Transportation")
    MANUFACTURING = "manufacturing", _("Manufacturing")
    CULTURE = "culture", _("Culture and arts")
    FINANCE = "finance", _("Finance")
    ACADEMIA = "academia", _("Academia and research")
    GOVERNMENT = "government", _("Government")


class Institution(models.Model):
    """An organisation that applied to, belongs to, or left the alliance.

    The row exists from the moment it applies, so that its name is reserved and its history is
    kept; only an admitted institution acts in the alliance.
    """

    class Status(models.TextChoices):
        APPLIED = "applied", _("Applied")
        ADMITTED = "admitted", _("Admitted")
        REJECTED = "rejected", _("Rejected")
        SUSPENDED = "suspended", _("Suspended")
        WITHDRAWN = "withdrawn", _("Withdrawn")

    name = models.CharField(_("name"), max_length=200, unique=True)
    slug = models.SlugField(_("slug"), max_length=60, unique=True)
    sector = models.CharField(_("sector"), max_length=20, choices=Sector.choices)
    country = models.CharField(_("country"), max_length=100)
    website = models.URLField(_("website"), blank=True)
    description = models.TextField(_("description"), blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=Status.choices, default=Status.APPLIED, db_index=True
    )
    status_reason = models.TextField(_("reason for the current status"), blank=True)
    admitted_at = models.DateTimeField(_("admitted at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("institution")
        verbose_name_plural = _("institutions")
        permissions = [("manage_members", _("Can invite and manage the institution's people"))]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("institution-detail", args=[self.slug])

    @property
    def is_active_member(self) -> bool:
        return self.status == self.Status.ADMITTED
