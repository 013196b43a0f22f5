"""The privacy budget ledger: each round's spend recorded and audited, a launch refused exactly
past the agreement's ceiling, and a site that refuses a round its own ledger cannot afford.

Rounds are played in process by the real site code on the demo's files (DP-SGD at each site).
"""

import json
import logging
import math
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from alliance.models import AuditEvent
from portal.common.errors import ApplicationError
from projects.federation import privacy
from projects.models import Dataset, PrivacySpend, Problem, SiteRound, TrainingRun
from projects.services import runs
from projects.services.privacy import (
    Projection,
    budget_projections,
    dataset_spent,
    planned_event,
)
from projects.services.runs import LaunchConfig, launch_plan
from projects.site.handler import PRIVACY_LEDGER
from tests.projects.federation_setup import SITES, answer, seed_medical

logging.getLogger("absl").setLevel(logging.ERROR)

User = get_user_model()
RESEARCHER = "kaohsiung-harbour-hospital-researcher"
DP_RUN = LaunchConfig(rounds=2, local_epochs=1, dp_options={"epsilon": 2.0, "clip_norm": 1.0})


@pytest.fixture
def medical(db, tmp_path: Path) -> Problem:
    return seed_medical(tmp_path)


def launch(problem: Problem, config: LaunchConfig = DP_RUN) -> TrainingRun:
    actor = User.objects.get(username=RESEARCHER)
    return runs.run_launch(actor=actor, problem=problem, config=config)


def play(run: TrainingRun, rounds: int) -> None:
    runs.run_advance(run.pk)
    for number in range(1, rounds + 1):
        for slug in SITES:
            runs.update_receive(answer(run, slug, number))


def set_ceiling(problem: Problem, ceiling: float | None) -> None:
    problem.agreements.filter(status="effective").update(dp_max_epsilon=ceiling)


@pytest.fixture
def spent(medical) -> TrainingRun:
    """One finished DP run of two rounds: every contributor's dataset has spent twice."""
    run = launch(medical)
    play(run, 2)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reason
    return run


def test_every_round_records_each_datasets_spend_and_audits_it(spent):
    spends = list(PrivacySpend.objects.filter(run=spent).order_by("round_number", "pk"))
    assert len(spends) == 2 * len(SITES)
    dp = spent.spec["dp"]
    for spend in spends:
        assert spend.noise_multiplier == dp["noise_multiplier"]
        assert spend.delta == privacy.DELTA
        assert spend.sha256 == spend.dataset.sha256
    for dataset in Dataset.objects.filter(privacy_spends__run=spent).distinct():
        own = [s for s in spends if s.dataset_id == dataset.pk]
        assert own[0].epsilon_total == pytest.approx(own[0].epsilon)
        assert own[1].epsilon_total > own[1].epsilon
        # The ledger's figure is the accountant's, and within the run's budget.
        assert dataset_spent(dataset) == own[1].epsilon_total
        assert own[1].epsilon_total <= 2.0
    events = AuditEvent.objects.filter(action="privacy.spent")
    assert events.count() == len(spends)
    payload = events.first().payload
    assert {"dataset", "run", "round", "event", "epsilon", "epsilon_total"} <= set(payload)
    # The site kept its own ledger too, in its own folder.
    for slug in SITES:
        lines = (Path(settings.SITE_DATA_ROOT) / slug / ".site" / PRIVACY_LEDGER).read_text()
        assert len(lines.splitlines()) == 2


def worst_projection(problem: Problem, config: LaunchConfig) -> Projection:
    """The launch's projected spend for the contributor closest to its ceiling (the launch must
    be allowed as the terms stand)."""
    plan = launch_plan(problem=problem, config=config)
    assert plan.allowed, plan.reasons
    projections = budget_projections(
        [c.dataset for c in plan.decision.contributors],
        dp=plan.spec.dp,
        batch_size=config.batch_size,
        epochs=config.local_epochs,
        rounds=config.rounds,
        validation_share=config.validation_share,
        reserve=True,
    )
    return max(projections, key=lambda p: p.total)


def test_the_ledger_refuses_exactly_past_the_ceiling(spent):
    problem = spent.problem
    config = LaunchConfig(rounds=1, local_epochs=1, dp_options={"epsilon": 1.0})
    worst = worst_projection(problem, config)
    assert worst.spent > 0 and worst.total > worst.spent

    set_ceiling(problem, worst.total)  # exactly at the ceiling: allowed
    assert launch_plan(problem=problem, config=config).allowed

    set_ceiling(problem, math.nextafter(worst.total, 0))  # a hair below: refused
    plan = launch_plan(problem=problem, config=config)
    assert not plan.allowed
    [reason] = plan.reasons
    assert worst.dataset.name in reason and worst.dataset.institution.name in reason
    assert f"epsilon {worst.spent:.3f} is spent (or held by runs under way)" in reason
    assert f"the run needs {worst.needed:.3f}" in reason
    with pytest.raises(ApplicationError) as refused:
        launch(problem, config)
    assert refused.value.extra["reasons"] == [reason]

    set_ceiling(problem, worst.total)  # and the launch itself goes through at the ceiling
    launch(problem, config)


def test_a_site_refuses_a_round_its_own_ledger_cannot_afford(medical):
    set_ceiling(medical, 5.0)
    run = launch(medical, LaunchConfig(rounds=1, local_epochs=1, dp_options={"epsilon": 2.0}))
    runs.run_advance(run.pk)
    # Spends the coordinator never saw (another portal, say): the site's own ledger has them.
    slug = SITES[0]
    dataset = SiteRound.objects.get(round__run=run, institution__slug=slug).dataset
    ledger = Path(settings.SITE_DATA_ROOT) / slug / ".site" / PRIVACY_LEDGER
    ledger.parent.mkdir(parents=True, exist_ok=True)
    heavy = {"noise_multiplier": 0.8, "sampling_rate": 1.0, "steps": 200}
    ledger.write_text(
        json.dumps({"sha256": dataset.sha256, "run": 0, "launched": "x", "round": 1, **heavy})
        + "\n"
    )
    reply = answer(run, slug)
    assert reply["body"]["error"]["code"] == "privacy_budget"
    runs.update_receive(reply)
    row = SiteRound.objects.get(round__run=run, institution__slug=slug)
    assert row.status == SiteRound.Status.REJECTED
    assert "privacy budget" in row.reason
    # A refused round spent nothing at the coordinator either.
    for other in SITES[1:]:
        runs.update_receive(answer(run, other))
    assert not PrivacySpend.objects.filter(run=run, dataset=dataset).exists()
    assert PrivacySpend.objects.filter(run=run).count() == len(SITES) - 1


def _exhaust(run: TrainingRun, dataset: Dataset) -> None:
    """Spends elsewhere that leave the dataset no room for another round."""
    PrivacySpend.objects.create(
        dataset=dataset,
        institution=dataset.institution,
        sha256=dataset.sha256,
        run=run,
        round_number=99,
        noise_multiplier=0.8,
        sampling_rate=1.0,
        steps=200,
        clip_norm=1.0,
        delta=privacy.DELTA,
        epsilon=100.0,
        epsilon_total=100.0,
        accountant="dp-accounting 0.6.0, RDP",
    )


def test_each_round_leaves_out_a_dataset_that_can_no_longer_afford_it(medical):
    set_ceiling(medical, 6.0)
    config = LaunchConfig(rounds=1, local_epochs=1, min_contributors=2, dp_options={"epsilon": 2.0})
    run = launch(medical, config)
    dataset = Dataset.objects.get(problem=medical, institution__slug=SITES[0], purpose="training")
    _exhaust(run, dataset)
    round_ = runs.run_advance(run.pk)
    assert round_ is not None
    assert sorted(round_.sites.values_list("institution__slug", flat=True)) == sorted(SITES[1:])
    [left_out] = [e for e in round_.excluded if e["institution"] == SITES[0]]
    assert "past the agreement's privacy budget" in left_out["reason"]


def test_a_run_is_refused_when_too_few_datasets_can_afford_a_round(medical):
    set_ceiling(medical, 6.0)
    config = LaunchConfig(rounds=1, local_epochs=1, min_contributors=2, dp_options={"epsilon": 2.0})
    run = launch(medical, config)
    for slug in SITES[:2]:
        _exhaust(
            run,
            Dataset.objects.get(problem=medical, institution__slug=slug, purpose="training"),
        )
    assert runs.run_advance(run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert any("past the agreement's privacy budget" in r for r in run.reasons)


def test_a_launch_counts_what_runs_under_way_will_still_spend(medical):
    set_ceiling(medical, 2.5)
    config = LaunchConfig(rounds=2, local_epochs=1, dp_options={"epsilon": 2.0})
    assert launch_plan(problem=medical, config=config).allowed  # one run fits
    first = launch(medical, config)  # queued: nothing spent yet, all of it to come
    plan = launch_plan(problem=medical, config=config)
    assert not plan.allowed
    assert all("held by runs under way" in r for r in plan.reasons)
    # Once the first run is over and spent nothing (cancelled), the second fits again.
    TrainingRun.objects.filter(pk=first.pk).update(status=TrainingRun.Status.CANCELLED)
    assert launch_plan(problem=medical, config=config).allowed


def test_a_run_that_keeps_more_rows_aside_spends_more_per_round(spent):
    """The coordinator counts the rows the site trains on: those its validation share leaves."""
    config = LaunchConfig(rounds=1, local_epochs=1, dp_options={"epsilon": 1.0})
    plan = launch_plan(problem=spent.problem, config=config)
    dataset = plan.decision.contributors[0].dataset
    events = [
        planned_event(dataset, dp=plan.spec.dp, batch_size=8, epochs=1, validation_share=share)
        for share in (0.0, 0.2, 0.5)
    ]
    assert events[0].sampling_rate < events[1].sampling_rate < events[2].sampling_rate


def test_a_cancelled_round_charges_the_updates_that_had_arrived(medical):
    """What left a site spent its budget, even when the run is cancelled before the round
    closes; the sites that had not answered spent nothing."""
    run = launch(medical, LaunchConfig(rounds=1, local_epochs=1, dp_options={"epsilon": 2.0}))
    runs.run_advance(run.pk)
    runs.update_receive(answer(run, SITES[0]))
    assert not PrivacySpend.objects.filter(run=run).exists()
    runs.run_cancel(actor=User.objects.get(username=RESEARCHER), run=run)
    [spend] = PrivacySpend.objects.filter(run=run)
    assert spend.institution.slug == SITES[0] and spend.round_number == 1
    assert AuditEvent.objects.filter(action="privacy.spent", payload__run=run.number).count() == 1
