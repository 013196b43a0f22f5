"""Securely aggregated runs: launched where the agreement requires it, trained through the four
stages with the real site code, and never an individual update in the coordinator's hands."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from alliance.models import AuditEvent
from portal.common.errors import ApplicationError
from projects.federation import encoding
from projects.federation.loop import run_in_process
from projects.federation.site import train_on_site
from projects.models import Problem, Round, SiteRound, TrainingRun
from projects.services import runs
from projects.services.runs import secure
from projects.services.runs.store import round_start_bytes
from projects.site.handler import handle_task
from tests.projects.federation_setup import SITES, seed_medical, signed_reply
from tests.projects.test_federated_runs import (
    base_task,
    finished,
    launch,
    local_sites,
    site_queues,
    workers,
)

User = get_user_model()
RESEARCHER = "kaohsiung-harbour-hospital-researcher"
pytestmark = pytest.mark.django_db


@pytest.fixture
def medical(tmp_path: Path) -> Problem:
    return seed_medical(tmp_path)


def require_secure(problem: Problem) -> None:
    problem.agreements.filter(status="effective").update(secure_aggregation=True)


def play(run: TrainingRun, *, silent: dict[int, set[str]] | None = None) -> TrainingRun:
    """Every stage of every round through the real site code, in process. ``silent``: per
    round, the sites that stop answering (from the masked stage on); their stage then closes
    at its deadline."""
    silent = silent or {}
    runs.run_advance(run.pk)
    for _ in range(200):
        round_ = Round.objects.filter(run=run, status="running").first()
        if round_ is None:
            break
        rows = secure.round_rows(round_)
        stage = round_.secagg["stage"]
        quiet = silent.get(round_.number, set()) if stage in ("masked", "unmask") else set()
        todo = [s for s in secure.waiting(round_, rows) if s.institution.slug not in quiet]
        if not todo:
            Round.objects.filter(pk=round_.pk).update(deadline_at=timezone.now())
            runs.round_deadline(run.pk, round_.number)
            continue
        for envelope in secure.stage_envelopes(run, round_, todo, rows):
            reply = handle_task(envelope.to_wire(), queue=f"site.{envelope.body.site}")
            assert reply is not None
            runs.update_receive(reply.to_wire())
    run.refresh_from_db()
    return run


def assert_no_individual_update(
    run: TrainingRun, secrets: dict[str, tuple[str, int]], *more: list[dict]
) -> None:
    """No site row keeps an update, and nothing anywhere in the run's rows, its audit trail (or
    ``more`` rows) names a site's update (``secrets``: its SHA-256 and row count)."""
    rows = SiteRound.objects.filter(round__run=run)
    for s in rows:
        assert s.update == "" and s.sample_count is None and s.metrics == {}
        assert set(s.secagg) == {"advertise", "masked"}
    dumped = json.dumps(
        [
            list(rows.values()),
            list(Round.objects.filter(run=run).values()),
            *more,
            list(AuditEvent.objects.values("payload")),
        ],
        default=str,
    )
    for sha, count in secrets.values():
        assert sha not in dumped
        assert f'"sample_count": {count}' not in dumped


def plain_updates(run: TrainingRun, number: int) -> dict[str, tuple[str, int]]:
    """What each site's own update and row count were in round ``number`` (the real site code
    run again on its file): the values that must never reach the coordinator."""
    task = base_task(run)
    start = encoding.decode_params(round_start_bytes(run, number))
    found = {}
    for local in local_sites(run):
        result = train_on_site(
            dataclasses.replace(task, site=local.site, round_number=number),
            [p.copy() for p in start],
            data_path=local.path,
            expected_sha256=local.sha256,
        )
        found[local.site] = (
            encoding.params_sha256(encoding.encode_params(result.params)),
            result.sample_count,
        )
    return found


def test_a_launch_is_secure_where_the_agreement_requires_it(medical) -> None:
    require_secure(medical)
    run = launch(medical, rounds=1)
    assert run.secure_aggregation
    event = AuditEvent.objects.filter(action="run.launched").latest("pk")
    assert event.payload["secure_aggregation"] is True


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean"])
def test_strategies_needing_individual_updates_are_refused_under_secure_aggregation(
    medical, strategy
) -> None:
    require_secure(medical)
    with pytest.raises(ApplicationError) as caught:
        launch(medical, rounds=1, strategy=strategy)
    reasons = " ".join(caught.value.extra["reasons"])
    assert "needs each site's update" in reasons
    # without the requirement the same strategy launches
    medical.agreements.filter(status="effective").update(secure_aggregation=False)
    assert not launch(medical, rounds=1, strategy=strategy).secure_aggregation


def test_differential_privacy_combines_with_secure_aggregation(medical) -> None:
    """The ledger and the site's own ledger follow it: tests/projects/test_secure_privacy.py."""
    require_secure(medical)
    run = launch(medical, rounds=1, dp_options={"epsilon": 3.0})
    assert run.secure_aggregation and run.spec["dp"]["epsilon"] == 3.0


def test_a_secure_run_trains_as_the_plain_run_does_within_quantisation(medical) -> None:
    require_secure(medical)
    run = play(launch(medical, rounds=2))
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    final = runs.model_params(run.models.get(round_number=2))
    plain = run_in_process(local_sites(run), base_task(run), rounds=2, strategy="fedavg")
    for a, b in zip(final, plain[-1], strict=True):
        assert np.max(np.abs(a - b)) < 1e-9
    round_ = run.round_set.get(number=2)
    seen = round_.secagg["seen"]
    assert seen["survivors"] == SITES and seen["dropped"] == [] and seen["threshold"] == 2
    assert set(seen["masked_sha256"]) == set(SITES)
    assert seen["total_rows"] == sum(n for _, n in plain_updates(run, 2).values())


def test_no_individual_update_reaches_the_database_on_a_secure_run(medical) -> None:
    require_secure(medical)
    run = play(launch(medical, rounds=1))
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    secrets = plain_updates(run, 1)
    assert_no_individual_update(run, secrets)
    from django.conf import settings

    updates = Path(settings.VAR_DIR) / "blobs" / "updates"
    assert not updates.exists() or not any(updates.iterdir())


def test_a_plain_update_is_never_accepted_in_a_secure_run(medical) -> None:
    require_secure(medical)
    run = launch(medical, rounds=1)
    runs.run_advance(run.pk)
    site = SiteRound.objects.select_related("institution", "dataset", "round").get(
        round__run=run, institution__slug=SITES[0]
    )
    # a reply to the plain task, signed by the site itself
    wire = signed_reply(run, SITES[0])
    runs.update_receive(wire)
    site.refresh_from_db()
    assert site.status == SiteRound.Status.DISPATCHED and site.update == ""
    assert Round.objects.get(pk=site.round.pk).forged == {"not_secure": 1}


def test_a_site_dropping_after_its_shares_is_recovered(medical) -> None:
    require_secure(medical)
    run = play(launch(medical, rounds=1), silent={1: {SITES[2]}})
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    seen = run.round_set.get(number=1).secagg["seen"]
    assert seen["survivors"] == SITES[:2] and seen["dropped"] == [SITES[2]]
    dropped = SiteRound.objects.get(round__run=run, institution__slug=SITES[2])
    assert dropped.status == SiteRound.Status.DROPPED
    final = runs.model_params(run.models.get(round_number=1))
    sites = [s for s in local_sites(run) if s.site != SITES[2]]
    plain = run_in_process(sites, base_task(run), rounds=1, strategy="fedavg")
    for a, b in zip(final, plain[-1], strict=True):
        assert np.max(np.abs(a - b)) < 1e-9


def test_a_round_with_fewer_than_t_survivors_fails_with_its_reason(medical) -> None:
    require_secure(medical)
    run = play(launch(medical, rounds=1, min_contributors=2), silent={1: set(SITES[1:])})
    assert run.status == TrainingRun.Status.FAILED
    round_ = run.round_set.get(number=1)
    assert "at least 2" in round_.reason and "masked" in round_.reason
    assert round_.secagg["stage"] == "failed"
    assert all(s.update == "" for s in round_.sites.all())


@pytest.mark.worker
def test_a_secure_run_goes_through_the_real_broker_and_workers(
    broker_ready, transactional_db, medical
) -> None:
    require_secure(medical)
    with workers(["coordinator", *site_queues(*SITES)]):
        run = finished(launch(medical, rounds=2), timeout=120)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    assert run.round_set.get(number=2).secagg["seen"]["survivors"] == SITES
    assert not SiteRound.objects.filter(round__run=run).exclude(update="").exists()


def test_the_run_page_shows_the_run_was_secure_and_what_the_coordinator_saw(medical, client):
    from projects.run_views import run_url

    require_secure(medical)
    run = play(launch(medical, rounds=1))
    seen = run.round_set.get(number=1).secagg["seen"]
    client.force_login(User.objects.get(username=RESEARCHER))
    page = client.get(run_url(run)).content.decode()
    assert "Secure aggregation: what the coordinator saw" in page
    assert seen["masked_sum_sha256"][:12] in page
    for sha in seen["masked_sha256"].values():
        assert sha[:12] in page
    plain = launch(medical, rounds=1, secure_aggregation=False)
    assert plain.secure_aggregation  # the agreement requires it whatever the launch asks
    # and the API says the same of each round
    answer = client.get(f"/api/v1/problems/{medical.slug}/runs/{run.number}/rounds/").json()
    rounds = answer["results"] if isinstance(answer, dict) else answer
    assert rounds[0]["secure_aggregation"]["masked_sum_sha256"] == seen["masked_sum_sha256"]
    detail = client.get(f"/api/v1/problems/{medical.slug}/runs/{run.number}/").json()
    assert detail["secure_aggregation"] is True


def test_a_run_may_ask_for_secure_aggregation_through_the_api(medical, client):
    client.force_login(User.objects.get(username=RESEARCHER))
    response = client.post(
        f"/api/v1/problems/{medical.slug}/runs/",
        {"model_family": "logistic_regression", "rounds": 1, "secure_aggregation": True},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert TrainingRun.objects.get(
        problem=medical, number=response.json()["number"]
    ).secure_aggregation


def _advance_to_share_keys(run: TrainingRun) -> Round:
    runs.run_advance(run.pk)
    round_ = Round.objects.get(run=run, number=1)
    rows = secure.round_rows(round_)
    for envelope in secure.stage_envelopes(run, round_, rows, rows):
        runs.update_receive(handle_task(envelope.to_wire()).to_wire())
    round_.refresh_from_db()
    assert round_.secagg["stage"] == "share_keys"
    return round_


def test_a_site_refuses_a_tampered_advertisement_and_is_left_out(medical) -> None:
    from portal.common.keys import portal_key
    from projects.federation.protocol import Envelope

    require_secure(medical)
    run = launch(medical, rounds=1)
    round_ = _advance_to_share_keys(run)
    rows = secure.round_rows(round_)
    victim, reader = SITES[2], SITES[0]
    envelope = next(
        e for e in secure.stage_envelopes(run, round_, rows, rows) if e.body.site == reader
    )
    part = json.loads(json.dumps(dict(envelope.body.secagg)))
    other = part["ads"][SITES[1]]["s_pk"]
    part["ads"][victim]["s_pk"] = other  # a key the victim never signed
    tampered = dataclasses.replace(envelope.body, secagg=part)
    reply = handle_task(Envelope.seal(tampered, portal_key()).to_wire())
    assert reply.body.error is not None
    assert reply.body.error.code == "secagg_bad_advertisement"
    assert reply.body.error.detail == {"site": victim, "problem": "signature"}
    runs.update_receive(reply.to_wire())
    site = SiteRound.objects.get(round=round_, institution__slug=reader)
    assert site.status == SiteRound.Status.REJECTED
    assert site.reason_code == "secagg_bad_advertisement"


def test_a_site_answers_a_repeated_stage_alike_and_wipes_its_secrets_after_unmasking(
    medical,
) -> None:
    require_secure(medical)
    run = launch(medical, rounds=1)
    round_ = _advance_to_share_keys(run)
    rows = secure.round_rows(round_)
    first = secure.stage_envelopes(run, round_, rows[:1], rows)[0]
    again = secure.stage_envelopes(run, round_, rows[:1], rows)[0]
    one = handle_task(first.to_wire()).body.secagg
    two = handle_task(again.to_wire()).body.secagg
    assert one == two and set(one["shares"]) == set(SITES) - {rows[0].institution.slug}
    run = play(run)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    from django.conf import settings

    for slug in SITES:
        state = (
            Path(settings.SITE_DATA_ROOT) / slug / ".site" / "secagg" / f"run{run.pk}-round1.json"
        )
        kept = json.loads(state.read_text())
        assert "s_sk" not in kept["secrets"] and "b" not in kept["secrets"]
        assert set(kept["answers"]) == {"advertise", "share_keys", "masked", "unmask"}


def _queued(slug: str) -> list[dict]:
    """The task bodies waiting on a site's queue in the real broker (taken off it)."""
    from portal.celery import app

    found = []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(f"site.{slug}", no_ack=True)) is not None:
            args = message.decode()[0]
            found.append(args[0]["body"])
    return found


def test_the_reconciler_resends_the_current_stage_never_a_plain_task(medical, broker_ready):
    from tests.projects.test_federated_runs import _purge

    require_secure(medical)
    run = launch(medical, rounds=1)
    round_ = _advance_to_share_keys(run)
    rows = secure.round_rows(round_)
    quiet = SITES[2]
    for envelope in secure.stage_envelopes(run, round_, rows, rows):
        if envelope.body.site != quiet:
            runs.update_receive(handle_task(envelope.to_wire()).to_wire())
    _purge(site_queues(*SITES))
    try:
        assert runs.runs_reconcile(resend_all=True)["resent"] == 1
        bodies = _queued(quiet)
        assert [b["secagg"]["stage"] for b in bodies] == ["share_keys"]
        assert all(_queued(slug) == [] for slug in SITES[:2])
    finally:
        _purge(site_queues(*SITES))


def test_a_secure_run_plays_through_in_this_process_as_the_demo_seeds_it(medical) -> None:
    from django.conf import settings

    from projects.services.runs.local import run_in_this_process

    require_secure(medical)
    run = run_in_this_process(
        actor=User.objects.get(username=RESEARCHER),
        problem=medical,
        config=runs.LaunchConfig(rounds=2),
        sites_dir=Path(settings.SITE_DATA_ROOT),
    )
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    assert run.secure_aggregation
    assert run.round_set.get(number=2).secagg["seen"]["survivors"] == SITES


@pytest.mark.django_db(transaction=True)
def test_a_stage_moving_on_wakes_the_run_page(tmp_path: Path) -> None:
    from projects.services.runs import RunWatcher

    medical = seed_medical(tmp_path)
    require_secure(medical)
    run = launch(medical, rounds=1)
    runs.run_advance(run.pk)
    round_ = Round.objects.get(run=run, number=1)
    rows = secure.round_rows(round_)
    replies = [
        handle_task(e.to_wire()).to_wire() for e in secure.stage_envelopes(run, round_, rows, rows)
    ]
    with RunWatcher() as watcher:
        watcher.watch(run.pk)
        for reply in replies[:-1]:
            runs.update_receive(reply)
        assert not watcher.wait(run.pk, timeout=0.05)  # answers alone change nothing shown
        runs.update_receive(replies[-1])
        assert watcher.wait(run.pk, timeout=30)
    round_.refresh_from_db()
    assert round_.secagg["stage"] == "share_keys"
