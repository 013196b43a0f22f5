"""Celery tasks of the alliance app: thin wrappers that run side effects off the request."""

import smtplib

from celery import shared_task
from django.core.mail import send_mail


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=8,
)
def email_send_task(self, subject: str, body: str, recipients: list[str]) -> None:
    """Send one rendered email through Django's email framework (retried while SMTP is down)."""
    send_mail(subject, body, None, recipients)


@shared_task(acks_late=True)
def webhook_deliver_task(delivery_id: int) -> None:
    """Attempt one webhook delivery; a failed attempt schedules the next, later each time."""
    from alliance.services.webhooks import webhook_attempt

    delay = webhook_attempt(delivery_id)
    if delay is not None:
        webhook_deliver_task.apply_async((delivery_id,), countdown=delay)


@shared_task(ignore_result=True)
def webhooks_resume_task() -> None:
    """Celery beat's look for deliveries whose task was lost (the database says what is due)."""
    from alliance.services.webhooks import webhooks_resume

    webhooks_resume()
