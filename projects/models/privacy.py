from django.db import models
from django.utils.translation import gettext_lazy as _


class PrivacySpend(models.Model):
    """One round's privacy event at one dataset: a line of that dataset's privacy budget ledger.

    A round of DP-SGD at a site spends part of its dataset's budget; the row keeps the event as
    plain parameters (noise multiplier, sampling rate, steps), from which the accountant rebuilds
    it, and the figures worked out when it was recorded: this event's epsilon alone and the
    dataset's epsilon with every earlier spend composed (Rényi DP, at ``delta``). The ledger is
    the records, not the registration: a dataset registered again with the same file (same
    institution, same SHA-256) carries its spends with it. Rows are never changed or deleted.
    """

    dataset = models.ForeignKey(
        "projects.Dataset",
        on_delete=models.PROTECT,
        related_name="privacy_spends",
        verbose_name=_("dataset"),
    )
    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.PROTECT,
        related_name="privacy_spends",
        verbose_name=_("institution"),
    )
    sha256 = models.CharField(_("SHA-256 of the file"), max_length=64, db_index=True)
    run = models.ForeignKey(
        "projects.TrainingRun",
        on_delete=models.PROTECT,
        related_name="privacy_spends",
        verbose_name=_("run"),
    )
    round_number = models.PositiveIntegerField(_("round"))
    noise_multiplier = models.FloatField(_("noise multiplier"))
    sampling_rate = models.FloatField(_("sampling rate"))
    steps = models.PositiveIntegerField(_("steps"))
    clip_norm = models.FloatField(_("clipping bound"))
    delta = models.FloatField(_("delta"))
    epsilon = models.FloatField(_("epsilon of this round"))
    epsilon_total = models.FloatField(_("epsilon spent in all"))
    accountant = models.CharField(_("accountant"), max_length=60)
    created_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("privacy spend")
        verbose_name_plural = _("privacy spends")
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "run", "round_number"], name="one_spend_per_dataset_round"
            )
        ]
        indexes = [models.Index(fields=["institution", "sha256"])]

    def __str__(self) -> str:
        return f"{self.dataset_id}: run {self.run_id} round {self.round_number}"
