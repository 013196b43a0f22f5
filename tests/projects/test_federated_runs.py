"""Federated runs through the real stack: the broker, real Celery workers, the site files.

The demo medical problem is seeded with its CSV files under a temporary sites folder; the
workers read them exactly as a member's site worker would.
"""

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from alliance.models import AuditEvent
from alliance.services.audit import audit_verify
from portal.common import keys
from projects.demo import BREAST_CANCER_FILE, HOLDOUT_FILE, UNIVERSITY
from projects.federation.loop import LocalSite, run_in_process, train_central
from projects.federation.site import RoundTask, evaluate_on_file
from projects.models import Problem, Round, SiteRound, TrainingRun
from projects.services import runs
from tests.conftest import require_postgres, wait_for
from tests.projects.federation_setup import SITES, seed_medical

User = get_user_model()
RESEARCHER = "kaohsiung-harbour-hospital-researcher"


@pytest.fixture
def medical(tmp_path: Path) -> Problem:
    return seed_medical(tmp_path)


def launch(problem: Problem, **config: object) -> TrainingRun:
    actor = User.objects.get(username=RESEARCHER)
    return runs.run_launch(actor=actor, problem=problem, config=runs.LaunchConfig(**config))


def _purge(queues: list[str]) -> None:
    from portal.celery import app

    with app.connection_for_write() as conn:
        for name in queues:
            conn.default_channel.queue_declare(name, durable=True, auto_delete=False)
            conn.default_channel.queue_purge(name)


@contextmanager
def workers(queues: list[str]) -> Iterator[object]:
    """A real Celery worker (in-process thread) on these queues, starting from empty queues."""
    from celery.contrib.testing.worker import start_worker

    from portal.celery import app

    _purge(queues)
    with start_worker(
        app, queues=queues, pool="solo", perform_ping_check=False, shutdown_timeout=10
    ) as worker:
        yield worker


def site_queues(*slugs: str) -> list[str]:
    return [f"site.{slug}" for slug in slugs]


def finished(run: TrainingRun, timeout: float = 60) -> TrainingRun:
    def done() -> bool:
        run.refresh_from_db()
        return run.is_finished

    wait_for(done, timeout=timeout, what=f"run {run.number} to finish")
    return run


def answered(run: TrainingRun, count: int, number: int = 1) -> None:
    """Wait until ``count`` sites answered round ``number`` (the others stay silent)."""
    wait_for(
        lambda: (
            SiteRound.objects.filter(round__run=run, round__number=number)
            .exclude(status="dispatched")
            .count()
            >= count
        ),
        timeout=30,
        what=f"{count} answers",
    )


def due(run: TrainingRun) -> None:
    """The open round's deadline passes now: no waiting on the clock."""
    Round.objects.filter(run=run, status="running").update(deadline_at=timezone.now())


def base_task(run: TrainingRun) -> RoundTask:
    return runs.round_task(run, 0, "")


def local_sites(run: TrainingRun) -> list[LocalSite]:
    datasets = run.problem.datasets.filter(status="active", purpose="training").select_related(
        "institution"
    )
    return [
        LocalSite(
            d.institution.slug,
            Path(settings.SITE_DATA_ROOT) / d.institution.slug / d.site_key,
            d.sha256,
        )
        for d in datasets
    ]


def holdout_accuracy(run: TrainingRun, params: list[np.ndarray]) -> float:
    spec = run.spec
    metrics = evaluate_on_file(
        run.model_family,
        run.family_options,
        params,
        path=Path(settings.SITE_DATA_ROOT) / UNIVERSITY / HOLDOUT_FILE,
        features=spec["features"],
        label=spec["label"],
        classes=spec["classes"],
        feature_ranges=[tuple(r) for r in spec["feature_ranges"]],
    )
    return metrics["accuracy"]


# --- Through a real worker ------------------------------------------------------------------


@pytest.mark.worker
def test_demo_run_learns_as_well_as_central_training_and_is_audited(
    broker_ready, transactional_db, medical
):
    with workers(["coordinator", *site_queues(*SITES)]):
        run = finished(launch(medical, rounds=10))

    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    rounds = list(run.round_set.order_by("number"))
    assert [r.number for r in rounds] == list(range(1, 11))
    assert all(r.status == Round.Status.SUCCEEDED and r.contributors == 3 for r in rounds)
    assert SiteRound.objects.filter(round__run=run, status="contributed").count() == 30
    assert set(rounds[-1].timings) >= {
        "dispatch",
        "queue_wait",
        "site_compute",
        "collection",
        "aggregation",
        "persistence",
    }
    assert rounds[-1].metrics["accuracy"] > 0.9
    assert run.models.count() == 11  # the initial model and one per round

    # The distributed run computes exactly what the plain in-process loop computes.
    final = runs.model_params(run.models.get(round_number=10))
    expected = run_in_process(local_sites(run), base_task(run), rounds=10, strategy="fedavg")
    assert all(np.array_equal(a, b) for a, b in zip(final, expected[-1], strict=True))

    # And it learns: within two points of the same model trained on the pooled data.
    central = train_central(local_sites(run), base_task(run), epochs=run.rounds * run.local_epochs)
    federated_accuracy = holdout_accuracy(run, final)
    central_accuracy = holdout_accuracy(run, central)
    assert federated_accuracy >= central_accuracy - 0.02, (federated_accuracy, central_accuracy)
    assert federated_accuracy > 0.9

    actions = list(
        AuditEvent.objects.filter(action__startswith=("r"))
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[0] == "run.launched"
    assert actions.count("round.started") == 10
    assert actions.count("round.closed") == 10
    assert actions[-1] == "run.succeeded"
    assert audit_verify().ok

    # The same, for every choice of the run's options beside these defaults.
    every_run_option_trains_the_same_bits_as_the_in_process_loop(medical)


# Every choice of the run's options the agreement permits, beside the defaults run above.
OPTION_CHOICES = [
    {"l2": 0.0},  # the unregularised model a centralised baseline fits
    {"l2": 0.1, "validation_share": 0.0},  # no local validation at all
    {"feature_scaling": "standardise", "validation_share": 0.35},
    {"feature_scaling": "none", "learning_rate": 1e-4},  # raw values need a smaller step
]


def every_run_option_trains_the_same_bits_as_the_in_process_loop(medical: Problem) -> None:
    """One worker for every choice (two short rounds each): the distributed run through the
    broker and the site workers gives the in-process loop's final parameters, bit for bit.

    Called by the demo run's test, after it: the seeded alliance is the costly part.
    """
    with workers(["coordinator", *site_queues(*SITES)]):
        done = [finished(launch(medical, rounds=2, local_epochs=2, **c)) for c in OPTION_CHOICES]

    for config, run in zip(OPTION_CHOICES, done, strict=True):
        assert run.status == TrainingRun.Status.SUCCEEDED, (config, run.reasons)
        final = runs.model_params(run.models.get(round_number=2))
        expected = run_in_process(local_sites(run), base_task(run), rounds=2, strategy="fedavg")
        assert all(np.array_equal(a, b) for a, b in zip(final, expected[-1], strict=True)), config
        for name, value in config.items():
            if name != "learning_rate":
                assert run.options[name] == value
    unregularised, unvalidated, standardised, raw = done
    assert base_task(unregularised).family_options == {"l2": 0.0}
    # No validation rows: no local validation metrics, and the run still succeeds.
    assert all(r.metrics == {} and r.global_metrics == {} for r in unvalidated.round_set.all())
    assert all(
        s.metrics == {"validation_rows": 0.0}
        for s in SiteRound.objects.filter(round__run=unvalidated)
    )
    assert not unvalidated.models.get(round_number=2).evaluations.filter(kind="evaluate")
    assert unregularised.round_set.get(number=2).metrics["accuracy"] > 0.5
    # Standardised with the pooled summaries the sites registered, one pair per feature.
    spec = base_task(standardised).spec
    assert spec.scaling == "standardise" and len(spec.feature_stats) == len(spec.features)
    assert base_task(raw).spec.scaling == "none"


@pytest.mark.worker
def test_round_closes_at_the_deadline_with_quorum_when_a_site_worker_is_absent(
    broker_ready, transactional_db, medical
):
    present = SITES[:2]
    with workers(["coordinator", *site_queues(*present)]):
        _purge(site_queues(SITES[2]))
        run = launch(medical, rounds=1, round_deadline=600, min_contributors=2)
        answered(run, 2)
        due(run)
        runs.runs_reconcile()  # what the coordinator's reconciler does every second
        run = finished(run, 10)
    _purge(site_queues(SITES[2]))

    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    round_ = run.round_set.get()
    assert round_.contributors == 2
    statuses = dict(round_.sites.values_list("institution__slug", "status"))
    assert statuses == {
        present[0]: "contributed",
        present[1]: "contributed",
        SITES[2]: "dropped",
    }
    assert AuditEvent.objects.filter(action="round.closed", payload__at_deadline=True).exists()


@pytest.mark.worker
def test_run_fails_without_quorum_and_says_why(broker_ready, transactional_db, medical):
    with workers(["coordinator", *site_queues(SITES[0])]):
        run = launch(medical, rounds=2, round_deadline=600, min_contributors=2)
        answered(run, 1)
        due(run)
        runs.runs_reconcile()
        run = finished(run, 10)
    _purge(site_queues(*SITES[1:]))

    assert run.status == TrainingRun.Status.FAILED
    round_ = run.round_set.get()
    assert round_.status == Round.Status.FAILED
    assert "Only 1 of the 2 contributions" in round_.reason
    assert "Round 1 failed" in run.reasons[0]
    assert AuditEvent.objects.filter(action="run.failed", target_id=str(run.pk)).exists()


@pytest.mark.worker
def test_cancel_stops_a_running_run(broker_ready, transactional_db, medical):
    with workers(["coordinator"]):
        run = launch(medical, rounds=3, round_deadline=60)
        wait_for(lambda: run.round_set.exists(), what="round 1 to start")
        runs.run_cancel(actor=User.objects.get(username=RESEARCHER), run=run)
    _purge(site_queues(*SITES))
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.round_set.get().status == Round.Status.CANCELLED
    assert AuditEvent.objects.filter(action="run.cancelled").count() == 1


def _worker_env() -> dict[str, str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PORTAL_VAR_DIR": str(settings.VAR_DIR),
        "BROKER_FOLDER": str(settings.BROKER_FOLDER),
        "SITE_DATA_ROOT": str(settings.SITE_DATA_ROOT),
        "CELERY_VISIBILITY_TIMEOUT": "10",
        # The same portal as the test's own: tasks signed with its key, which sites trust.
        "PORTAL_SIGNING_KEY": keys.key_to_text(keys.portal_key()),
        "PORTAL_PUBLIC_KEY": keys.portal_public_text(),
    }


def _coordinator() -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--queues",
            "coordinator",
            "--pool",
            "solo",
            "--hostname",
            f"coordinator-{time.monotonic_ns()}@%h",
            "--loglevel",
            "WARNING",
        ],
        env=_worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.worker
@pytest.mark.postgres
def test_a_coordinator_killed_mid_run_is_replaced_and_the_run_finishes(
    broker_ready, transactional_db, medical, settings
):
    """The coordinator runs in its own process (a thread cannot be killed); the sites in ours."""
    require_postgres()
    _purge(["coordinator"])
    settings.MEDIA_ROOT = settings.VAR_DIR / "media"
    first = _coordinator()
    try:
        with workers(site_queues(*SITES)):
            run = launch(medical, rounds=12, round_deadline=20)
            wait_for(
                lambda: run.round_set.filter(status="succeeded").count() >= 3,
                timeout=60,
                what="three rounds",
            )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            run.refresh_from_db()
            assert not run.is_finished
            second = _coordinator()
            try:
                run = finished(run, timeout=90)
            finally:
                second.terminate()
                second.wait(20)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    assert run.round_set.filter(status="succeeded").count() == 12
    # Every round counted each site once, whatever was redelivered.
    for round_ in run.round_set.all():
        assert round_.sites.filter(status="contributed").count() == 3
    assert AuditEvent.objects.filter(action="round.closed").count() == 12


# --- The command line -------------------------------------------------------------------------


@pytest.mark.worker
def test_launch_run_prints_each_round_and_the_final_model_hash(
    broker_ready, transactional_db, medical
):
    out = io.StringIO()
    with workers(["coordinator", *site_queues(*SITES)]):
        call_command(
            "launch_run",
            "--problem",
            medical.slug,
            "--rounds",
            "3",
            "--seed",
            "5",
            "--wait",
            stdout=out,
        )
    run = TrainingRun.objects.get()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"Launched run 1 of {medical.slug} as {RESEARCHER}")
    assert [line.split(":")[0] for line in lines[1:4]] == [
        "Round 1/3 succeeded",
        "Round 2/3 succeeded",
        "Round 3/3 succeeded",
    ]
    assert "3 contributors, accuracy 0." in lines[3]
    assert lines[4] == f"Final model SHA-256: {run.models.get(round_number=3).sha256}"
    assert run.seed == 5


@pytest.mark.worker
def test_launch_run_exits_non_zero_when_the_run_fails(broker_ready, transactional_db, medical):
    reconciler = runs.Reconciler()  # as in a coordinator process: it closes the round at 5 s
    reconciler.start()
    try:
        with workers(["coordinator"]), pytest.raises(CommandError, match="failed"):
            call_command(
                "launch_run",
                *("--problem", medical.slug, "--rounds", "2", "--deadline", "5", "--wait"),
                stdout=io.StringIO(),
            )
    finally:
        reconciler.stop()
        reconciler.join(10)
    _purge(site_queues(*SITES))


def test_cancel_run_from_the_command_line(db, medical):
    run = launch(medical, rounds=2)
    out = io.StringIO()
    call_command("cancel_run", "--problem", medical.slug, "--run", str(run.number), stdout=out)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.cancelled_by.username == RESEARCHER
    with pytest.raises(CommandError, match="already finished"):
        call_command("cancel_run", "--problem", medical.slug, "--run", str(run.number))


def test_launch_run_refuses_an_unknown_problem(db):
    with pytest.raises(CommandError, match="no problem"):
        call_command("launch_run", "--problem", "nothing-here")


def test_staff_cancel_runs_from_the_console(db, medical, client):
    run = launch(medical, rounds=2)
    staff = User.objects.get(username="staff")
    client.force_login(staff)
    listing = client.get("/admin/projects/trainingrun/")
    assert listing.status_code == 200
    assert f"{medical} run {run.number}".encode() in listing.content or b"run 1" in listing.content
    client.post(
        "/admin/projects/trainingrun/",
        {"action": "cancel_runs", "_selected_action": [run.pk]},
    )
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert AuditEvent.objects.get(action="run.cancelled").actor == staff


@pytest.mark.worker
def test_a_site_worker_started_by_run_site_worker_trains_without_the_portal_database(
    broker_ready, transactional_db, medical, tmp_path
):
    """The command's worker serves one queue and reads one folder; its database is unreachable."""
    remote, data = SITES[0], tmp_path / "elsewhere"
    data.mkdir()
    (data / BREAST_CANCER_FILE).write_bytes(
        (Path(settings.SITE_DATA_ROOT) / remote / BREAST_CANCER_FILE).read_bytes()
    )
    _purge(site_queues(remote))
    env = {
        **_worker_env(),
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/no-database-here",
        "SITE_DATA_ROOT": str(tmp_path / "nothing"),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_site_worker",
            "--institution",
            remote,
            "--data-dir",
            str(data),
            "--key",
            str(Path(settings.SITE_DATA_ROOT) / remote / ".site" / f"{remote}.key"),
            "--loglevel",
            "WARNING",
        ],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with workers(["coordinator", *site_queues(*SITES[1:])]):
            run = finished(launch(medical, rounds=2, round_deadline=60), timeout=90)
    finally:
        worker.terminate()
        worker.wait(20)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    assert (
        SiteRound.objects.filter(
            round__run=run, institution__slug=remote, status="contributed"
        ).count()
        == 2
    )
