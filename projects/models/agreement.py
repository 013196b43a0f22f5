import hashlib
import json

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


class ModelFamily(models.TextChoices):
    LOGISTIC_REGRESSION = "logistic_regression", _("Logistic regression")
    LINEAR_REGRESSION = "linear_regression", _("Linear regression")
    MLP = "mlp", _("Multilayer perceptron")


class FeatureScaling(models.TextChoices):
    """How every site maps its feature values before training (the same way at every site)."""

    RANGES = "ranges", _("Min-max to the agreed ranges")
    STANDARDISE = "standardise", _("Standardisation from the registered summaries")
    NONE = "none", _("None: the values as recorded")


class DownloadScope(models.TextChoices):
    PARTICIPANTS = "participants", _("Participants of the problem")
    MEMBERS = "members", _("Every alliance member")
    PUBLIC = "public", _("Anyone")


# The fields that make up the terms; their canonical JSON is what stewards approve.
TERM_FIELDS = (
    "purpose",
    "model_families",
    "min_contributors",
    "secure_aggregation",
    "dp_max_epsilon",
    "download_scope",
    "commercial_use",
    "revenue_sharing",
    "expires_on",
    "clauses",
    "max_l2",
    "max_validation_share",
    "feature_scalings",
)
# Limits on a run's options, added to the terms later. A version whose limit is the default
# leaves it out of its canonical terms, so the hash every earlier approval recorded still
# holds; these defaults are therefore part of the canonical form and never change.
LIMIT_DEFAULTS: dict[str, object] = {
    "max_l2": 1.0,
    "max_validation_share": 0.5,
    "feature_scalings": sorted(FeatureScaling.values),
}


def _all_scalings() -> list[str]:
    return sorted(FeatureScaling.values)


class AgreementVersion(models.Model):
    """Version N of a problem's data-use agreement: structured terms that machines enforce.

    A version waits for every contributor's data steward; it becomes effective when the last
    one approves, and only then supersedes the previous effective version. Terms never change
    after creation: an amendment is a new version. ``terms_sha256`` is the hash of the
    canonical terms (``canonical_terms``); every approval records the hash it approved.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Awaiting approvals")
        EFFECTIVE = "effective", _("Effective")
        SUPERSEDED = "superseded", _("Superseded")
        WITHDRAWN = "withdrawn", _("Withdrawn before taking effect")

    problem = models.ForeignKey(
        "projects.Problem",
        on_delete=models.CASCADE,
        related_name="agreements",
        verbose_name=_("problem"),
    )
    number = models.PositiveIntegerField(_("version"))
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    purpose = models.TextField(_("purpose"))
    model_families = models.JSONField(_("permitted model families"))
    min_contributors = models.PositiveIntegerField(_("minimum contributors per round"))
    secure_aggregation = models.BooleanField(_("secure aggregation required"), default=False)
    dp_max_epsilon = models.FloatField(
        _("differential-privacy ceiling (maximum epsilon)"),
        null=True,
        blank=True,
        help_text=_("Empty: differential privacy is not required."),
    )
    download_scope = models.CharField(
        _("who may download trained models"), max_length=12, choices=DownloadScope.choices
    )
    commercial_use = models.BooleanField(_("commercial use allowed"), default=False)
    revenue_sharing = models.TextField(_("revenue sharing"), blank=True)
    expires_on = models.DateField(_("expires on"))
    clauses = models.TextField(_("further clauses"), blank=True)
    max_l2 = models.FloatField(
        _("strongest L2 regularisation a run may use"),
        default=LIMIT_DEFAULTS["max_l2"],
        help_text=_("A run chooses its L2 strength from 0 up to this."),
    )
    max_validation_share = models.FloatField(
        _("largest share of its rows a site keeps for validation"),
        default=LIMIT_DEFAULTS["max_validation_share"],
        help_text=_("A run chooses the share from 0 (no local validation) up to this."),
    )
    feature_scalings = models.JSONField(_("permitted feature scalings"), default=_all_scalings)
    change_note = models.TextField(_("what changed and why"), blank=True)
    terms_sha256 = models.CharField(_("SHA-256 of the canonical terms"), max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("drafted by"),
    )
    created_at = models.DateTimeField(_("drafted at"), auto_now_add=True)
    effective_at = models.DateTimeField(_("effective since"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)

    class Meta:
        ordering = ["problem", "number"]
        verbose_name = _("agreement version")
        verbose_name_plural = _("agreement versions")
        constraints = [
            models.UniqueConstraint(fields=["problem", "number"], name="one_agreement_number"),
            models.UniqueConstraint(
                fields=["problem"],
                condition=models.Q(status="effective"),
                name="one_effective_agreement",
            ),
            models.UniqueConstraint(
                fields=["problem"],
                condition=models.Q(status="pending"),
                name="one_pending_agreement",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.problem} agreement v{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("agreement-detail", args=[self.problem.slug, self.number])

    def feature_scaling_labels(self) -> list[str]:
        labels = dict(FeatureScaling.choices)
        return [str(labels.get(v, v)) for v in self.feature_scalings]

    def terms(self) -> dict:
        return {field: getattr(self, field) for field in TERM_FIELDS}

    def canonical_terms(self) -> dict:
        return canonical_terms(
            problem_slug=self.problem.slug, number=self.number, terms=self.terms()
        )

    def compute_terms_sha256(self) -> str:
        return terms_sha256(self.canonical_terms())


def canonical_terms(*, problem_slug: str, number: int, terms: dict) -> dict:
    """The terms as plain JSON values, with the problem and version they belong to."""
    clean = dict(terms)
    clean["model_families"] = sorted(clean["model_families"])
    expires = clean["expires_on"]
    clean["expires_on"] = expires.isoformat() if hasattr(expires, "isoformat") else expires
    if clean["dp_max_epsilon"] is not None:
        clean["dp_max_epsilon"] = float(clean["dp_max_epsilon"])
    for name in ("max_l2", "max_validation_share"):
        if name in clean:
            clean[name] = float(clean[name])
    if "feature_scalings" in clean:
        clean["feature_scalings"] = sorted(clean["feature_scalings"])
    for name, default in LIMIT_DEFAULTS.items():
        if clean.get(name, default) == default:
            clean.pop(name, None)
    return {"problem": problem_slug, "version": number, "terms": clean}


def terms_sha256(canonical: dict) -> str:
    """SHA-256 over sorted, compact, UTF-8 JSON: anyone can recompute it from the terms."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AgreementApproval(models.Model):
    """A contributor's decision on one agreement version, made by one of its data stewards.

    ``terms_sha256`` is the hash of the exact terms the steward saw. A revocation keeps the row
    (and the history) and excludes the institution's data from every new round.
    """

    class Decision(models.TextChoices):
        APPROVED = "approved", _("Approved")
        DECLINED = "declined", _("Declined")

    version = models.ForeignKey(
        AgreementVersion,
        on_delete=models.CASCADE,
        related_name="approvals",
        verbose_name=_("agreement version"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="agreement_approvals",
        verbose_name=_("institution"),
    )
    decision = models.CharField(_("decision"), max_length=10, choices=Decision.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("decided by"),
    )
    terms_sha256 = models.CharField(_("SHA-256 of the approved terms"), max_length=64)
    reason = models.TextField(_("reason"), blank=True)
    decided_at = models.DateTimeField(_("decided at"))
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("revoked by"),
    )
    revoke_reason = models.TextField(_("reason for revoking"), blank=True)

    class Meta:
        ordering = ["version", "institution__name"]
        verbose_name = _("agreement decision")
        verbose_name_plural = _("agreement decisions")
        constraints = [
            models.UniqueConstraint(
                fields=["version", "institution"], name="one_decision_per_institution"
            )
        ]

    def __str__(self) -> str:
        return f"{self.institution} {self.get_decision_display()} {self.version}"

    @property
    def is_standing_approval(self) -> bool:
        return self.decision == self.Decision.APPROVED and self.revoked_at is None
