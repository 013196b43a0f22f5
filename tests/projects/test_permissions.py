"""Who sees a problem and who acts on it: visibility, the role matrix, suspension, role changes."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from alliance import services as alliance_services
from alliance.models import AuditEvent
from projects import selectors, services
from projects.models import AgreementApproval, Participation, Problem, Ratification
from projects.permissions import access_problem
from tests.projects.scenario import DEFINITION, Scenario, description, make_site

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"
ROLES = ("admin", "researcher", "steward", "viewer")


@pytest.fixture
def outsider(db):
    return make_site("east-clinic", "East Clinic")


@pytest.fixture
def private(scenario) -> Scenario:
    """An invitation-only problem with B contributing and C validating."""
    scenario.propose(visibility=Problem.Visibility.INVITATION)
    scenario.join()
    return scenario


def people(site) -> list:
    return [getattr(site, role) for role in ROLES]


def perms_of(user, problem: Problem) -> set[str]:
    codenames = (
        "view_problem",
        "change_problem",
        "manage_participants",
        "ratify_problem",
        "comment_problem",
        "register_dataset",
        "approve_agreement",
    )
    return {c for c in codenames if user.has_perm(f"projects.{c}", problem)}


# --- Visibility --------------------------------------------------------------------------------


def test_invitation_only_problem_is_invisible_to_outsiders(private, outsider):
    for person in [*people(outsider), AnonymousUser(), None]:
        with pytest.raises(Http404):
            access_problem(person, SLUG)
        with pytest.raises(Http404):
            access_problem(person, SLUG, perm="projects.ratify_problem")
        assert not selectors.problem_list_for(person or AnonymousUser()).filter(slug=SLUG).exists()


def test_a_missing_problem_answers_the_same_404(private, outsider):
    with pytest.raises(Http404) as missing:
        access_problem(outsider.admin, "no-such-problem")
    with pytest.raises(Http404) as hidden:
        access_problem(outsider.admin, SLUG)
    assert str(missing.value) == str(hidden.value)


def test_invitation_only_problem_is_visible_to_participants_and_staff(private, staff):
    for person in [*people(private.a), *people(private.b), *people(private.c), staff]:
        assert access_problem(person, SLUG) == private.problem
        assert selectors.problem_list_for(person).filter(slug=SLUG).exists()


def test_an_invited_institution_sees_the_problem_until_it_declines(scenario, outsider):
    problem = scenario.propose(visibility=Problem.Visibility.INVITATION)
    with pytest.raises(Http404):
        access_problem(outsider.viewer, SLUG)
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=outsider.institution, role="observer"
    )
    for person in people(outsider):
        assert access_problem(person, SLUG) == problem
    # Invited is not participating: nothing to act on yet.
    with pytest.raises(PermissionDenied):
        access_problem(outsider.admin, SLUG, perm="projects.comment_problem")
    services.participation_decline(actor=outsider.admin, participation=invitation, reason="No.")
    for person in people(outsider):
        with pytest.raises(Http404):
            access_problem(person, SLUG)


def test_a_departed_institution_loses_sight_of_an_invitation_only_problem(private):
    services.participation_leave(actor=private.c.admin, problem=private.problem)
    with pytest.raises(Http404):
        access_problem(private.c.researcher, SLUG)


def test_a_listed_problem_is_visible_to_every_member_but_not_actionable(scenario, outsider):
    problem = scenario.propose()
    for person in people(outsider):
        assert access_problem(person, SLUG) == problem
    with pytest.raises(Http404):
        access_problem(AnonymousUser(), SLUG)
    for perm in ("projects.ratify_problem", "projects.comment_problem", "projects.change_problem"):
        with pytest.raises(PermissionDenied):
            access_problem(outsider.admin, SLUG, perm=perm)


# --- The role matrix ---------------------------------------------------------------------------


def test_object_permissions_follow_institution_and_role(private, outsider):
    problem = private.problem
    view, comment = {"view_problem"}, {"view_problem", "comment_problem"}
    expected = {
        private.a.admin: comment | {"change_problem", "manage_participants", "ratify_problem"},
        private.a.researcher: comment | {"change_problem", "ratify_problem"},
        private.a.steward: comment | {"register_dataset", "approve_agreement"},
        private.a.viewer: view,
        private.b.admin: comment | {"ratify_problem"},
        private.b.researcher: comment | {"ratify_problem"},
        private.b.steward: comment | {"register_dataset", "approve_agreement"},
        private.b.viewer: view,
        private.c.admin: comment | {"ratify_problem"},
        private.c.researcher: comment | {"ratify_problem"},
        private.c.steward: comment,  # a validator's steward has nothing to approve
        private.c.viewer: view,
        outsider.admin: set(),
    }
    assert {user: perms_of(user, problem) for user in expected} == expected


def test_only_a_contributors_own_stewards_approve_for_it(scenario, outsider):
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    version = scenario.draft()
    # The outsider's steward contributes to another problem, and that gives nothing here.
    services.problem_propose(
        actor=outsider.researcher,
        slug="other-problem",
        title="Other",
        sector="medicine",
        summary="S",
        question="Q",
        **DEFINITION,
    )
    assert outsider.steward.has_perm(
        "projects.approve_agreement", Problem.objects.get(slug="other-problem")
    )
    for actor in (scenario.c.steward, outsider.steward, scenario.b.researcher, scenario.b.admin):
        with pytest.raises(PermissionDenied):
            services.agreement_approve(
                actor=actor, version=version, terms_sha256=version.terms_sha256
            )
        with pytest.raises(PermissionDenied):
            services.agreement_decline(actor=actor, version=version, reason="No.")
    assert not AgreementApproval.objects.exists()
    approval = services.agreement_approve(
        actor=scenario.b.steward, version=version, terms_sha256=version.terms_sha256
    )
    assert approval.institution == scenario.b.institution  # approves for its own institution


def test_only_the_proposers_admins_manage_participants(private, outsider, staff):
    for actor in (private.a.researcher, private.a.steward, private.b.admin, outsider.admin, staff):
        with pytest.raises((PermissionDenied, Http404)):
            access_problem(actor, SLUG, perm="projects.manage_participants")
        with pytest.raises(PermissionDenied):
            services.participation_invite(
                actor=actor,
                problem=private.problem,
                institution=outsider.institution,
                role="observer",
            )
    assert access_problem(private.a.admin, SLUG, perm="projects.manage_participants")
    invitation = services.participation_invite(
        actor=private.a.admin,
        problem=private.problem,
        institution=outsider.institution,
        role="observer",
    )
    assert invitation.status == Participation.Status.INVITED


def test_staff_read_everything_but_act_for_nobody(private, staff):
    assert access_problem(staff, SLUG) == private.problem
    for perm in ("projects.ratify_problem", "projects.change_problem", "projects.view_problem"):
        with pytest.raises(PermissionDenied, match="member institution"):
            access_problem(staff, SLUG, perm=perm)
    before = AuditEvent.objects.count()
    with pytest.raises(PermissionDenied):
        services.problem_ratify(actor=staff, problem=private.problem, revision=1)
    with pytest.raises(PermissionDenied):
        services.problem_update(actor=staff, problem=private.problem, title="Staff edit")
    with pytest.raises(PermissionDenied):
        services.problem_comment(actor=staff, problem=private.problem, revision=1, body="Hi")
    with pytest.raises(PermissionDenied):
        services.participation_request(actor=staff, problem=private.problem, role="observer")
    assert AuditEvent.objects.count() == before


def test_a_suspended_institutions_people_cannot_act(scenario, staff):
    problem = scenario.propose()
    scenario.join()
    services.problem_ratify(actor=scenario.a.researcher, problem=problem, revision=1)
    services.problem_ratify(actor=scenario.c.researcher, problem=problem, revision=1)
    alliance_services.institution_suspend(
        actor=staff, institution=scenario.b.institution, reason="Unpaid dues."
    )
    # They still read...
    assert access_problem(scenario.b.researcher, SLUG) == problem
    # ...but every act stops, and says why.
    with pytest.raises(PermissionDenied, match="Harbour Hospital is suspended"):
        access_problem(scenario.b.researcher, SLUG, perm="projects.ratify_problem")
    with pytest.raises(PermissionDenied, match="suspended"):
        services.problem_ratify(actor=scenario.b.researcher, problem=problem, revision=1)
    with pytest.raises(PermissionDenied, match="suspended"):
        services.problem_comment(actor=scenario.b.steward, problem=problem, revision=1, body="x")
    with pytest.raises(PermissionDenied, match="suspended"):
        services.participation_leave(actor=scenario.b.admin, problem=problem)
    assert not Ratification.objects.filter(institution=scenario.b.institution).exists()
    alliance_services.institution_reinstate(actor=staff, institution=scenario.b.institution)
    services.problem_ratify(actor=scenario.b.researcher, problem=problem, revision=1)
    assert scenario.refresh().is_ratified


def test_a_suspended_stewards_cannot_register_or_approve(ready, staff):
    alliance_services.institution_suspend(
        actor=staff, institution=ready.b.institution, reason="Audit pending."
    )
    with pytest.raises(PermissionDenied, match="suspended"):
        services.dataset_register(
            actor=ready.b.steward, problem=ready.problem, **description("new.csv")
        )
    with pytest.raises(PermissionDenied, match="suspended"):
        services.agreement_revoke(actor=ready.b.steward, version=ready.agreement, reason="x")


def test_a_role_change_moves_the_persons_object_permissions(ready):
    problem = ready.problem
    person = ready.b.researcher
    assert perms_of(person, problem) == {"view_problem", "comment_problem", "ratify_problem"}
    alliance_services.member_change_role(
        actor=ready.b.admin, membership=person.membership, role="data_steward"
    )
    assert perms_of(person, problem) == {
        "view_problem",
        "comment_problem",
        "register_dataset",
        "approve_agreement",
    }
    # The new steward acts as one, and no longer as a researcher.
    services.agreement_revoke(actor=person, version=ready.agreement, reason="Reviewing consent.")
    v2 = ready.draft(clauses="Amended.")
    with pytest.raises(PermissionDenied):
        services.problem_ratify(actor=person, problem=problem, revision=1)
    alliance_services.member_change_role(
        actor=ready.b.admin, membership=person.membership, role="viewer"
    )
    assert perms_of(person, problem) == {"view_problem"}
    with pytest.raises(PermissionDenied):
        services.agreement_approve(actor=person, version=v2, terms_sha256=v2.terms_sha256)


def test_a_deactivated_person_loses_every_object_permission(ready):
    person = ready.b.steward
    alliance_services.member_deactivate(actor=ready.b.admin, membership=person.membership)
    person.refresh_from_db()
    assert perms_of(person, ready.problem) == set()
    with pytest.raises(PermissionDenied):
        services.agreement_revoke(actor=person, version=ready.agreement, reason="x")


def test_leaving_takes_away_the_participants_permissions(ready):
    services.participation_leave(actor=ready.b.admin, problem=ready.problem)
    assert Participation.objects.get(institution=ready.b.institution).status == "left"
    for person in people(ready.b):
        assert perms_of(person, ready.problem) == set()
        assert access_problem(person, SLUG) == ready.problem  # listed: still readable


# --- Permission checks read once -----------------------------------------------------------------


def test_problem_perms_answer_what_guardian_answers_in_one_query(private, outsider):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from guardian.core import ObjectPermissionChecker
    from guardian.shortcuts import assign_perm

    from projects.permissions import problem_perms

    problem = private.refresh()
    # A grant to a person (never made by the portal, but guardian counts it) is counted too.
    assign_perm("projects.comment_problem", outsider.viewer, problem)
    everyone = [p for site in (private.a, private.b, private.c, outsider) for p in people(site)]
    for user in everyone:
        fresh = get_user_model().objects.get(pk=user.pk)
        expected = set(ObjectPermissionChecker(fresh).get_perms(problem))
        fresh_problem = Problem.objects.get(pk=problem.pk)
        with CaptureQueriesContext(connection) as captured:
            assert problem_perms(fresh, fresh_problem) == expected, user.username
            assert problem_perms(fresh, fresh_problem) == expected  # remembered: no query
        assert len(captured) == 1
    assert "comment_problem" in problem_perms(outsider.viewer, Problem.objects.get(pk=problem.pk))


def test_checks_on_a_person_read_for_the_request_still_see_a_suspension(ready):
    from alliance.permissions import current_membership
    from portal.common.auth import PortalBackend
    from projects.permissions import can_launch
    from tests.factories import StaffFactory

    researcher = ready.a.researcher
    problem = ready.refresh()
    assert can_launch(PortalBackend().get_user(researcher.pk), problem)
    alliance_services.institution_suspend(
        actor=StaffFactory(), institution=ready.a.institution, reason="Audit pending."
    )
    person = PortalBackend().get_user(researcher.pk)
    assert current_membership(person) is None
    assert not can_launch(person, problem)
