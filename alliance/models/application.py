from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class MembershipApplication(models.Model):
    """An institution's request to join, with the contact person who will become its first admin.

    Alliance staff decide it once: approval admits the institution and invites the contact;
    rejection records the reason the applicant is told.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending review")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="applications",
        verbose_name=_("institution"),
    )
    contact_name = models.CharField(_("contact name"), max_length=150)
    contact_email = models.EmailField(_("contact email"))
    contact_title = models.CharField(_("contact's position"), max_length=150, blank=True)
    motivation = models.TextField(_("why the institution wants to join"))
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    decision_reason = models.TextField(_("reason for the decision"), blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("reviewed by"),
    )
    reviewed_at = models.DateTimeField(_("reviewed at"), null=True, blank=True)
    submitted_at = models.DateTimeField(_("submitted at"), auto_now_add=True)

    class Meta:
        ordering = ["-submitted_at"]
        verbose_name = _("membership application")
        verbose_name_plural = _("membership applications")
        constraints = [
            models.UniqueConstraint(
                fields=["institution"],
                condition=models.Q(status="pending"),
                name="one_pending_application_per_institution",
            )
        ]

    def __str__(self) -> str:
        return f"{self.institution.name} ({self.get_status_display()})"
