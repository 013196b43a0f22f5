"""Reminding approvers: a decision that has waited ``APPROVAL_REMINDER_DAYS`` days gets the
people who can take it one email a day at most, listing what waits.

What waits is the person's inbox (``projects.selectors.inbox_for``): agreements to approve,
revisions to ratify, requests and invitations to answer. The day's reminder is recorded on the
person's notification preference in the transaction that sends it, under a row lock, so two
passes on the same day (a restarted scheduler, two workers) send one email.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from alliance.models import Institution, Role
from alliance.services.notices import reminder_claim
from alliance.services.notifications import absolute_url, email_notify
from projects.selectors import inbox_for

User = get_user_model()

# The roles that take decisions an inbox lists (viewers take none).
DECIDING_ROLES = (Role.ADMIN, Role.DATA_STEWARD, Role.RESEARCHER)


def approvals_remind(now: datetime | None = None) -> int:
    """Email each approver whose decisions have waited long enough; how many were emailed."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.APPROVAL_REMINDER_DAYS)
    people = (
        User.objects.filter(
            is_active=True,
            membership__role__in=DECIDING_ROLES,
            membership__institution__status=Institution.Status.ADMITTED,
        )
        .exclude(email="")
        .exclude(notification_preference__email_reminders=False)
        .select_related("membership__institution")
        .order_by("pk")
    )
    sent = 0
    for person in people:
        overdue = [item for item in inbox_for(person) if item.since <= cutoff]
        if not overdue:
            continue
        with transaction.atomic():
            if not reminder_claim(person, now):
                continue
            email_notify(
                to=[person.email],
                template="projects/email/approval_reminder",
                context={
                    "person": person,
                    "items": [(item.text, absolute_url(item.url)) for item in overdue],
                    "days": settings.APPROVAL_REMINDER_DAYS,
                    "inbox_url": absolute_url(reverse("inbox")),
                    "settings_url": absolute_url(reverse("notification-settings")),
                },
            )
        sent += 1
    return sent
