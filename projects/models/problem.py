from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from alliance.models import Sector


class TaskType(models.TextChoices):
    BINARY = "binary", _("Binary classification")
    MULTICLASS = "multiclass", _("Multiclass classification")
    REGRESSION = "regression", _("Regression")


class Metric(models.TextChoices):
    ACCURACY = "accuracy", _("Accuracy")
    ROC_AUC = "roc_auc", _("ROC AUC")
    F1 = "f1", _("F1 score")
    RMSE = "rmse", _("Root mean squared error")
    MAE = "mae", _("Mean absolute error")

    @classmethod
    def lower_is_better(cls, value: str) -> bool:
        return value in (cls.RMSE, cls.MAE)


class Problem(models.Model):
    """A learning problem that alliance members define together and then train on.

    The descriptive fields (title, summary, question) may be edited in place; what a model is
    held to (label, schema, metric, threshold) lives in numbered ``ProblemRevision`` rows, and
    each revision must be ratified by every contributing and validating institution.
    ``stage`` is the lifecycle shown on every page; the problem services keep it in step.
    """

    class Visibility(models.TextChoices):
        LISTED = "listed", _("Listed to the whole alliance")
        INVITATION = "invitation", _("Invitation only")

    class Stage(models.TextChoices):
        PROPOSED = "proposed", _("Proposed")
        RATIFIED = "ratified", _("Ratified")
        DATA_READY = "data_ready", _("Data ready")
        TRAINING = "training", _("Training")
        CERTIFIED = "certified", _("Certified")
        RELEASED = "released", _("Released")

    slug = models.SlugField(_("slug"), max_length=80, unique=True)
    title = models.CharField(_("title"), max_length=200)
    sector = models.CharField(_("sector"), max_length=20, choices=Sector.choices)
    summary = models.TextField(_("summary"))
    question = models.TextField(_("the question it answers"))
    visibility = models.CharField(
        _("visibility"), max_length=12, choices=Visibility.choices, default=Visibility.LISTED
    )
    stage = models.CharField(
        _("stage"), max_length=12, choices=Stage.choices, default=Stage.PROPOSED, db_index=True
    )
    proposer = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="proposed_problems",
        verbose_name=_("proposing institution"),
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("proposed by"),
    )
    current_revision = models.PositiveIntegerField(_("current revision"), default=1)
    ratified_revision = models.PositiveIntegerField(
        _("ratified revision"),
        null=True,
        blank=True,
        help_text=_("The current revision once every contributor and validator has approved it."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("problem")
        verbose_name_plural = _("problems")
        permissions = [
            ("manage_participants", _("Can accept, decline and invite participants")),
            ("ratify_problem", _("Can ratify a revision for its institution")),
            ("comment_problem", _("Can comment on revisions")),
            ("register_dataset", _("Can register a dataset for its institution")),
            ("approve_agreement", _("Can approve data-use agreements for its institution")),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("problem-detail", args=[self.slug])

    @property
    def is_ratified(self) -> bool:
        return (
            self.ratified_revision is not None and self.ratified_revision == self.current_revision
        )

    @property
    def stage_index(self) -> int:
        return list(self.Stage.values).index(self.stage)


class ProblemRevision(models.Model):
    """Revision N of what a problem's models are held to: label, feature schema, metric, bar.

    Immutable once written: a change is a new revision, which needs ratification again.
    ``features`` is a list of column specs (name, type, unit, min, max, categories, required),
    normalised by ``projects.schema.feature_schema_clean``.
    """

    problem = models.ForeignKey(
        Problem, on_delete=models.CASCADE, related_name="revisions", verbose_name=_("problem")
    )
    number = models.PositiveIntegerField(_("revision"))
    task_type = models.CharField(_("task type"), max_length=12, choices=TaskType.choices)
    label_column = models.CharField(_("label column"), max_length=100)
    features = models.JSONField(_("feature schema"))
    metric = models.CharField(_("evaluation metric"), max_length=10, choices=Metric.choices)
    threshold = models.FloatField(
        _("acceptance threshold"),
        help_text=_("The metric value a model must reach on validation data to be certified."),
    )
    change_note = models.TextField(_("what changed and why"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["problem", "number"]
        verbose_name = _("problem revision")
        verbose_name_plural = _("problem revisions")
        constraints = [
            models.UniqueConstraint(fields=["problem", "number"], name="one_revision_number")
        ]

    def __str__(self) -> str:
        return f"{self.problem} r{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("problem-revision", args=[self.problem.slug, self.number])

    def definition(self) -> dict:
        """The ratifiable content of this revision, as plain values (for diffs and hashes)."""
        return {
            "task_type": self.task_type,
            "label_column": self.label_column,
            "metric": self.metric,
            "threshold": self.threshold,
            "features": self.features,
        }


class Ratification(models.Model):
    """An institution's approval of one revision of a problem, given by its admin or researcher."""

    revision = models.ForeignKey(
        ProblemRevision,
        on_delete=models.CASCADE,
        related_name="ratifications",
        verbose_name=_("revision"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="ratifications",
        verbose_name=_("institution"),
    )
    ratified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("ratified by"),
    )
    created_at = models.DateTimeField(_("ratified at"), auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = _("ratification")
        verbose_name_plural = _("ratifications")
        constraints = [
            models.UniqueConstraint(
                fields=["revision", "institution"], name="one_ratification_per_institution"
            )
        ]

    def __str__(self) -> str:
        return f"{self.institution} ratified {self.revision}"


class ProblemComment(models.Model):
    """A participant's remark in the discussion thread of one revision."""

    revision = models.ForeignKey(
        ProblemRevision,
        on_delete=models.CASCADE,
        related_name="comments",
        verbose_name=_("revision"),
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("author"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("institution"),
    )
    body = models.TextField(_("comment"))
    created_at = models.DateTimeField(_("written at"), auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("comment")
        verbose_name_plural = _("comments")

    def __str__(self) -> str:
        return f"{self.author} on {self.revision}"


class Participation(models.Model):
    """An institution's place in a problem: contributor, validator or observer, and its state.

    Requests (the institution asked) and invitations (the proposer asked) wait for the other
    side's admin, and the asking side may withdraw them until then. An institution that leaves
    stays on record with ``left`` so that its history is kept, and its data is excluded from
    later rounds.
    """

    class Role(models.TextChoices):
        CONTRIBUTOR = "contributor", _("Contributor (brings data)")
        VALIDATOR = "validator", _("Validator (evaluates on held-out data)")
        OBSERVER = "observer", _("Observer")

    class Status(models.TextChoices):
        REQUESTED = "requested", _("Asked to join")
        INVITED = "invited", _("Invited")
        ACTIVE = "active", _("Participating")
        DECLINED = "declined", _("Declined")
        WITHDRAWN = "withdrawn", _("Withdrawn")
        LEFT = "left", _("Left")

    problem = models.ForeignKey(
        Problem, on_delete=models.CASCADE, related_name="participations", verbose_name=_("problem")
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="participations",
        verbose_name=_("institution"),
    )
    role = models.CharField(_("role"), max_length=12, choices=Role.choices)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, db_index=True)
    message = models.TextField(_("message"), blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("asked by"),
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("decided by"),
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    left_at = models.DateTimeField(_("left at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["problem", "institution__name"]
        verbose_name = _("participation")
        verbose_name_plural = _("participations")
        constraints = [
            models.UniqueConstraint(
                fields=["problem", "institution"], name="one_participation_per_institution"
            )
        ]

    def __str__(self) -> str:
        return f"{self.institution} in {self.problem} ({self.get_role_display()})"

    @property
    def must_ratify(self) -> bool:
        return self.status == self.Status.ACTIVE and self.role in (
            self.Role.CONTRIBUTOR,
            self.Role.VALIDATOR,
        )
