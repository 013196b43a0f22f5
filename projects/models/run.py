"""Federated training runs, their rounds, each site's part in a round, and the models produced.

The database is the source of truth for a run: Celery only carries work. A round's completion is
counted here as updates arrive, so a duplicate delivery counts once and a restarted coordinator
picks the run up from these rows.
"""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from projects.models.agreement import FeatureScaling, ModelFamily


class Strategy(models.TextChoices):
    FEDAVG = "fedavg", _("FedAvg (weighted by sample count)")
    FEDPROX = "fedprox", _("FedProx (proximal term on the sites)")
    FEDADAM = "fedadam", _("FedAdam (adaptive server optimiser)")
    MEDIAN = "median", _("Coordinate-wise median (robust)")
    TRIMMED_MEAN = "trimmed_mean", _("Trimmed mean (robust)")


class TrainingRun(models.Model):
    """One federated training run of a problem under one effective agreement version."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    problem = models.ForeignKey(
        "projects.Problem", on_delete=models.CASCADE, related_name="runs", verbose_name=_("problem")
    )
    number = models.PositiveIntegerField(_("run"))
    agreement = models.ForeignKey(
        "projects.AgreementVersion",
        on_delete=models.PROTECT,
        related_name="runs",
        verbose_name=_("agreement version"),
    )
    revision = models.PositiveIntegerField(_("problem revision"))
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("launched by"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("launched for"),
    )
    model_family = models.CharField(_("model family"), max_length=24, choices=ModelFamily.choices)
    family_options = models.JSONField(_("model options"), default=dict, blank=True)
    strategy = models.CharField(_("strategy"), max_length=16, choices=Strategy.choices)
    strategy_options = models.JSONField(_("strategy parameters"), default=dict, blank=True)
    rounds = models.PositiveIntegerField(_("rounds"))
    local_epochs = models.PositiveIntegerField(_("local epochs"))
    batch_size = models.PositiveIntegerField(_("batch size"))
    learning_rate = models.FloatField(_("learning rate"))
    min_contributors = models.PositiveIntegerField(_("minimum contributors per round"))
    round_deadline = models.PositiveIntegerField(_("round deadline (seconds)"))
    seed = models.PositiveIntegerField(_("seed"))
    validation_share = models.FloatField(
        _("share of its rows each site keeps for validation"), default=0.2
    )
    feature_scaling = models.CharField(
        _("feature scaling"),
        max_length=12,
        choices=FeatureScaling.choices,
        default=FeatureScaling.RANGES,
    )
    max_update_norm = models.FloatField(_("largest accepted update norm"))
    max_update_bytes = models.PositiveIntegerField(_("largest accepted update (bytes)"))
    # What every site needs to read its data the same way: features, label, classes, ranges.
    spec = models.JSONField(_("learning specification"))
    # FedAdam's server-side moments (encoded arrays, base64); empty for the other strategies.
    strategy_state = models.TextField(_("strategy state"), blank=True)
    # Every round securely aggregated: the coordinator only ever holds masked vectors and sums.
    secure_aggregation = models.BooleanField(_("secure aggregation"), default=False)
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    reasons = models.JSONField(_("why it stopped"), default=list, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        verbose_name=_("cancelled by"),
    )
    created_at = models.DateTimeField(_("launched at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["problem", "-number"]
        verbose_name = _("training run")
        verbose_name_plural = _("training runs")
        constraints = [
            models.UniqueConstraint(fields=["problem", "number"], name="one_run_number"),
        ]

    def __str__(self) -> str:
        return f"{self.problem} run {self.number}"

    def get_absolute_url(self) -> str:
        return reverse("run", args=[self.problem.slug, self.number])

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def l2(self) -> float:
        """The L2 strength the sites train with (a model option; 0 when none is set)."""
        value = (self.family_options or {}).get("l2", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def options(self) -> dict[str, float | str]:
        """The options chosen within the agreement's limits, as the model's records state them."""
        return {
            "l2": self.l2,
            "validation_share": self.validation_share,
            "feature_scaling": self.feature_scaling,
        }


class Round(models.Model):
    """Round N of a run: dispatched to every eligible site, closed when counted complete."""

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    run = models.ForeignKey(
        TrainingRun, on_delete=models.CASCADE, related_name="round_set", verbose_name=_("run")
    )
    number = models.PositiveIntegerField(_("round"))
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.RUNNING, db_index=True
    )
    started_at = models.DateTimeField(_("started at"))
    deadline_at = models.DateTimeField(_("deadline"))
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)
    contributors = models.PositiveIntegerField(_("contributions"), default=0)
    # The sites' updates scored on their validation rows, weighted by those rows.
    metrics = models.JSONField(_("local updates' metrics"), default=dict, blank=True)
    # The global model the round started from, scored by every contributor on its validation
    # rows before it trained, weighted by those rows: that model's own figures.
    global_metrics = models.JSONField(_("global model's metrics"), default=dict, blank=True)
    timings = models.JSONField(_("timings (seconds)"), default=dict, blank=True)
    excluded = models.JSONField(_("excluded institutions"), default=list, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    # Answers dropped because they were not provably the site's own, by reason; reported once,
    # when the round closes, so a flood cannot swell the audit trail.
    forged = models.JSONField(_("forged answers dropped"), default=dict, blank=True)
    # A securely aggregated round: its stage and parameters while open, then what the
    # coordinator saw (the sites' public keys, each masked vector's hash, the masked sum's
    # hash, who survived and who dropped). Never an individual update.
    secagg = models.JSONField(_("secure aggregation"), default=dict, blank=True)
    model = models.ForeignKey(
        "projects.ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("model produced"),
    )

    class Meta:
        ordering = ["run", "number"]
        verbose_name = _("round")
        verbose_name_plural = _("rounds")
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="one_round_number"),
        ]

    def __str__(self) -> str:
        return f"{self.run} round {self.number}"


class SiteRound(models.Model):
    """One site's part in one round: dispatched, then contributed, dropped or rejected."""

    class Status(models.TextChoices):
        DISPATCHED = "dispatched", _("Training")
        CONTRIBUTED = "contributed", _("Contributed")
        DROPPED = "dropped", _("Dropped at the deadline")
        REJECTED = "rejected", _("Rejected")
        CANCELLED = "cancelled", _("Cancelled")

    round = models.ForeignKey(
        Round, on_delete=models.CASCADE, related_name="sites", verbose_name=_("round")
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
    status = models.CharField(
        _("status"),
        max_length=12,
        choices=Status.choices,
        default=Status.DISPATCHED,
        db_index=True,
    )
    reason_code = models.CharField(_("reason code"), max_length=32, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    sample_count = models.PositiveIntegerField(_("training rows"), null=True, blank=True)
    metrics = models.JSONField(_("local metrics"), default=dict, blank=True)
    # The model the site received, scored on its validation rows before it trained.
    global_metrics = models.JSONField(_("received model's metrics"), default=dict, blank=True)
    timings = models.JSONField(_("timings (seconds)"), default=dict, blank=True)
    # Drawn afresh for each dispatch and signed into the task: only an answer that echoes it,
    # signed by the site's active key, can count.
    nonce = models.CharField(_("nonce"), max_length=32, blank=True)
    # When the reconciler last sent the task again (null: only the first dispatch), and how
    # many times it did: each resend waits twice as long as the one before.
    resent_at = models.DateTimeField(_("task sent again at"), null=True, blank=True)
    resends = models.PositiveSmallIntegerField(_("times the task was sent again"), default=0)
    # The accepted update (encoded, base64) waits here until the round is aggregated.
    update = models.TextField(_("update"), blank=True)
    update_sha256 = models.CharField(_("SHA-256 of the update"), max_length=64, blank=True)
    update_bytes = models.PositiveIntegerField(_("update size (bytes)"), null=True, blank=True)
    answered_at = models.DateTimeField(_("answered at"), null=True, blank=True)
    # A securely aggregated round: the site's answers to each stage (its signed public keys,
    # the encrypted shares it sends its peers, its unmasking shares), by stage.
    secagg = models.JSONField(_("secure aggregation answers"), default=dict, blank=True)

    class Meta:
        ordering = ["round", "institution__name"]
        verbose_name = _("site round")
        verbose_name_plural = _("site rounds")
        constraints = [
            models.UniqueConstraint(fields=["round", "institution"], name="one_site_per_round"),
        ]

    def __str__(self) -> str:
        return f"{self.round}: {self.institution}"


class ModelVersion(models.Model):
    """The global model after a round (round 0: the initial model), stored by content hash.

    ``metrics`` are the model's own figures: the contributors' scores of it on their validation
    rows, weighted by those rows (measured at the start of the next round, or by the final
    evaluation for a run's last model).
    """

    run = models.ForeignKey(
        TrainingRun, on_delete=models.CASCADE, related_name="models", verbose_name=_("run")
    )
    round_number = models.PositiveIntegerField(_("after round"))
    file = models.FileField(_("parameters file"), upload_to="models/", max_length=200)
    sha256 = models.CharField(_("SHA-256"), max_length=64, db_index=True)
    size = models.PositiveIntegerField(_("size (bytes)"))
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    evaluated_rows = models.PositiveIntegerField(_("validation rows scored"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["run", "round_number"]
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")
        constraints = [
            models.UniqueConstraint(fields=["run", "round_number"], name="one_model_per_round"),
        ]

    def __str__(self) -> str:
        return f"{self.run} model after round {self.round_number}"

    @property
    def download_name(self) -> str:
        return f"{self.run.problem.slug}-run{self.run.number}-round{self.round_number}.npy"
