"""The policy service: may this run configuration run under the effective agreement, and why not."""

import dataclasses
import datetime

import pytest
from django.utils import timezone

from alliance import services as alliance_services
from alliance.models import AuditEvent
from projects import services
from projects.models import Dataset, Problem
from projects.services import PolicyDecision, RunConfig
from tests.projects.scenario import DEFINITION, Scenario, Site, description, make_site

pytestmark = pytest.mark.django_db

RUN = RunConfig(model_family="logistic_regression", min_contributors=2)
A, B, D = "north-hospital", "harbour-hospital", "east-clinic"


def check(scenario: Scenario, config: RunConfig = RUN, **changes) -> PolicyDecision:
    return services.run_policy_check(
        problem=scenario.refresh(), config=dataclasses.replace(config, **changes)
    )


def ready_with(scenario: Scenario, **terms) -> Scenario:
    """Data ready under an agreement with these terms."""
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    scenario.draft(**terms)
    scenario.approve()
    scenario.refresh()
    return scenario


@pytest.fixture
def three(ready) -> Scenario:
    """``ready`` plus a third contributor (East Clinic) with a dataset and an approval, so that
    one party can drop out while the run still has the two contributors it needs."""
    site = make_site("east-clinic", "East Clinic")
    services.participation_request(actor=site.admin, problem=ready.problem, role="contributor")
    services.participation_accept(
        actor=ready.a.admin,
        participation=ready.problem.participations.get(institution=site.institution),
    )
    services.problem_ratify(actor=site.researcher, problem=ready.refresh(), revision=1)
    services.dataset_register(actor=site.steward, problem=ready.refresh(), **description("e.csv"))
    services.agreement_approve(
        actor=site.steward, version=ready.agreement, terms_sha256=ready.agreement.terms_sha256
    )
    ready.keys(site)
    ready.extra["d"] = site
    ready.refresh()
    return ready


def d(scenario: Scenario) -> Site:
    return scenario.extra["d"]


# --- Allowed -----------------------------------------------------------------------------------


def test_allowed_run_lists_the_contributors_and_their_datasets(ready):
    before = AuditEvent.objects.count()
    decision = check(ready)
    assert decision.allowed
    assert decision.reasons == ()
    assert decision.agreement == ready.agreement
    assert [(c.institution, c.dataset) for c in decision.contributors] == [  # by name
        (ready.b.institution, Dataset.objects.get(institution=ready.b.institution)),
        (ready.a.institution, Dataset.objects.get(institution=ready.a.institution)),
    ]
    assert decision.excluded == ()  # the validator is not a contributor
    assert AuditEvent.objects.count() == before  # a question, not an act


def test_allowed_run_may_choose_its_contributors(three):
    decision = check(three, contributors=(A, D))
    assert decision.allowed
    assert [c.institution.slug for c in decision.contributors] == [A, D]
    assert [(e.institution.slug, e.reason) for e in decision.excluded] == [
        (B, "Not chosen for this run.")
    ]


# --- Each reason on its own --------------------------------------------------------------------


def test_refused_when_the_current_revision_is_not_ratified(ready):
    # A new contributor reopens ratification; the others stay eligible.
    site = make_site("east-clinic", "East Clinic")
    services.participation_invite(
        actor=ready.a.admin, problem=ready.problem, institution=site.institution, role="contributor"
    )
    services.participation_accept(
        actor=site.admin,
        participation=ready.problem.participations.get(institution=site.institution),
    )
    decision = check(ready)
    assert decision.reasons == ("Revision 1 of the problem is not ratified by every participant.",)


def test_refused_without_an_agreement(scenario):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    decision = check(scenario)
    assert decision.reasons == ("No data-use agreement is in effect for this problem.",)
    assert decision.agreement is None


def test_refused_while_the_agreement_awaits_approvals_naming_the_version(scenario):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    scenario.draft()
    scenario.approve(scenario.a)
    decision = check(scenario)
    assert decision.reasons == (
        "No data-use agreement is in effect: version 1 still awaits approvals.",
    )


def test_refused_once_the_agreement_expired(ready):
    expiry = ready.agreement.expires_on
    assert check(ready, on=expiry).allowed  # the last day still counts
    decision = check(ready, on=expiry + datetime.timedelta(days=1))
    assert decision.reasons == (f"Agreement version 1 expired on {expiry.isoformat()}.",)


def test_refused_for_a_model_family_the_agreement_does_not_permit(ready):
    decision = check(ready, model_family="mlp")
    assert decision.reasons == (
        "Agreement version 1 does not permit the model family Multilayer perceptron "
        "(permitted: Logistic regression).",
    )


def test_refused_when_asking_fewer_contributors_than_the_agreement(scenario):
    ready_with(scenario, min_contributors=2)
    decision = check(scenario, min_contributors=1)
    assert decision.reasons == (
        "Agreement version 1 requires at least 2 contributors per round; the run asks for 1.",
    )


def test_refused_when_fewer_contributors_are_eligible_than_needed(scenario):
    ready_with(scenario, min_contributors=3)
    assert scenario.problem.stage == Problem.Stage.RATIFIED  # not data ready with two
    decision = check(scenario, min_contributors=3)
    assert decision.reasons == (
        "Only 2 contributors may take part (Harbour Hospital, North Hospital); each round "
        "needs at least 3.",
    )


def test_refused_without_secure_aggregation_when_required(scenario):
    ready_with(scenario, secure_aggregation=True)
    decision = check(scenario)
    assert decision.reasons == ("Agreement version 1 requires secure aggregation.",)
    assert check(scenario, secure_aggregation=True).allowed


def test_refused_without_differential_privacy_when_required(scenario):
    ready_with(scenario, dp_max_epsilon=1.5)
    decision = check(scenario)
    assert decision.reasons == (
        "Agreement version 1 requires differential privacy with epsilon at most 1.5.",
    )


def test_refused_when_epsilon_exceeds_the_ceiling(scenario):
    ready_with(scenario, dp_max_epsilon=1.5)
    decision = check(scenario, dp_epsilon=2.0)
    assert decision.reasons == (
        "The run's epsilon 2.0 exceeds the ceiling 1.5 of agreement version 1.",
    )
    assert check(scenario, dp_epsilon=1.5).allowed
    assert check(scenario, dp_epsilon=0.5).allowed


@pytest.mark.parametrize("epsilon", [0, -1, float("inf"), float("nan")])
def test_refused_for_a_meaningless_epsilon(ready, epsilon):
    decision = check(ready, dp_epsilon=epsilon)
    assert decision.reasons == ("The run's privacy budget epsilon must be a positive number.",)


def test_refused_for_a_run_launched_under_a_superseded_version(ready):
    assert check(ready, agreement_version=1).allowed
    v2 = ready.draft(clauses="Results are published jointly, within a year.")
    ready.approve()
    assert v2.status == "effective"
    decision = check(ready, agreement_version=1)
    assert decision.reasons == (
        "The run was launched under agreement version 1, which is no longer in effect "
        "(version 2 is).",
    )
    assert check(ready, agreement_version=2).allowed


def test_refused_when_a_chosen_party_revoked(three):
    services.agreement_revoke(actor=three.b.steward, version=three.agreement, reason="Paused.")
    assert check(three).allowed  # A and East Clinic remain
    decision = check(three, contributors=(A, B, D))
    assert decision.reasons == ("Harbour Hospital revoked its approval of agreement version 1.",)
    assert [c.institution.slug for c in decision.contributors] == [A, D]


def test_refused_when_a_chosen_party_left(three):
    services.participation_leave(actor=three.b.admin, problem=three.problem)
    assert check(three).allowed
    decision = check(three, contributors=(A, B, D))
    assert decision.reasons == ("Harbour Hospital left the problem.",)


def test_refused_when_a_chosen_contributor_has_no_dataset(three):
    dataset = Dataset.objects.get(institution=three.b.institution)
    services.dataset_withdraw(actor=three.b.steward, dataset=dataset)
    assert check(three).allowed
    decision = check(three, contributors=(A, B, D))
    assert decision.reasons == ("Harbour Hospital has registered no dataset.",)


def test_refused_when_a_chosen_contributor_never_approved(three):
    v2 = three.draft(clauses="Amended clauses.")
    for site in (three.a, d(three), three.b):
        services.agreement_approve(actor=site.steward, version=v2, terms_sha256=v2.terms_sha256)
    services.agreement_revoke(actor=three.b.steward, version=v2, reason="Paused.")
    late = make_site("west-lab", "West Lab")
    services.participation_request(actor=late.admin, problem=three.problem, role="contributor")
    services.participation_accept(
        actor=three.a.admin,
        participation=three.problem.participations.get(institution=late.institution),
    )
    services.problem_ratify(actor=late.researcher, problem=three.refresh(), revision=1)
    decision = check(three, contributors=(A, D, "west-lab"))
    assert decision.reasons == ("West Lab has not approved agreement version 2.",)


def test_refused_when_a_chosen_institution_is_suspended(three, staff):
    alliance_services.institution_suspend(
        actor=staff, institution=three.b.institution, reason="Unpaid dues."
    )
    decision = check(three, contributors=(A, B, D))
    assert decision.reasons == ("Harbour Hospital is suspended.",)


def test_refused_for_an_unknown_contributor(ready):
    decision = check(ready, contributors=(A, B, "nowhere"))
    assert decision.reasons == ("nowhere is not a contributor of this problem.",)


# --- Several reasons at once -------------------------------------------------------------------


def test_every_reason_is_returned_together(scenario):
    ready_with(scenario, secure_aggregation=True, dp_max_epsilon=1.0)
    services.participation_leave(actor=scenario.b.admin, problem=scenario.problem)
    expiry = scenario.agreement.expires_on
    decision = check(
        scenario,
        model_family="mlp",
        min_contributors=1,
        dp_epsilon=8.0,
        agreement_version=7,
        on=timezone.localdate() + datetime.timedelta(days=400),
    )
    assert not decision.allowed
    assert decision.reasons == (
        "The run was launched under agreement version 7, which is no longer in effect "
        "(version 1 is).",
        f"Agreement version 1 expired on {expiry.isoformat()}.",
        "Agreement version 1 does not permit the model family Multilayer perceptron "
        "(permitted: Logistic regression).",
        "Agreement version 1 requires at least 2 contributors per round; the run asks for 1.",
        "Agreement version 1 requires secure aggregation.",
        "The run's epsilon 8.0 exceeds the ceiling 1.0 of agreement version 1.",
        "Only 1 contributors may take part (North Hospital); each round needs at least 2.",
    )
    assert [(e.institution.slug, e.reason) for e in decision.excluded] == [
        (B, "Harbour Hospital left the problem.")
    ]


# --- The facts are read afresh -----------------------------------------------------------------


def test_the_check_reads_the_problem_afresh(ready):
    """Training holds the problem it launched with; a revision since then must still count."""
    held = Problem.objects.get(pk=ready.problem.pk)
    assert services.run_policy_check(problem=held, config=RUN).allowed
    features = [dict(f) for f in ready.problem.revisions.get().features]
    features[0]["max"] = 100
    services.problem_revise(
        actor=ready.a.researcher,
        problem=Problem.objects.get(pk=held.pk),
        **{**DEFINITION, "features": features},
    )
    decision = services.run_policy_check(problem=held, config=RUN)
    assert not decision.allowed
    assert decision.reasons[0] == "Revision 2 of the problem is not ratified by every participant."
    assert decision.contributors == ()
