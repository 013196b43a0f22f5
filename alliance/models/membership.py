from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    ADMIN = "admin", _("Institution admin")
    DATA_STEWARD = "data_steward", _("Data steward")
    RESEARCHER = "researcher", _("Researcher")
    VIEWER = "viewer", _("Viewer")


class Membership(models.Model):
    """A person's place in the alliance: the one institution they act for, and their role there.

    Alliance staff are ``is_staff`` users and have no membership. An invited person has a
    membership before they have a password; ``joined_at`` is set when they accept.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="membership",
        verbose_name=_("user"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="memberships",
        verbose_name=_("institution"),
    )
    role = models.CharField(_("role"), max_length=20, choices=Role.choices)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("invited by"),
    )
    invited_at = models.DateTimeField(_("invited at"), auto_now_add=True)
    joined_at = models.DateTimeField(_("joined at"), null=True, blank=True)

    class Meta:
        ordering = ["institution__name", "user__last_name", "user__first_name", "user__username"]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")

    def __str__(self) -> str:
        return f"{self.user.get_username()} · {self.institution} · {self.get_role_display()}"

    @property
    def is_pending(self) -> bool:
        return self.joined_at is None
