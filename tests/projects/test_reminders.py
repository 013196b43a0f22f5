"""Approvers whose decisions have waited are reminded by email, at most once a day."""

import datetime

import pytest
from django.core import mail
from django.utils import timezone

from alliance.services.notices import preference_update
from portal.celery import app
from projects.models import AgreementVersion
from projects.services.reminders import approvals_remind
from projects.tasks import approval_reminders_task
from tests.notify_helpers import run_tasks

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


@pytest.fixture
def waiting(drafted, settings):
    """Version 1 of the agreement, approved by A's steward, waits four days for B's."""
    settings.APPROVAL_REMINDER_DAYS = 3
    AgreementVersion.objects.filter(problem=drafted.problem).update(
        created_at=timezone.now() - 4 * DAY
    )
    mail.outbox.clear()
    return drafted


def remind(capture, now=None) -> int:
    with capture() as callbacks:
        sent = approvals_remind(now)
    run_tasks(callbacks)
    return sent


def test_an_approver_waited_on_is_reminded_with_the_link(
    waiting, django_capture_on_commit_callbacks
):
    assert remind(django_capture_on_commit_callbacks) >= 1
    (message,) = [m for m in mail.outbox if waiting.b.steward.email in m.to]
    assert "decision" in message.subject
    assert f"Approve agreement version 1 of {waiting.problem.title}" in message.body
    assert "/my/notifications/" in message.body
    # A's steward approved already: nothing waits for them.
    assert not [m for m in mail.outbox if waiting.a.steward.email in m.to]


def test_at_most_one_reminder_a_day(waiting, django_capture_on_commit_callbacks):
    now = timezone.now()
    first = remind(django_capture_on_commit_callbacks, now)
    assert first >= 1
    later_today = now + datetime.timedelta(seconds=1)
    assert remind(django_capture_on_commit_callbacks, later_today) == 0
    assert len([m for m in mail.outbox if waiting.b.steward.email in m.to]) == 1
    tomorrow = now + DAY
    assert remind(django_capture_on_commit_callbacks, tomorrow) == first
    assert len([m for m in mail.outbox if waiting.b.steward.email in m.to]) == 2


def test_nothing_waiting_long_enough_sends_nothing(
    drafted, settings, django_capture_on_commit_callbacks
):
    settings.APPROVAL_REMINDER_DAYS = 3
    mail.outbox.clear()
    assert remind(django_capture_on_commit_callbacks) == 0
    assert mail.outbox == []


def test_who_turned_reminders_off_gets_none(waiting, django_capture_on_commit_callbacks):
    preference_update(actor=waiting.b.steward, email_reminders=False)
    remind(django_capture_on_commit_callbacks)
    assert not [m for m in mail.outbox if waiting.b.steward.email in m.to]


def test_celery_beat_looks_every_hour_with_a_task_that_exists(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["approval-reminders"]
    assert entry["task"] == approval_reminders_task.name
    assert entry["task"] in app.tasks
    assert entry["schedule"] == 3600.0
