"""Staff review an application on its own page: Approve, or Reject with a reason."""

import pytest
from django.urls import reverse

from alliance.models import AuditEvent, Institution, MembershipApplication
from tests.factories import ApplicationFactory, StaffFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def application():
    return ApplicationFactory(institution__name="Keelung Port Authority")


@pytest.fixture
def console(client):
    client.force_login(StaffFactory(username="wei", is_superuser=True))
    return client


def _page(application) -> str:
    return reverse("admin:alliance_membershipapplication_change", args=[application.pk])


def test_the_review_page_has_approve_and_reject_and_no_save(console, application):
    page = console.get(_page(application)).content.decode()
    approve = reverse("admin:alliance_membershipapplication_approve", args=[application.pk])
    reject = reverse("admin:alliance_membershipapplication_reject", args=[application.pk])
    assert f'formaction="{approve}" value="Approve"' in page
    assert f'href="{reject}">Reject…</a>' in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page


def test_approve_admits_and_invites_from_the_review_page(console, application, outbox):
    url = reverse("admin:alliance_membershipapplication_approve", args=[application.pk])
    response = console.post(url, follow=True)
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.APPROVED
    assert application.institution.status == Institution.Status.ADMITTED
    assert response.redirect_chain[-1][0] == _page(application)
    page = response.content.decode()
    assert f"Keelung Port Authority is admitted. {application.contact_email} is invited" in page
    assert AuditEvent.objects.filter(action="application.approved").count() == 1
    # Decided: the buttons are gone.
    assert 'value="Approve"' not in page


def test_reject_asks_for_the_reason_then_rejects(console, application):
    url = reverse("admin:alliance_membershipapplication_reject", args=[application.pk])
    page = console.get(url).content.decode()
    assert "receives an email with the reason you give here" in page
    assert 'name="reason"' in page
    console.post(url, {"reason": ""})
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.PENDING
    response = console.post(url, {"reason": "Outside the alliance's sectors."}, follow=True)
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.REJECTED
    assert application.decision_reason == "Outside the alliance's sectors."
    assert "the applicant is told why" in response.content.decode()


def test_approve_needs_a_post_and_a_decision_refused_is_explained(console, application):
    url = reverse("admin:alliance_membershipapplication_approve", args=[application.pk])
    console.get(url)
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.PENDING
    console.post(url)
    page = console.post(url, follow=True).content.decode()
    assert "This application was already approved." in page


def test_members_cannot_reach_the_review_actions(client, application, researcher):
    client.force_login(researcher)
    url = reverse("admin:alliance_membershipapplication_approve", args=[application.pk])
    response = client.post(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.PENDING


def test_an_unknown_application_is_not_found(console):
    url = reverse("admin:alliance_membershipapplication_reject", args=[999999])
    assert console.get(url).status_code == 404
