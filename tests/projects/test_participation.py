"""Participation: requests and invitations, who decides them, duplicates, leaving."""

import pytest
from django.core.exceptions import PermissionDenied

from alliance.models import AuditEvent, Institution
from alliance.tasks import email_send_task
from portal.common.errors import ApplicationError, Conflict
from projects import services
from projects.models import Participation, Problem
from projects.services import RunConfig
from tests.factories import InstitutionFactory
from tests.projects.scenario import make_site

pytestmark = pytest.mark.django_db


def emails(callbacks: list) -> list[tuple[str, str, list[str]]]:
    """(subject, body, recipients) of every email a block scheduled for after its commit."""
    return [
        callback.args
        for callback in callbacks
        if getattr(callback, "func", None) == email_send_task.delay
    ]


def recipients(callbacks: list) -> set[str]:
    return {address for _subject, _body, to in emails(callbacks) for address in to}


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


@pytest.fixture
def outsider(db):
    """An admitted institution that does not take part in the scenario's problem yet."""
    return make_site("east-clinic", "East Clinic")


# --- Requests ----------------------------------------------------------------------------------


def test_admin_asks_to_join_a_listed_problem(
    scenario, outsider, django_capture_on_commit_callbacks
):
    problem = scenario.propose()
    with django_capture_on_commit_callbacks() as callbacks:
        participation = services.participation_request(
            actor=outsider.admin, problem=problem, role="contributor", message=" 300 cases. "
        )
    assert participation.status == Participation.Status.REQUESTED
    assert participation.role == Participation.Role.CONTRIBUTOR
    assert participation.message == "300 cases."
    assert participation.requested_by == outsider.admin
    (event,) = events("participation.requested")
    assert event.actor == outsider.admin
    assert event.subject_institution == scenario.a.institution
    assert event.payload == {"institution": "east-clinic", "role": "contributor"}
    assert recipients(callbacks) == {"north-hospital-admin@example.org"}


def test_invitation_only_problems_cannot_be_asked_for(scenario, outsider):
    problem = scenario.propose(visibility=Problem.Visibility.INVITATION)
    with pytest.raises(PermissionDenied, match="invitation only"):
        services.participation_request(actor=outsider.admin, problem=problem, role="contributor")
    assert not Participation.objects.filter(institution=outsider.institution).exists()
    assert not events("participation.requested")


@pytest.mark.parametrize("role", ["researcher", "steward", "viewer"])
def test_only_admins_ask_to_join(scenario, outsider, role):
    problem = scenario.propose()
    with pytest.raises(PermissionDenied):
        services.participation_request(
            actor=getattr(outsider, role), problem=problem, role="contributor"
        )


def test_request_with_an_unknown_role_is_refused(scenario, outsider):
    problem = scenario.propose()
    with pytest.raises(ApplicationError, match="Choose a participation role"):
        services.participation_request(actor=outsider.admin, problem=problem, role="sponsor")


def test_proposer_admin_accepts_a_request(scenario, outsider, django_capture_on_commit_callbacks):
    problem = scenario.propose()
    participation = services.participation_request(
        actor=outsider.admin, problem=problem, role="validator"
    )
    with django_capture_on_commit_callbacks() as callbacks:
        accepted = services.participation_accept(
            actor=scenario.a.admin, participation=participation
        )
    assert accepted.status == Participation.Status.ACTIVE
    assert accepted.decided_by == scenario.a.admin
    assert accepted.decided_at is not None
    (event,) = events("participation.accepted")
    assert event.actor == scenario.a.admin
    assert event.subject_institution == outsider.institution
    assert event.payload == {"institution": "east-clinic", "role": "validator", "was": "requested"}
    told = recipients(callbacks)
    assert "east-clinic-admin@example.org" in told
    assert "north-hospital-researcher@example.org" in told
    assert "north-hospital-admin@example.org" not in told  # the one who accepted
    # The new validator may now ratify.
    assert outsider.researcher.has_perm("projects.ratify_problem", problem)


def test_a_request_is_decided_by_the_proposers_admins_only(scenario, outsider):
    problem = scenario.propose()
    scenario.join()
    participation = services.participation_request(
        actor=outsider.admin, problem=problem, role="contributor"
    )
    for actor in (outsider.admin, scenario.a.researcher, scenario.b.admin, scenario.a.steward):
        with pytest.raises(PermissionDenied):
            services.participation_accept(actor=actor, participation=participation)
        with pytest.raises(PermissionDenied):
            services.participation_decline(actor=actor, participation=participation)
    participation.refresh_from_db()
    assert participation.status == Participation.Status.REQUESTED
    assert len(events("participation.accepted")) == 2  # B's and C's, in scenario.join()
    assert not events("participation.declined")


def test_proposer_admin_declines_a_request_with_a_reason(
    scenario, outsider, django_capture_on_commit_callbacks
):
    problem = scenario.propose()
    participation = services.participation_request(
        actor=outsider.admin, problem=problem, role="contributor"
    )
    with django_capture_on_commit_callbacks() as callbacks:
        declined = services.participation_decline(
            actor=scenario.a.admin, participation=participation, reason="Adults only."
        )
    assert declined.status == Participation.Status.DECLINED
    (event,) = events("participation.declined")
    assert event.actor == scenario.a.admin
    assert event.payload == {
        "institution": "east-clinic",
        "was": "requested",
        "reason": "Adults only.",
    }
    assert recipients(callbacks) == {"east-clinic-admin@example.org"}
    # Declined is not final: the institution may ask again.
    again = services.participation_request(actor=outsider.admin, problem=problem, role="observer")
    assert again.pk == participation.pk
    assert again.status == Participation.Status.REQUESTED
    assert again.role == Participation.Role.OBSERVER


# --- Invitations -------------------------------------------------------------------------------


def test_proposer_admin_invites_and_the_invitee_admin_accepts(
    scenario, django_capture_on_commit_callbacks
):
    problem = scenario.propose(visibility=Problem.Visibility.INVITATION)
    with django_capture_on_commit_callbacks() as callbacks:
        invitation = services.participation_invite(
            actor=scenario.a.admin,
            problem=problem,
            institution=scenario.b.institution,
            role="contributor",
            message="Your biopsies would help.",
        )
    assert invitation.status == Participation.Status.INVITED
    assert invitation.requested_by == scenario.a.admin
    (event,) = events("participation.invited")
    assert event.actor == scenario.a.admin
    assert event.subject_institution == scenario.b.institution
    assert event.payload == {"institution": "harbour-hospital", "role": "contributor"}
    assert recipients(callbacks) == {"harbour-hospital-admin@example.org"}

    accepted = services.participation_accept(actor=scenario.b.admin, participation=invitation)
    assert accepted.status == Participation.Status.ACTIVE
    (event,) = events("participation.accepted")
    assert event.actor == scenario.b.admin
    assert event.payload["was"] == "invited"
    assert scenario.b.steward.has_perm("projects.register_dataset", problem)


def test_an_invitation_is_answered_by_the_invitees_admins_only(scenario):
    problem = scenario.propose()
    invitation = services.participation_invite(
        actor=scenario.a.admin,
        problem=problem,
        institution=scenario.b.institution,
        role="validator",
    )
    for actor in (scenario.a.admin, scenario.b.researcher, scenario.b.steward, scenario.c.admin):
        with pytest.raises(PermissionDenied):
            services.participation_accept(actor=actor, participation=invitation)
        with pytest.raises(PermissionDenied):
            services.participation_decline(actor=actor, participation=invitation)
    invitation.refresh_from_db()
    assert invitation.status == Participation.Status.INVITED


def test_invitee_admin_declines_an_invitation(scenario, django_capture_on_commit_callbacks):
    problem = scenario.propose()
    invitation = services.participation_invite(
        actor=scenario.a.admin,
        problem=problem,
        institution=scenario.b.institution,
        role="validator",
    )
    with django_capture_on_commit_callbacks() as callbacks:
        services.participation_decline(
            actor=scenario.b.admin, participation=invitation, reason="No capacity this year."
        )
    invitation.refresh_from_db()
    assert invitation.status == Participation.Status.DECLINED
    (event,) = events("participation.declined")
    assert event.actor == scenario.b.admin
    assert event.payload["was"] == "invited"
    assert recipients(callbacks) == {"north-hospital-admin@example.org"}


@pytest.mark.parametrize("actor", ["a.researcher", "b.admin", "a.steward"])
def test_only_the_proposers_admins_invite(scenario, outsider, actor):
    problem = scenario.propose()
    scenario.join()
    site, role = actor.split(".")
    with pytest.raises(PermissionDenied, match="proposing institution's admins"):
        services.participation_invite(
            actor=getattr(getattr(scenario, site), role),
            problem=problem,
            institution=outsider.institution,
            role="contributor",
        )
    assert not Participation.objects.filter(institution=outsider.institution).exists()


def test_only_admitted_institutions_are_invited(scenario):
    problem = scenario.propose()
    suspended = InstitutionFactory(
        slug="old-clinic", name="Old Clinic", status=Institution.Status.SUSPENDED
    )
    with pytest.raises(ApplicationError, match="Old Clinic is not an active member"):
        services.participation_invite(
            actor=scenario.a.admin, problem=problem, institution=suspended, role="contributor"
        )


# --- Duplicates --------------------------------------------------------------------------------


def test_duplicates_are_conflicts(scenario, outsider):
    problem = scenario.propose()
    scenario.join()
    services.participation_request(actor=outsider.admin, problem=problem, role="contributor")
    with pytest.raises(Conflict, match="already asked to join"):
        services.participation_request(actor=outsider.admin, problem=problem, role="validator")
    with pytest.raises(Conflict, match="already asked to join"):
        services.participation_invite(
            actor=scenario.a.admin,
            problem=problem,
            institution=outsider.institution,
            role="contributor",
        )
    with pytest.raises(Conflict, match="Harbour Hospital already takes part"):
        services.participation_invite(
            actor=scenario.a.admin,
            problem=problem,
            institution=scenario.b.institution,
            role="validator",
        )
    with pytest.raises(Conflict, match="Harbour Hospital already takes part"):
        services.participation_request(actor=scenario.b.admin, problem=problem, role="observer")
    with pytest.raises(Conflict, match="North Hospital already takes part"):
        services.participation_request(actor=scenario.a.admin, problem=problem, role="observer")
    with pytest.raises(Conflict, match="nothing to decide"):
        services.participation_accept(
            actor=scenario.a.admin, participation=scenario.participation(scenario.b)
        )
    assert len(events("participation.requested")) == 1


def test_an_invited_institution_cannot_also_ask(scenario, outsider):
    problem = scenario.propose()
    services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=outsider.institution, role="observer"
    )
    with pytest.raises(Conflict, match="already invited"):
        services.participation_request(actor=outsider.admin, problem=problem, role="contributor")
    with pytest.raises(Conflict, match="already invited"):
        services.participation_invite(
            actor=scenario.a.admin,
            problem=problem,
            institution=outsider.institution,
            role="contributor",
        )


# --- Leaving -----------------------------------------------------------------------------------


def test_the_proposer_cannot_leave(scenario):
    problem = scenario.propose()
    with pytest.raises(ApplicationError, match="cannot leave its own problem"):
        services.participation_leave(actor=scenario.a.admin, problem=problem)
    assert scenario.participation(scenario.a).status == Participation.Status.ACTIVE


def test_leaving_needs_an_admin_of_a_participant(scenario, outsider):
    problem = scenario.propose()
    scenario.join()
    with pytest.raises(PermissionDenied):
        services.participation_leave(actor=scenario.b.researcher, problem=problem)
    with pytest.raises(Conflict, match="does not take part"):
        services.participation_leave(actor=outsider.admin, problem=problem)
    assert not events("participation.left")


def test_a_contributor_leaves_and_its_data_is_excluded(ready, django_capture_on_commit_callbacks):
    config = RunConfig(model_family="logistic_regression", min_contributors=2)
    assert services.run_policy_check(problem=ready.problem, config=config).allowed
    with django_capture_on_commit_callbacks() as callbacks:
        left = services.participation_leave(
            actor=ready.b.admin, problem=ready.problem, reason="Our ethics approval ended."
        )
    assert left.status == Participation.Status.LEFT
    assert left.left_at is not None
    (event,) = events("participation.left")
    assert event.actor == ready.b.admin
    assert event.subject_institution == ready.b.institution
    assert event.payload == {
        "institution": "harbour-hospital",
        "role": "contributor",
        "reason": "Our ethics approval ended.",
    }
    # The remaining participants hear of it; the one that left does not.
    told = recipients(callbacks)
    assert "north-hospital-steward@example.org" in told
    assert "data-university-admin@example.org" in told
    assert not any(address.startswith("harbour-hospital") for address in told)

    problem = ready.refresh()
    assert problem.stage == Problem.Stage.RATIFIED  # one contributor left, two needed
    decision = services.run_policy_check(problem=problem, config=config)
    assert not decision.allowed
    assert [c.institution for c in decision.contributors] == [ready.a.institution]
    assert [(e.institution, e.reason) for e in decision.excluded] == [
        (ready.b.institution, "Harbour Hospital left the problem.")
    ]
    # B's people lose what they could do on the problem.
    assert not ready.b.steward.has_perm("projects.register_dataset", problem)
    assert not ready.b.researcher.has_perm("projects.ratify_problem", problem)


def test_a_departed_institution_may_ask_to_come_back(ready):
    services.participation_leave(actor=ready.b.admin, problem=ready.problem)
    again = services.participation_request(
        actor=ready.b.admin, problem=ready.problem, role="contributor"
    )
    assert again.status == Participation.Status.REQUESTED
    services.participation_accept(actor=ready.a.admin, participation=again)
    again.refresh_from_db()
    assert again.status == Participation.Status.ACTIVE
    assert again.left_at is None


def test_a_change_of_participants_judges_ratification_on_the_current_facts(scenario, outsider):
    """The page passes the problem it read; the ratification it judges is the one stored now."""
    problem = scenario.propose()
    scenario.join()
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=outsider.institution, role="observer"
    )
    services.participation_accept(actor=outsider.admin, participation=invitation)
    held = Problem.objects.get(pk=problem.pk)  # read before the last ratification
    scenario.ratify()
    assert len(events("problem.ratified")) == 1
    services.participation_leave(actor=outsider.admin, problem=held)
    assert len(events("problem.ratified")) == 1  # not announced a second time
    assert scenario.refresh().is_ratified
