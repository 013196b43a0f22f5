"""The inbox: each person's pending actions, derived from the state, gone once done."""

import copy

import pytest
from django.contrib.auth.models import AnonymousUser

from alliance import services as alliance_services
from projects import selectors, services
from projects.models import Participation
from tests.projects.scenario import DEFINITION, FEATURES, description, make_site

pytestmark = pytest.mark.django_db

TITLE = "Tumour malignancy from biopsy features"


def kinds(user) -> list[str]:
    return sorted(item.kind for item in selectors.inbox_for(user))


def item(user, kind: str):
    (found,) = [i for i in selectors.inbox_for(user) if i.kind == kind]
    return found


@pytest.fixture
def outsider(db):
    return make_site("east-clinic", "East Clinic")


def test_nobody_has_anything_before_a_problem_exists(scenario, staff):
    for site in (scenario.a, scenario.b, scenario.c):
        for person in (site.admin, site.researcher, site.steward, site.viewer):
            assert selectors.inbox_for(person) == []
    assert selectors.inbox_for(staff) == []
    assert selectors.inbox_for(AnonymousUser()) == []


def test_ratifiers_admins_and_researchers_are_asked_to_ratify_until_they_do(scenario):
    problem = scenario.propose()
    scenario.join()
    for site in (scenario.a, scenario.b, scenario.c):
        assert kinds(site.admin) == ["ratify"]
        assert kinds(site.researcher) == ["ratify"]
        assert kinds(site.steward) == []
        assert kinds(site.viewer) == []
    entry = item(scenario.b.researcher, "ratify")
    assert entry.text == f"Ratify revision 1 of {TITLE}"
    assert entry.url == "/problems/tumour-malignancy/revisions/1/"
    assert entry.problem == problem

    services.problem_ratify(actor=scenario.b.researcher, problem=problem, revision=1)
    assert kinds(scenario.b.admin) == []  # one ratification per institution
    assert kinds(scenario.b.researcher) == []
    assert kinds(scenario.a.admin) == ["ratify"]


def test_a_new_revision_asks_everyone_again(scenario):
    problem = scenario.propose()
    scenario.join()
    scenario.ratify()
    assert kinds(scenario.c.researcher) == []
    features = copy.deepcopy(FEATURES)
    features[1]["max"] = 90
    services.problem_revise(
        actor=scenario.a.researcher, problem=problem, **{**DEFINITION, "features": features}
    )
    for site in (scenario.a, scenario.b, scenario.c):
        assert item(site.researcher, "ratify").text == f"Ratify revision 2 of {TITLE}"


def test_an_invited_institutions_admins_answer_the_invitation(scenario, outsider):
    problem = scenario.propose()
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=outsider.institution, role="validator"
    )
    assert kinds(outsider.admin) == ["invitation"]
    assert item(outsider.admin, "invitation").text == (
        f"Answer the invitation to join {TITLE} as validator (evaluates on held-out data)"
    )
    assert kinds(outsider.researcher) == []
    services.participation_accept(actor=outsider.admin, participation=invitation)
    assert kinds(outsider.admin) == ["ratify"]  # now a validator, with a revision to ratify


def test_a_declined_invitation_leaves_the_inbox(scenario, outsider):
    problem = scenario.propose()
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=outsider.institution, role="observer"
    )
    services.participation_decline(actor=outsider.admin, participation=invitation)
    assert kinds(outsider.admin) == []


def test_the_proposers_admins_decide_requests(scenario, outsider):
    problem = scenario.propose()
    services.problem_ratify(actor=scenario.a.researcher, problem=problem, revision=1)
    services.participation_request(actor=outsider.admin, problem=problem, role="contributor")
    assert kinds(scenario.a.admin) == ["request"]
    assert item(scenario.a.admin, "request").text == (
        f"East Clinic asks to join {TITLE} as contributor (brings data)"
    )
    assert item(scenario.a.admin, "request").url == "/problems/tumour-malignancy/#participants"
    assert kinds(scenario.a.researcher) == []
    assert kinds(outsider.admin) == []  # waiting on the other side
    services.participation_accept(
        actor=scenario.a.admin,
        participation=Participation.objects.get(institution=outsider.institution),
    )
    assert kinds(scenario.a.admin) == []


def test_contributors_stewards_register_a_dataset_once_ratified(scenario):
    problem = scenario.propose()
    scenario.join()
    scenario.ratify()
    assert kinds(scenario.a.steward) == ["dataset"]
    assert kinds(scenario.b.steward) == ["dataset"]
    assert kinds(scenario.c.steward) == []  # validators bring no training data
    entry = item(scenario.b.steward, "dataset")
    assert entry.text == f"Register your dataset for {TITLE}"
    assert entry.url == "/problems/tumour-malignancy/datasets/new/"
    services.dataset_register(
        actor=scenario.b.steward, problem=scenario.refresh(), **description("b.csv")
    )
    assert kinds(scenario.b.steward) == []
    assert kinds(scenario.a.steward) == ["dataset"]
    assert problem.pk == entry.problem.pk


def test_contributors_stewards_approve_each_agreement_version(ready):
    assert kinds(ready.a.steward) == []
    v2 = ready.draft(dp_max_epsilon=2.0)
    assert kinds(ready.a.steward) == ["agreement"]
    assert kinds(ready.b.steward) == ["agreement"]
    assert kinds(ready.c.steward) == []
    entry = item(ready.a.steward, "agreement")
    assert entry.text == f"Approve agreement version 2 of {TITLE}"
    assert entry.url == "/problems/tumour-malignancy/agreement/v2/"

    services.agreement_approve(actor=ready.a.steward, version=v2, terms_sha256=v2.terms_sha256)
    assert kinds(ready.a.steward) == []
    assert kinds(ready.b.steward) == ["agreement"]
    services.agreement_decline(actor=ready.b.steward, version=v2, reason="Epsilon too loose.")
    assert kinds(ready.b.steward) == []  # a decision, even a refusal, clears it


def test_a_late_contributor_is_asked_for_everything_in_turn(ready, outsider):
    services.participation_request(actor=outsider.admin, problem=ready.problem, role="contributor")
    assert kinds(ready.a.admin) == ["request"]
    services.participation_accept(
        actor=ready.a.admin,
        participation=Participation.objects.get(institution=outsider.institution),
    )
    # Its joining reopened ratification; the others have ratified already.
    assert kinds(outsider.admin) == ["ratify"]
    assert kinds(ready.a.admin) == []
    # Its steward has the effective version to approve (it joined after it took effect).
    assert kinds(outsider.steward) == ["agreement"]
    services.problem_ratify(actor=outsider.researcher, problem=ready.refresh(), revision=1)
    assert kinds(outsider.admin) == []
    assert kinds(outsider.steward) == ["agreement", "dataset"]
    services.dataset_register(
        actor=outsider.steward, problem=ready.refresh(), **description("east.csv")
    )
    version = ready.agreement
    services.agreement_approve(
        actor=outsider.steward, version=version, terms_sha256=version.terms_sha256
    )
    assert kinds(outsider.steward) == []


def test_a_revoked_approval_is_not_asked_again(ready):
    services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="Paused.")
    assert kinds(ready.b.steward) == []


def test_a_suspended_institution_or_deactivated_person_has_no_inbox(scenario, staff):
    problem = scenario.propose()
    scenario.join()
    alliance_services.institution_suspend(
        actor=staff, institution=scenario.b.institution, reason="Unpaid dues."
    )
    # As on the next request: the person and their membership are read afresh.
    scenario.b.admin.refresh_from_db()
    assert kinds(scenario.b.admin) == []
    alliance_services.member_deactivate(
        actor=scenario.c.admin, membership=scenario.c.researcher.membership
    )
    scenario.c.researcher.refresh_from_db()
    assert kinds(scenario.c.researcher) == []
    assert kinds(scenario.c.admin) == ["ratify"]
    assert problem.pk


def test_a_departed_institution_has_nothing_left_to_do(scenario):
    problem = scenario.propose()
    scenario.join()
    services.participation_leave(actor=scenario.c.admin, problem=problem)
    assert kinds(scenario.c.admin) == []
    assert kinds(scenario.c.researcher) == []
