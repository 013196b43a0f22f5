import pytest
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.urls import reverse

from alliance import services
from alliance.models import AuditEvent, Institution, Role
from portal.common.errors import ApplicationError, Conflict
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_suspension_needs_staff_and_a_reason(staff, admin_user, institution):
    with pytest.raises(PermissionDenied):
        services.institution_suspend(actor=admin_user, institution=institution, reason="x")
    with pytest.raises(ApplicationError, match="reason"):
        services.institution_suspend(actor=staff, institution=institution, reason="")
    institution.refresh_from_db()
    assert institution.status == Institution.Status.ADMITTED


def test_suspended_institution_logs_in_but_cannot_act(client, staff, admin_user, institution):
    services.institution_suspend(actor=staff, institution=institution, reason="Unpaid dues.")
    institution.refresh_from_db()
    assert institution.status == Institution.Status.SUSPENDED
    event = AuditEvent.objects.get(action="institution.suspended")
    assert event.payload["reason"] == "Unpaid dues."

    assert client.login(request=HttpRequest(), username=admin_user.username, password=PASSWORD)
    page = client.get(reverse("my-institution"))
    assert page.status_code == 200
    assert "cannot act" in page.content.decode() or "not act" in page.content.decode()
    with pytest.raises(PermissionDenied, match="suspended"):
        services.member_invite(actor=admin_user, email="n@example.org", role=Role.VIEWER)
    response = client.post(reverse("my-institution"), {"email": "n@example.org", "role": "viewer"})
    assert response.status_code == 200
    assert "suspended" in response.content.decode()
    assert not AuditEvent.objects.filter(action="member.invited").exists()

    services.institution_reinstate(actor=staff, institution=institution)
    membership = services.member_invite(actor=admin_user, email="n@example.org", role="viewer")
    assert membership.pk


def test_reinstate_only_a_suspended_institution(staff, institution):
    with pytest.raises(Conflict, match="admitted"):
        services.institution_reinstate(actor=staff, institution=institution)


def test_admin_updates_own_profile_and_it_is_audited(admin_user, institution):
    services.institution_update(
        actor=admin_user, institution=institution, description="Oncology centre."
    )
    institution.refresh_from_db()
    assert institution.description == "Oncology centre."
    event = AuditEvent.objects.get(action="institution.updated")
    assert event.payload["changed"]["description"]["to"] == "Oncology centre."


def test_profile_update_refuses_other_institutions_and_other_roles(
    admin_user, steward, other_institution, institution
):
    with pytest.raises(PermissionDenied):
        services.institution_update(actor=admin_user, institution=other_institution, country="X")
    with pytest.raises(PermissionDenied):
        services.institution_update(actor=steward, institution=institution, country="X")
    with pytest.raises(ApplicationError, match="status"):
        services.institution_update(actor=admin_user, institution=institution, status="admitted")


def test_withdrawal_by_own_admin(admin_user, other_admin, institution):
    with pytest.raises(PermissionDenied):
        services.institution_withdraw(actor=other_admin, institution=institution)
    services.institution_withdraw(actor=admin_user, institution=institution, reason="Merger.")
    institution.refresh_from_db()
    assert institution.status == Institution.Status.WITHDRAWN
    assert AuditEvent.objects.filter(action="institution.withdrawn").exists()
