"""Withdrawing an open request or invitation: by the asking side only, on every surface."""

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import reverse

from alliance.models import AuditEvent
from portal.common.errors import Conflict
from projects import services
from projects.models import Participation, Problem
from projects.permissions import access_problem
from tests.projects.scenario import make_site
from tests.projects.test_participation import recipients

pytestmark = pytest.mark.django_db


@pytest.fixture
def outsider(db):
    return make_site("east-clinic", "East Clinic")


def test_requester_withdraws_its_request_and_the_proposer_is_told(
    scenario, outsider, django_capture_on_commit_callbacks
):
    problem = scenario.propose()
    request = services.participation_request(
        actor=outsider.admin, problem=problem, role="contributor"
    )
    with pytest.raises(PermissionDenied):  # the proposer decides; it does not withdraw
        services.participation_withdraw(actor=scenario.a.admin, participation=request)
    with django_capture_on_commit_callbacks() as callbacks:
        withdrawn = services.participation_withdraw(actor=outsider.admin, participation=request)
    assert withdrawn.status == Participation.Status.WITHDRAWN
    (event,) = AuditEvent.objects.filter(action="participation.withdrawn")
    assert event.actor == outsider.admin
    assert event.payload == {"institution": "east-clinic", "was": "requested"}
    assert recipients(callbacks) == {"north-hospital-admin@example.org"}
    with pytest.raises(Conflict):  # nothing open any more
        services.participation_withdraw(actor=outsider.admin, participation=request)
    # and it may ask again later
    again = services.participation_request(actor=outsider.admin, problem=problem, role="observer")
    assert again.pk == request.pk and again.status == Participation.Status.REQUESTED


def test_proposer_withdraws_an_invitation_and_the_invitee_loses_sight_of_a_private_problem(
    scenario, outsider, django_capture_on_commit_callbacks
):
    problem = scenario.propose(visibility=Problem.Visibility.INVITATION)
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=outsider.institution, role="validator"
    )
    assert access_problem(outsider.researcher, problem.slug) == problem
    for refused in (outsider.admin, scenario.a.researcher):
        with pytest.raises(PermissionDenied):
            services.participation_withdraw(actor=refused, participation=invitation)
    with django_capture_on_commit_callbacks() as callbacks:
        services.participation_withdraw(actor=scenario.a.admin, participation=invitation)
    assert recipients(callbacks) == {"east-clinic-admin@example.org"}
    with pytest.raises(Http404):
        access_problem(outsider.researcher, problem.slug)


def test_an_active_participation_cannot_be_withdrawn(ready):
    with pytest.raises(Conflict):
        services.participation_withdraw(
            actor=ready.a.admin, participation=ready.participation(ready.b)
        )


def test_withdraw_on_the_page(scenario, outsider, client):
    problem = scenario.propose()
    invitation = services.participation_invite(
        actor=scenario.a.admin, problem=problem, institution=outsider.institution, role="observer"
    )
    client.force_login(scenario.a.admin)
    page = client.get(problem.get_absolute_url()).content.decode()
    assert "Withdraw the invitation" in page
    response = client.post(
        reverse("participation-action", args=[problem.slug, "withdraw"]),
        {"participation": invitation.pk},
        follow=True,
    )
    assert "no longer has an open request or invitation" in response.content.decode()
    invitation.refresh_from_db()
    assert invitation.status == Participation.Status.WITHDRAWN


def test_withdraw_through_the_api(scenario, outsider, api_as):
    problem = scenario.propose()
    services.participation_request(actor=outsider.admin, problem=problem, role="contributor")
    url = reverse("api:problem-participant-withdraw", args=[problem.slug, "east-clinic"])
    assert api_as(None).post(url).status_code in (401, 403)
    assert api_as(scenario.a.admin).post(url).status_code == 403
    response = api_as(outsider.admin).post(url)
    assert response.status_code == 200
    assert response.json()["status"] == "withdrawn"
    assert api_as(outsider.admin).post(url).status_code == 409
