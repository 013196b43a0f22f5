from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Dataset(models.Model):
    """A participant's dataset for a problem, described by metadata only: its rows stay home.

    A contributor's trains models (``purpose`` training); a validator's is held out, and only
    ever scores them (``purpose`` holdout).

    ``site_key`` is a name the site resolves in its own data directory, never a path or a file
    on the portal. ``columns`` is the per-column summary printed by ``describe_dataset``;
    ``revision`` is the problem revision the dataset was last checked against, so a dataset
    that no longer fits a newer ratified schema is visible as such.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", _("Registered")
        WITHDRAWN = "withdrawn", _("Withdrawn")

    class Purpose(models.TextChoices):
        TRAINING = "training", _("Training")
        HOLDOUT = "holdout", _("Held out for validation")

    problem = models.ForeignKey(
        "projects.Problem",
        on_delete=models.CASCADE,
        related_name="datasets",
        verbose_name=_("problem"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="datasets",
        verbose_name=_("institution"),
    )
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("registered by"),
    )
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    site_key = models.CharField(_("site key"), max_length=200)
    purpose = models.CharField(
        _("purpose"), max_length=8, choices=Purpose.choices, default=Purpose.TRAINING
    )
    row_count = models.PositiveIntegerField(_("rows"))
    sha256 = models.CharField(_("SHA-256 of the file"), max_length=64)
    label_column = models.CharField(_("label column"), max_length=100, blank=True)
    columns = models.JSONField(_("columns"))
    collection_start = models.DateField(_("collected from"), null=True, blank=True)
    collection_end = models.DateField(_("collected until"), null=True, blank=True)
    personal_data = models.BooleanField(_("holds personal data"), default=False)
    legal_basis = models.TextField(_("legal basis for personal data"), blank=True)
    revision = models.PositiveIntegerField(_("checked against revision"))
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True
    )
    withdrawn_at = models.DateTimeField(_("withdrawn at"), null=True, blank=True)
    created_at = models.DateTimeField(_("registered at"), auto_now_add=True)

    class Meta:
        ordering = ["problem", "institution__name", "created_at"]
        verbose_name = _("dataset")
        verbose_name_plural = _("datasets")
        constraints = [
            models.UniqueConstraint(
                fields=["problem", "institution", "site_key"],
                condition=models.Q(status="active"),
                name="one_active_dataset_per_site_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.institution})"

    @property
    def column_names(self) -> list[str]:
        return [c["name"] for c in self.columns]
