"""What the portal tells people: inbox notifications, each person's email choices, and the
webhooks an institution's integrators register (with a record of every delivery)."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Event(models.TextChoices):
    """The events a person is told about and a webhook can subscribe to."""

    RUN_SUCCEEDED = "run.succeeded", _("A run finished")
    RUN_FAILED = "run.failed", _("A run failed")
    RUN_CANCELLED = "run.cancelled", _("A run was cancelled")


# How each notification reads, from its stored parameters (translated when shown).
NOTIFICATION_TEXTS = {
    Event.RUN_SUCCEEDED: _("Run %(run)s of %(problem)s finished."),
    Event.RUN_FAILED: _("Run %(run)s of %(problem)s failed."),
    Event.RUN_CANCELLED: _("Run %(run)s of %(problem)s was cancelled."),
}


class Notification(models.Model):
    """One thing that happened, told to one person in their inbox."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        verbose_name=_("person"),
    )
    event = models.CharField(_("event"), max_length=32, choices=Event.choices)
    params = models.JSONField(_("details"), default=dict, blank=True)
    path = models.CharField(_("link"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("at"), auto_now_add=True)
    read_at = models.DateTimeField(_("read at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        indexes = [models.Index(fields=["user", "-created_at"], name="notification_user_recent")]

    def __str__(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        template = NOTIFICATION_TEXTS.get(self.event)
        if template is None:
            return self.event
        params = {"run": "", "problem": "", **self.params}
        try:
            return str(template) % params
        except (KeyError, TypeError, ValueError):
            return self.event


class NotificationPreference(models.Model):
    """Which emails a person gets; absent, every kind is sent (the inbox always has them)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notification_preference",
        verbose_name=_("person"),
    )
    email_own_runs = models.BooleanField(
        _("email me when a run I launched finishes, fails or is cancelled"), default=True
    )
    email_problem_runs = models.BooleanField(
        _("email me when a run of a problem my institution takes part in ends"), default=True
    )
    email_reminders = models.BooleanField(
        _("email me a daily reminder of what waits for my decision"), default=True
    )
    # When the last reminder was sent: at most one per day (in the portal's time zone).
    reminded_at = models.DateTimeField(_("last reminded at"), null=True, blank=True)

    class Meta:
        verbose_name = _("notification preference")
        verbose_name_plural = _("notification preferences")

    def __str__(self) -> str:
        return str(self.user)


class Webhook(models.Model):
    """An institution's endpoint: the portal POSTs each subscribed event there, signed."""

    institution = models.ForeignKey(
        "alliance.Institution",
        on_delete=models.CASCADE,
        related_name="webhooks",
        verbose_name=_("institution"),
    )
    url = models.URLField(_("URL"), max_length=500)
    events = models.JSONField(_("events"), default=list)
    # The HMAC-SHA256 key the receiver checks signatures with; the portal needs it to sign.
    secret = models.CharField(_("signing secret"), max_length=64)
    is_active = models.BooleanField(_("active"), default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("registered by"),
    )
    created_at = models.DateTimeField(_("registered at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["institution", "pk"]
        verbose_name = _("webhook")
        verbose_name_plural = _("webhooks")

    def __str__(self) -> str:
        return f"{self.institution} · {self.url}"


class WebhookDelivery(models.Model):
    """One event sent (or being sent) to one webhook: the exact body, and how it went."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Being delivered")
        SUCCEEDED = "succeeded", _("Delivered")
        FAILED = "failed", _("Failed")

    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("webhook")
    )
    event = models.CharField(_("event"), max_length=32, choices=Event.choices)
    event_id = models.UUIDField(_("event id"))
    # The exact bytes signed and sent (UTF-8 JSON); every attempt sends the same.
    body = models.TextField(_("body"))
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    response_code = models.PositiveSmallIntegerField(_("response code"), null=True, blank=True)
    error = models.CharField(_("error"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    attempted_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    # When the next attempt is due (after a failed one): an attempt that comes earlier is a
    # duplicate of the scheduled one and does nothing.
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_pending",
                condition=models.Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook.url}"
