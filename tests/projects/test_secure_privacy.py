"""Differential privacy and secure aggregation in one run: each site trains with DP-SGD and then
masks its change; the ledger charges every dataset whose masked input reached the coordinator,
and never needs (or holds) an individual update.

Rounds are played through the real site code on the demo's files: in process stage by stage,
and once through the real broker and a real worker.
"""

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant

from alliance.models import AuditEvent
from portal.common.errors import ApplicationError
from projects.federation import privacy
from projects.federation.loop import run_in_process
from projects.models import Dataset, PrivacySpend, Problem, Round, SiteRound, TrainingRun
from projects.services import runs
from projects.services.runs import LaunchConfig, launch_plan, secure
from projects.site.handler import PRIVACY_LEDGER, handle_task
from tests.projects.federation_setup import SITES, seed_medical
from tests.projects.test_federated_runs import (
    base_task,
    finished,
    local_sites,
    site_queues,
    workers,
)
from tests.projects.test_privacy_ledger import worst_projection
from tests.projects.test_secure_runs import assert_no_individual_update, plain_updates

logging.getLogger("absl").setLevel(logging.ERROR)

User = get_user_model()
RESEARCHER = "kaohsiung-harbour-hospital-researcher"
SECURE_DP = LaunchConfig(
    rounds=2,
    local_epochs=1,
    secure_aggregation=True,
    dp_options={"epsilon": 2.0, "clip_norm": 1.0},
)
pytestmark = pytest.mark.django_db


@pytest.fixture
def medical(tmp_path: Path) -> Problem:
    return seed_medical(tmp_path)


def launch(problem: Problem, config: LaunchConfig = SECURE_DP) -> TrainingRun:
    actor = User.objects.get(username=RESEARCHER)
    return runs.run_launch(actor=actor, problem=problem, config=config)


def set_terms(problem: Problem, **terms: object) -> None:
    problem.agreements.filter(status="effective").update(**terms)


def play(run: TrainingRun, *, quiet: dict[tuple[int, str], set[str]] | None = None) -> TrainingRun:
    """Every stage of every round through the real site code, in process. ``quiet``: the sites
    that do not answer a (round, stage); that stage then moves on (or fails) at its deadline."""
    quiet = quiet or {}
    runs.run_advance(run.pk)
    for _ in range(200):
        round_ = Round.objects.filter(run=run, status="running").first()
        if round_ is None:
            break
        rows = secure.round_rows(round_)
        silent = quiet.get((round_.number, round_.secagg["stage"]), set())
        todo = [s for s in secure.waiting(round_, rows) if s.institution.slug not in silent]
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


def accountant_epsilon(spends: list[PrivacySpend]) -> float:
    """The spends' epsilon as dp-accounting computes it, from the events built here."""
    accountant = RdpAccountant(privacy.ORDERS)
    for s in spends:
        step = dp_event.GaussianDpEvent(s.noise_multiplier)
        if s.sampling_rate < 1.0:
            step = dp_event.PoissonSampledDpEvent(s.sampling_rate, step)
        accountant.compose(dp_event.SelfComposedDpEvent(step, s.steps))
    return accountant.get_epsilon(s.delta)


def assert_ledger_is_the_accountants(run: TrainingRun, datasets: list[Dataset]) -> None:
    """One spend per dataset per round, each the event the site ran, composed as dp-accounting
    composes it."""
    dp = run.spec["dp"]
    for dataset in datasets:
        spends = list(
            PrivacySpend.objects.filter(run=run, dataset=dataset).order_by("round_number")
        )
        assert [s.round_number for s in spends] == list(range(1, run.rounds + 1)), dataset.name
        rows = privacy.training_rows(dataset.row_count, run.validation_share)
        for k, spend in enumerate(spends, start=1):
            assert spend.noise_multiplier == dp["noise_multiplier"]
            assert spend.sampling_rate == min(1.0, run.batch_size / rows)
            assert spend.steps == run.local_epochs * math.ceil(rows / run.batch_size)
            assert spend.epsilon == pytest.approx(accountant_epsilon([spend]), rel=1e-9)
            assert spend.epsilon_total == pytest.approx(accountant_epsilon(spends[:k]), rel=1e-9)
        assert spends[-1].epsilon_total <= dp["epsilon"]


def training_datasets(problem: Problem) -> list[Dataset]:
    return list(
        Dataset.objects.filter(problem=problem, purpose="training", status="active").order_by("pk")
    )


# --- The launch ------------------------------------------------------------------------------


def test_a_run_may_be_both_securely_aggregated_and_differentially_private(medical):
    """Fails if the launch refused the combination again."""
    set_terms(medical, secure_aggregation=True)
    plan = launch_plan(problem=medical, config=SECURE_DP)
    assert plan.allowed, plan.reasons
    assert plan.secure and plan.spec.dp is not None
    run = launch(medical)
    assert run.secure_aggregation and run.spec["dp"]["epsilon"] == 2.0
    payload = AuditEvent.objects.filter(action="run.launched").latest("pk").payload
    assert payload["secure_aggregation"] is True
    assert payload["differential_privacy"]["epsilon"] == 2.0


def test_a_secure_dp_launch_is_refused_exactly_past_the_ceiling(medical):
    set_terms(medical, secure_aggregation=True)
    spent = play(launch(medical))
    assert spent.status == TrainingRun.Status.SUCCEEDED, spent.reasons
    config = LaunchConfig(
        rounds=1, local_epochs=1, secure_aggregation=True, dp_options={"epsilon": 1.0}
    )
    worst = worst_projection(medical, config)
    assert worst.spent > 0  # the secure run's spends count

    set_terms(medical, dp_max_epsilon=math.nextafter(worst.total, 0))  # a hair below: refused
    plan = launch_plan(problem=medical, config=config)
    assert not plan.allowed
    [reason] = plan.reasons
    assert worst.dataset.name in reason and f"the run needs {worst.needed:.3f}" in reason
    with pytest.raises(ApplicationError) as refused:
        launch(medical, config)
    assert refused.value.extra["reasons"] == [reason]

    set_terms(medical, dp_max_epsilon=worst.total)  # exactly at the ceiling: allowed
    assert launch_plan(problem=medical, config=config).allowed
    run = launch(medical, config)
    assert run.secure_aggregation and run.spec["dp"]["ceiling"] == worst.total


# --- The ledger ------------------------------------------------------------------------------


def test_each_secure_round_charges_every_dataset_whose_masked_input_was_summed(medical):
    """Fails if secure rounds stopped charging the ledger."""
    set_terms(medical, secure_aggregation=True)
    run = play(launch(medical))
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    datasets = training_datasets(medical)
    assert PrivacySpend.objects.filter(run=run).count() == run.rounds * len(datasets) == 6
    assert_ledger_is_the_accountants(run, datasets)
    for number in (1, 2):
        seen = run.round_set.get(number=number).secagg["seen"]
        charged = PrivacySpend.objects.filter(run=run, round_number=number)
        assert sorted(charged.values_list("institution__slug", flat=True)) == seen["survivors"]
    events = AuditEvent.objects.filter(action="privacy.spent")
    assert events.count() == 6
    for event in events:
        payload = event.payload
        assert payload["secure_aggregation"] is True
        round_ = run.round_set.get(number=payload["round"])
        slug = Dataset.objects.get(pk=payload["dataset"]).institution.slug
        # the spend rests on the masked input's hash, never an update's
        assert payload["update_sha256"] == round_.secagg["seen"]["masked_sha256"][slug]
    # Each site kept the same spends in its own ledger.
    for slug in SITES:
        lines = (Path(settings.SITE_DATA_ROOT) / slug / ".site" / PRIVACY_LEDGER).read_text()
        assert len(lines.splitlines()) == 2


def test_a_secure_dp_run_sums_the_sites_noisy_updates_and_keeps_none(medical):
    set_terms(medical, secure_aggregation=True)
    run = play(launch(medical))
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    # The sum is the sites' DP-SGD updates' (the same noise, seeded), within quantisation.
    final = runs.model_params(run.models.get(round_number=2))
    plain = run_in_process(local_sites(run), base_task(run), rounds=2, strategy="fedavg")
    for a, b in zip(final, plain[-1], strict=True):
        assert np.max(np.abs(a - b)) < 1e-9
    secrets = {**plain_updates(run, 1), **{f"2/{k}": v for k, v in plain_updates(run, 2).items()}}
    assert_no_individual_update(run, secrets, list(PrivacySpend.objects.filter(run=run).values()))


def test_a_secure_round_that_fails_charges_each_masked_input_that_arrived(medical):
    set_terms(medical, secure_aggregation=True)
    # All three masked inputs arrive; two sites stay silent when asked to unmask.
    run = play(launch(medical), quiet={(1, "unmask"): set(SITES[1:])})
    assert run.status == TrainingRun.Status.FAILED
    round_ = run.round_set.get(number=1)
    assert round_.status == Round.Status.FAILED and round_.secagg["stage"] == "failed"
    assert round_.secagg["seen"]["u3"] == SITES
    charged = PrivacySpend.objects.filter(run=run)
    assert sorted(charged.values_list("institution__slug", flat=True)) == SITES
    assert all(s.round_number == 1 for s in charged)
    assert not SiteRound.objects.filter(round__run=run).exclude(update="").exists()


def test_a_secure_round_failing_at_the_masked_stage_charges_only_what_arrived(medical):
    set_terms(medical, secure_aggregation=True)
    run = play(launch(medical), quiet={(1, "masked"): set(SITES[1:])})
    assert run.status == TrainingRun.Status.FAILED
    [spend] = PrivacySpend.objects.filter(run=run)
    assert spend.institution.slug == SITES[0] and spend.round_number == 1


def test_a_cancelled_secure_round_charges_the_masked_inputs_that_arrived(medical):
    set_terms(medical, secure_aggregation=True)
    run = launch(medical)
    runs.run_advance(run.pk)
    round_ = Round.objects.get(run=run, number=1)
    for _stage in ("advertise", "share_keys"):
        rows = secure.round_rows(round_)
        for envelope in secure.stage_envelopes(run, round_, rows, rows):
            runs.update_receive(handle_task(envelope.to_wire()).to_wire())
        round_.refresh_from_db()
    assert round_.secagg["stage"] == "masked"
    rows = secure.round_rows(round_)
    [envelope] = secure.stage_envelopes(run, round_, rows[:1], rows)
    runs.update_receive(handle_task(envelope.to_wire()).to_wire())
    assert not PrivacySpend.objects.filter(run=run).exists()  # charged when the round ends
    runs.run_cancel(actor=User.objects.get(username=RESEARCHER), run=run)
    [spend] = PrivacySpend.objects.filter(run=run)
    assert spend.institution.slug == rows[0].institution.slug
    assert not SiteRound.objects.filter(round__run=run).exclude(update="").exists()


# --- The site's own ledger -------------------------------------------------------------------


def test_a_site_refuses_a_secure_round_past_its_own_ceiling(medical):
    set_terms(medical, secure_aggregation=True, dp_max_epsilon=5.0)
    run = launch(medical, dataclasses.replace(SECURE_DP, rounds=1))
    # Spends the coordinator never saw (another portal, say): the site's own ledger has them.
    slug = SITES[0]
    dataset = Dataset.objects.get(problem=medical, institution__slug=slug, purpose="training")
    ledger = Path(settings.SITE_DATA_ROOT) / slug / ".site" / PRIVACY_LEDGER
    ledger.parent.mkdir(parents=True, exist_ok=True)
    heavy = {"noise_multiplier": 0.8, "sampling_rate": 1.0, "steps": 200}
    ledger.write_text(
        json.dumps({"sha256": dataset.sha256, "run": 0, "launched": "x", "round": 1, **heavy})
        + "\n"
    )
    run = play(run)
    # The others went on without it: two of three is the round's threshold.
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    row = SiteRound.objects.get(round__run=run, institution__slug=slug)
    assert row.status == SiteRound.Status.REJECTED and row.reason_code == "privacy_budget"
    assert "privacy budget" in row.reason
    assert "masked" not in row.secagg
    seen = run.round_set.get(number=1).secagg["seen"]
    assert seen["survivors"] == SITES[1:]
    charged = PrivacySpend.objects.filter(run=run)
    assert sorted(charged.values_list("institution__slug", flat=True)) == SITES[1:]
    assert len(ledger.read_text().splitlines()) == 1  # the site spent nothing more


# --- Through the real broker and a real worker -----------------------------------------------


@pytest.mark.worker
def test_a_secure_dp_run_through_the_real_broker_and_worker_charges_the_ledger(
    broker_ready, transactional_db, medical
):
    set_terms(medical, secure_aggregation=True)
    with workers(["coordinator", *site_queues(*SITES)]):
        run = finished(launch(medical), timeout=180)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.reasons
    datasets = training_datasets(medical)
    assert PrivacySpend.objects.filter(run=run).count() == run.rounds * len(datasets)
    assert_ledger_is_the_accountants(run, datasets)
    assert run.round_set.get(number=2).secagg["seen"]["survivors"] == SITES
    assert not SiteRound.objects.filter(round__run=run).exclude(update="").exists()
    for s in SiteRound.objects.filter(round__run=run):
        assert s.sample_count is None and s.metrics == {}
    secrets = plain_updates(run, 1)
    dumped = json.dumps(
        [
            list(SiteRound.objects.filter(round__run=run).values()),
            list(AuditEvent.objects.values()),
        ],
        default=str,
    )
    for sha, _count in secrets.values():
        assert sha not in dumped


# --- The pages -------------------------------------------------------------------------------


def test_the_run_and_ledger_pages_say_the_run_was_secure_and_private(medical, client):
    from django.urls import reverse

    from projects.run_views import run_url

    set_terms(medical, secure_aggregation=True)
    run = play(launch(medical))
    seen = run.round_set.get(number=2).secagg["seen"]
    client.force_login(User.objects.get(username=RESEARCHER))
    page = client.get(run_url(run)).content.decode()
    assert "Securely aggregated and differentially private." in page
    assert "Secure aggregation: what the coordinator saw" in page
    assert seen["masked_sum_sha256"][:12] in page
    assert "Differential privacy: epsilon spent per dataset" in page
    for dataset in training_datasets(medical):
        spends = list(PrivacySpend.objects.filter(run=run, dataset=dataset))
        assert f"{accountant_epsilon(spends):.3f}" in page
    own = Dataset.objects.get(problem=medical, institution__slug=RESEARCHER.rsplit("-", 1)[0])
    ledger = client.get(reverse("privacy-ledger")).content.decode()
    assert "Of which securely aggregated" in ledger
    detail = client.get(reverse("privacy-dataset", args=[own.pk])).content.decode()
    assert detail.count("Secure: the coordinator saw only the masked input and the sum") == 2
    # and the API says the same
    [row] = [
        r
        for r in client.get(reverse("api:privacy-ledger")).json()["results"]
        if r["dataset"] == own.pk
    ]
    assert row["spends"] == row["secure_spends"] == 2
    answer = client.get(reverse("api:privacy-ledger-dataset", args=[own.pk])).json()
    assert [s["secure_aggregation"] for s in answer["spends"]] == [True, True]
