"""A run that ends tells its launcher and the problem's participants: inbox and email.

No worker runs here: the emails' on-commit callbacks are captured and their tasks run in-process.
"""

import json

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from alliance.models import Notification, NotificationPreference, WebhookDelivery
from alliance.services.notices import preference_update
from alliance.services.webhooks import webhook_create
from projects.models import Round, TrainingRun
from projects.services import runs
from projects.services.runs import LaunchConfig, run_cancel, run_launch
from projects.services.runs.closing import fail_run
from tests.notify_helpers import run_tasks
from tests.projects.federation_setup import SITES, answer, seed_medical
from tests.projects.scenario import Scenario, make_site
from tests.projects.test_federated_runs import _purge
from tests.projects.test_reconcile import launch as launch_medical

pytestmark = pytest.mark.django_db


def launch(scenario: Scenario) -> TrainingRun:
    return run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=LaunchConfig(rounds=3)
    )


@pytest.fixture
def medical(db, broker_ready, tmp_path):
    """The demo problem; what its run sends goes to the real broker, purged after."""
    yield seed_medical(tmp_path)
    _purge([f"site.{slug}" for slug in SITES])


@pytest.fixture
def outsider():
    return make_site("outside-bank", "Outside Bank")


def emailed(address: str) -> list:
    return [m for m in mail.outbox if address in m.to]


def test_a_cancelled_run_tells_the_launcher_and_every_participant(
    ready, outsider, django_capture_on_commit_callbacks
):
    run = launch(ready)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks() as callbacks:
        run_cancel(actor=ready.a.admin, run=run)
    run_tasks(callbacks)
    people = [
        getattr(site, role)
        for site in (ready.a, ready.b, ready.c)
        for role in ("admin", "researcher", "steward", "viewer")
    ]
    for person in people:
        note = Notification.objects.get(user=person)
        assert note.event == "run.cancelled"
        assert note.text == f"Run {run.number} of {ready.problem.title} was cancelled."
        assert note.path == run.get_absolute_url()
        (message,) = emailed(person.email)
        assert message.subject == f"Run {run.number} of {ready.problem.title} was cancelled"
        assert run.get_absolute_url() in message.body
        assert "Cancelled by" in message.body
    assert not Notification.objects.filter(user=outsider.admin).exists()
    assert not emailed(outsider.admin.email)


def test_a_failed_run_says_why(ready, django_capture_on_commit_callbacks):
    run = launch(ready)
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        fail_run(run, ["Round 1 failed: only 1 of the 2 contributions arrived."])
    run_tasks(callbacks)
    assert Notification.objects.get(user=ready.a.researcher).event == "run.failed"
    (message,) = emailed(ready.a.researcher.email)
    assert message.subject.endswith("failed")
    assert "only 1 of the 2 contributions arrived" in message.body


def test_a_rolled_back_ending_tells_nobody(ready, django_capture_on_commit_callbacks):
    run = launch(ready)
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        fail_run(run, ["gone"])
        raise RuntimeError("the ending is rolled back")
    assert callbacks == []
    assert not Notification.objects.exists()


def test_each_person_chooses_the_emails_the_inbox_still_tells(
    ready, django_capture_on_commit_callbacks
):
    run = launch(ready)
    preference_update(actor=ready.a.researcher, email_own_runs=False)
    preference_update(actor=ready.b.steward, email_problem_runs=False)
    # The launcher's choice is the one about their own runs, not the other one.
    preference_update(actor=ready.c.admin, email_own_runs=False)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks() as callbacks:
        run_cancel(actor=ready.a.researcher, run=run)
    run_tasks(callbacks)
    assert not emailed(ready.a.researcher.email)
    assert not emailed(ready.b.steward.email)
    assert len(emailed(ready.c.admin.email)) == 1
    assert len(emailed(ready.b.admin.email)) == 1
    assert Notification.objects.filter(user=ready.a.researcher).count() == 1
    assert Notification.objects.filter(user=ready.b.steward).count() == 1


def test_preferences_default_to_every_email(ready):
    assert not NotificationPreference.objects.exists()
    saved = preference_update(actor=ready.a.viewer, email_reminders=False)
    assert (saved.email_own_runs, saved.email_problem_runs, saved.email_reminders) == (
        True,
        True,
        False,
    )


def test_a_run_that_succeeds_tells_its_launcher(medical, django_capture_on_commit_callbacks):
    run = launch_medical(medical, rounds=1, min_contributors=2)
    for slug in SITES[:2]:
        runs.update_receive(answer(run, slug))
    Round.objects.filter(run=run).update(deadline_at=timezone.now())
    mail.outbox.clear()
    with django_capture_on_commit_callbacks() as callbacks:
        runs.runs_reconcile()
    run_tasks(callbacks)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED
    note = Notification.objects.get(user=run.launched_by)
    assert (note.event, note.path) == ("run.succeeded", run.get_absolute_url())
    (message,) = emailed(run.launched_by.email)
    assert message.subject == f"Run {run.number} of {medical.title} finished"


def test_the_participants_webhooks_get_the_event(
    ready, outsider, django_capture_on_commit_callbacks
):
    run = launch(ready)
    theirs = webhook_create(
        actor=ready.c.admin,
        institution=ready.c.institution,
        url="https://ops.data-university.example.org/portal",
        events=["run.cancelled"],
    )
    webhook_create(
        actor=outsider.admin,
        institution=outsider.institution,
        url="https://ops.outside-bank.example.org/portal",
        events=["run.cancelled"],
    )
    with django_capture_on_commit_callbacks():
        run_cancel(actor=ready.a.admin, run=run)
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.webhook == theirs
    event = json.loads(delivery.body)
    assert event["event"] == "run.cancelled"
    assert event["data"]["problem"]["slug"] == ready.problem.slug
    assert event["data"]["run"] == run.number and event["data"]["status"] == "cancelled"
    assert event["data"]["url"].endswith(run.get_absolute_url())


def test_telling_everyone_costs_the_same_queries_however_many_they_are(ready):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from alliance.models import Role
    from projects.services.runs.notices import run_finished_notify
    from tests.factories import member

    run = launch(ready)
    run.status = TrainingRun.Status.CANCELLED

    def cost() -> int:
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            run_finished_notify(run)
        return len(queries)

    few = cost()
    for _n in range(6):
        member(Role.RESEARCHER, ready.b.institution)
    assert cost() == few
