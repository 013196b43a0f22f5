"""The reconciler: the database decides what must be sent and when a round ends.

Driven directly, as the coordinator's reconciler thread calls it, with deadlines and resend
times moved in the database rather than waited for.
"""

import datetime
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from alliance.models import AuditEvent
from projects.models import Problem, Round, SiteRound, TrainingRun
from projects.services import runs
from projects.services.runs import store
from projects.site.handler import handle_task
from projects.site.identity import LOG_NAME, PRIVATE_DIR
from tests.projects.federation_setup import SITES, answer, message_for, seed_medical
from tests.projects.test_federated_runs import _purge

User = get_user_model()
RESEARCHER = "kaohsiung-harbour-hospital-researcher"


@pytest.fixture
def medical(db, broker_ready, tmp_path: Path) -> Problem:
    """The demo problem; what the reconciler resends goes to the real broker, purged after."""
    yield seed_medical(tmp_path)
    _purge([f"site.{slug}" for slug in SITES])


def launch(problem: Problem, **config: object) -> TrainingRun:
    actor = User.objects.get(username=RESEARCHER)
    run = runs.run_launch(actor=actor, problem=problem, config=runs.LaunchConfig(**config))
    runs.run_advance(run.pk)
    return run


def statuses(run: TrainingRun, number: int = 1) -> dict[str, str]:
    return dict(
        SiteRound.objects.filter(round__run=run, round__number=number).values_list(
            "institution__slug", "status"
        )
    )


def past(**delta: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(**delta)


def test_nothing_to_do_does_nothing(medical):
    run = launch(medical, rounds=2)
    assert runs.runs_reconcile() == {
        "closed": 0,
        "resent": 0,
        "advanced": 0,
        "evaluations_dropped": 0,
    }
    assert run.round_set.get().status == Round.Status.RUNNING


def test_a_round_past_its_deadline_closes_with_quorum_and_drops_the_silent(medical):
    run = launch(medical, rounds=1, min_contributors=2)
    for slug in SITES[:2]:
        runs.update_receive(answer(run, slug))
    assert runs.runs_reconcile()["closed"] == 0  # not due yet
    Round.objects.filter(run=run).update(deadline_at=timezone.now())
    assert runs.runs_reconcile()["closed"] == 1
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert statuses(run) == {SITES[0]: "contributed", SITES[1]: "contributed", SITES[2]: "dropped"}
    assert AuditEvent.objects.get(action="round.closed").payload["at_deadline"] is True


def test_a_round_past_its_deadline_without_quorum_fails_the_run(medical):
    run = launch(medical, rounds=3, min_contributors=2)
    runs.update_receive(answer(run, SITES[0]))
    Round.objects.filter(run=run).update(deadline_at=timezone.now())
    runs.runs_reconcile()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "Only 1 of the 2 contributions" in run.round_set.get().reason


def test_a_silent_site_is_sent_its_task_again_later_and_later(medical, settings):
    settings.FEDERATION_RESEND_SECONDS = 10
    run = launch(medical, rounds=1)
    runs.update_receive(answer(run, SITES[0]))
    assert runs.runs_reconcile()["resent"] == 0  # sent at the start, not 10 s ago yet
    Round.objects.filter(run=run).update(started_at=past(seconds=11))
    assert runs.runs_reconcile()["resent"] == 2  # the two that have not answered
    rows = SiteRound.objects.filter(round__run=run, status="dispatched")
    assert {r.resends for r in rows} == {1}
    assert runs.runs_reconcile()["resent"] == 0
    rows.update(resent_at=past(seconds=11))
    assert runs.runs_reconcile()["resent"] == 0  # the second wait is twice as long
    rows.update(resent_at=past(seconds=21))
    assert runs.runs_reconcile()["resent"] == 2
    assert {r.resends for r in rows.all()} == {2}


def test_the_wait_between_resends_stops_growing_at_eight_times_the_first(medical, settings):
    settings.FEDERATION_RESEND_SECONDS = 10
    run = launch(medical, rounds=1)
    rows = SiteRound.objects.filter(round__run=run)
    rows.update(resends=6, resent_at=past(seconds=79))
    assert runs.runs_reconcile()["resent"] == 0
    rows.update(resent_at=past(seconds=81))  # 80 s, not 10 * 2**6 = 640 s
    assert runs.runs_reconcile()["resent"] == 3


def test_one_broken_run_does_not_stop_the_others(medical, caplog):
    broken, healthy = launch(medical, rounds=2), launch(medical, rounds=2)
    for run in (broken, healthy):
        for slug in SITES:
            runs.update_receive(answer(run, slug))
    # Both runs' next steps were lost; the broken one cannot find the model it starts from.
    Round.objects.filter(run__in=[broken, healthy], number=2).delete()
    Round.objects.filter(run__in=[broken, healthy], number=1).update(closed_at=past(seconds=5))
    broken.models.filter(round_number=1).delete()
    store._MODEL_SHA.clear()
    assert runs.runs_reconcile()["advanced"] == 1
    assert healthy.round_set.get(number=2).status == Round.Status.RUNNING
    assert not broken.round_set.filter(number=2).exists()
    assert f"Reconciling run {broken.pk} failed" in caplog.text


def test_a_coordinator_that_starts_sends_every_unanswered_task_again(medical):
    launch(medical, rounds=1)
    assert runs.runs_reconcile(resend_all=True)["resent"] == 3


def test_a_site_repeats_its_answer_to_a_task_sent_again(medical):
    run = launch(medical, rounds=2)
    wire = message_for(run, SITES[0]).to_wire()
    first = handle_task(wire, queue=f"site.{SITES[0]}")
    again = handle_task(wire, queue=f"site.{SITES[0]}")
    assert again.to_wire() == first.to_wire()
    log = Path(settings.SITE_DATA_ROOT) / SITES[0] / PRIVATE_DIR / LOG_NAME
    outcomes = [json.loads(line)["outcome"] for line in log.read_text().splitlines()]
    assert outcomes[-2:] == ["accepted", "answered_again"]
    runs.update_receive(first.to_wire())
    runs.update_receive(again.to_wire())
    assert statuses(run)[SITES[0]] == "contributed"


def test_a_run_whose_next_step_was_lost_is_advanced(medical):
    run = launch(medical, rounds=2)
    for slug in SITES:
        runs.update_receive(answer(run, slug))
    # As if the coordinator died between closing round 1 and opening round 2.
    Round.objects.filter(run=run, number=2).delete()
    assert runs.runs_reconcile()["advanced"] == 0  # just closed: give it a moment
    Round.objects.filter(run=run, number=1).update(closed_at=past(seconds=5))
    assert runs.runs_reconcile()["advanced"] == 1
    assert run.round_set.get(number=2).status == Round.Status.RUNNING


def test_a_launch_whose_first_step_was_lost_is_started(medical):
    actor = User.objects.get(username=RESEARCHER)
    run = runs.run_launch(actor=actor, problem=medical, config=runs.LaunchConfig(rounds=1))
    TrainingRun.objects.filter(pk=run.pk).update(created_at=past(seconds=5))
    assert runs.runs_reconcile()["advanced"] == 1
    assert run.round_set.get().status == Round.Status.RUNNING


def test_finished_and_cancelled_runs_are_left_alone(medical):
    run = launch(medical, rounds=2)
    runs.run_cancel(actor=User.objects.get(username=RESEARCHER), run=run)
    TrainingRun.objects.filter(pk=run.pk).update(created_at=past(minutes=5))
    assert runs.runs_reconcile() == {
        "closed": 0,
        "resent": 0,
        "advanced": 0,
        "evaluations_dropped": 0,
    }


def test_a_coordinator_signs_the_audit_log_each_pass_not_after_each_commit(
    medical, django_capture_on_commit_callbacks
):
    from alliance.services import audit
    from alliance.services.audit_log import audit_checkpoint_after_append, audit_checkpoint_latest

    audit.sign_on_commit(False)
    try:
        with django_capture_on_commit_callbacks() as callbacks:
            launch(medical, rounds=1)  # opens a round: audited, then dispatched after commit
    finally:
        audit.sign_on_commit(True)
    assert callbacks and audit_checkpoint_after_append not in callbacks
    newest = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    runs.sign_pending_checkpoint()
    assert audit_checkpoint_latest().size == newest
    with django_capture_on_commit_callbacks() as callbacks:
        launch(medical, rounds=1)
    assert audit_checkpoint_after_append in callbacks  # elsewhere, after each commit


def _worker(*queues: str) -> object:
    """What Celery's worker_ready signal sends: the worker's consumer, here only the queues."""
    from types import SimpleNamespace

    consume_from = {name: object() for name in queues}
    return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(
        consume_from=consume_from))))  # fmt: skip


def test_a_coordinator_worker_signs_from_its_reconciler_and_a_site_worker_after_commits(
    transactional_db,
):
    """The wiring of the test above: a worker on the coordinator queue turns signing after each
    commit off and starts the reconciler, whose passes sign; a site worker changes nothing."""
    from alliance.services import audit
    from alliance.services.audit_log import audit_checkpoint_latest
    from projects import tasks

    tasks.reconcile_on_start(sender=_worker("site.taipei-north-hospital"))
    assert audit._SIGN_ON_COMMIT and tasks._reconciler is None

    try:
        tasks.reconcile_on_start(sender=_worker("coordinator"))
        assert not audit._SIGN_ON_COMMIT  # no signature after each commit in a coordinator...
        assert tasks._reconciler is not None and tasks._reconciler.is_alive()
        try:
            with transaction.atomic():
                audit.audit_record(actor=None, action="alliance.test_event", payload={"n": 1})
            newest = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
            latest = None
            deadline = timezone.now() + datetime.timedelta(seconds=30)
            while timezone.now() < deadline:  # ...but one from a reconciler's pass
                latest = audit_checkpoint_latest()
                if latest is not None and latest.size == newest:
                    break
                tasks._reconciler.stopped.wait(0.05)
            assert latest is not None and latest.size == newest
        finally:
            reconciler = tasks._reconciler
            tasks.stop_reconciling()
            if reconciler is not None:
                reconciler.join(10)
    finally:
        audit.sign_on_commit(True)
