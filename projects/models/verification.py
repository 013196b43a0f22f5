"""Verify and release: a model version scored where the data lives, certified, released.

An ``Evaluation`` is one site's scoring of one model version: a validator on its registered
held-out file, or a contributor on the validation rows it keeps. The ratified revision's metric
and threshold then decide a ``Certification``; a certified version may be ``Release``d by the
proposer's admin under the agreement's terms.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Evaluation(models.Model):
    """One site's scoring of one model version, on its own data, through the signed path."""

    class Kind(models.TextChoices):
        VALIDATE = "validate", _("Held-out validation")
        EVALUATE = "evaluate", _("Contributor's validation rows")
        SCORE = "score", _("Contribution measurement (held out)")

    class Status(models.TextChoices):
        DISPATCHED = "dispatched", _("Scoring")
        DONE = "done", _("Scored")
        REFUSED = "refused", _("Refused")
        DROPPED = "dropped", _("No answer before the deadline")

    FINAL = (Status.DONE, Status.REFUSED, Status.DROPPED)

    model = models.ForeignKey(
        "projects.ModelVersion",
        on_delete=models.CASCADE,
        related_name="evaluations",
        verbose_name=_("model version"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("institution"),
    )
    dataset = models.ForeignKey(
        "projects.Dataset", on_delete=models.PROTECT, related_name="+", verbose_name=_("dataset")
    )
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.DISPATCHED
    )
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    rows = models.PositiveIntegerField(_("rows scored"), null=True, blank=True)
    reason_code = models.CharField(_("reason code"), max_length=32, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    nonce = models.CharField(_("nonce"), max_length=32)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("requested by"),
    )
    requested_at = models.DateTimeField(_("requested at"))
    deadline_at = models.DateTimeField(_("deadline"))
    answered_at = models.DateTimeField(_("answered at"), null=True, blank=True)
    resent_at = models.DateTimeField(_("task sent again at"), null=True, blank=True)
    resends = models.PositiveSmallIntegerField(_("times the task was sent again"), default=0)

    class Meta:
        ordering = ["model", "kind", "institution__name"]
        verbose_name = _("evaluation")
        verbose_name_plural = _("evaluations")
        constraints = [
            models.UniqueConstraint(
                fields=["model", "institution", "kind"], name="one_evaluation_per_site_and_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model}: {self.institution} ({self.kind})"


class Certification(models.Model):
    """The verdict on a model version against the ratified revision's metric and threshold.

    Rule: certified when every validator that scored the version meets the threshold on its
    held-out rows (a pooled figure could hide one validator's failure, so none is used), and
    at least one validator scored it.
    """

    model = models.OneToOneField(
        "projects.ModelVersion",
        on_delete=models.CASCADE,
        related_name="certification",
        verbose_name=_("model version"),
    )
    certified = models.BooleanField(_("certified"))
    revision = models.PositiveIntegerField(_("problem revision"))
    metric = models.CharField(_("metric"), max_length=10)
    threshold = models.FloatField(_("threshold"))
    lower_is_better = models.BooleanField(_("lower is better"), default=False)
    # {slug: {"name", "value", "rows", "gap", "meets"}} for every validator that was asked.
    figures = models.JSONField(_("validators' figures"), default=dict)
    reasons = models.JSONField(_("why not"), default=list, blank=True)
    decided_at = models.DateTimeField(_("decided at"))

    class Meta:
        verbose_name = _("certification")
        verbose_name_plural = _("certifications")

    def __str__(self) -> str:
        return f"{self.model}: {'certified' if self.certified else 'not certified'}"


class Release(models.Model):
    """A certified model version released by the proposer's admin, under the agreement's terms."""

    model = models.OneToOneField(
        "projects.ModelVersion",
        on_delete=models.PROTECT,
        related_name="release",
        verbose_name=_("model version"),
    )
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("released by"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("released for"),
    )
    agreement = models.ForeignKey(
        "projects.AgreementVersion",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("under agreement version"),
    )
    terms_sha256 = models.CharField(_("SHA-256 of the terms"), max_length=64)
    note = models.TextField(_("release note"), blank=True)
    released_at = models.DateTimeField(_("released at"))

    class Meta:
        verbose_name = _("release")
        verbose_name_plural = _("releases")

    def __str__(self) -> str:
        return f"{self.model} released"


class ContributionStudy(models.Model):
    """How much each contributor's updates made a certified model: the plan and its outcome.

    ``plan`` lists, round by round, the model the round started from and the coalitions of
    its contributors with the SHA-256 of the model each would have produced (rebuilt from the
    stored updates); the validators score every one of them on their held-out data.
    """

    class Status(models.TextChoices):
        SCORING = "scoring", _("The validators are scoring the coalitions")
        MEASURED = "measured", _("Measured")
        NOT_MEASURED = "not_measured", _("Not measured")

    model = models.OneToOneField(
        "projects.ModelVersion",
        on_delete=models.CASCADE,
        related_name="contribution_study",
        verbose_name=_("model version"),
    )
    method = models.CharField(_("method"), max_length=40)
    metric = models.CharField(_("metric"), max_length=10)
    plan = models.JSONField(_("plan"), default=dict)
    status = models.CharField(_("status"), max_length=12, choices=Status.choices)
    reason = models.TextField(_("why not"), blank=True)
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)

    class Meta:
        verbose_name = _("contribution study")
        verbose_name_plural = _("contribution studies")

    def __str__(self) -> str:
        return f"{self.model}: contributions ({self.status})"


class Contribution(models.Model):
    """One contributor's share in a certified model: its Shapley value, with leave-one-out."""

    study = models.ForeignKey(
        ContributionStudy,
        on_delete=models.CASCADE,
        related_name="contributions",
        verbose_name=_("study"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("institution"),
    )
    shapley = models.FloatField(_("Shapley value"))
    leave_one_out = models.FloatField(_("leave-one-out"), null=True, blank=True)
    share = models.FloatField(_("share of the positive total"), null=True, blank=True)
    rounds = models.PositiveIntegerField(_("rounds contributed to"))

    class Meta:
        ordering = ["study", "-shapley"]
        verbose_name = _("contribution")
        verbose_name_plural = _("contributions")
        constraints = [
            models.UniqueConstraint(
                fields=["study", "institution"], name="one_contribution_per_site"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.institution}: {self.shapley:.4f}"
