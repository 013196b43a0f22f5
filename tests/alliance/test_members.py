import re

import pytest
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.urls import reverse
from guardian.shortcuts import get_perms

from alliance import services
from alliance.models import AuditEvent, Membership, Role
from alliance.services.members import invitation_url
from portal.common.errors import Conflict
from tests.conftest import after_commit_work
from tests.factories import member

pytestmark = pytest.mark.django_db


def test_admin_invites_a_colleague(admin_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        membership = services.member_invite(
            actor=admin_user, email="Dr.Chen@TNH.example.org", role=Role.DATA_STEWARD
        )
    assert membership.institution == admin_user.membership.institution
    assert membership.user.email == "dr.chen@tnh.example.org"
    assert membership.is_pending
    event = AuditEvent.objects.get(action="member.invited")
    assert event.actor == admin_user
    assert event.actor_institution == admin_user.membership.institution
    assert event.payload["role"] == Role.DATA_STEWARD
    assert len(after_commit_work(callbacks)) == 1


@pytest.mark.parametrize("role", [Role.DATA_STEWARD, Role.RESEARCHER, Role.VIEWER])
def test_only_admins_invite(institution, role):
    actor = member(role, institution)
    with pytest.raises(PermissionDenied):
        services.member_invite(actor=actor, email="x@example.org", role=Role.VIEWER)


def test_staff_without_institution_cannot_invite(staff):
    with pytest.raises(PermissionDenied):
        services.member_invite(actor=staff, email="x@example.org", role=Role.VIEWER)


def test_invitation_link_sets_password_once(client, admin_user):
    membership = services.member_invite(actor=admin_user, email="r@example.org", role="researcher")
    url = invitation_url(membership.user)
    path = re.sub(r"^https?://[^/]+", "", url)
    page = client.get(path)
    assert page.status_code == 200
    assert membership.user.username in page.content.decode()
    response = client.post(
        path, {"new_password1": "tumour-model-2026", "new_password2": "tumour-model-2026"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    membership.refresh_from_db()
    assert membership.joined_at is not None
    assert AuditEvent.objects.filter(action="member.joined", actor=membership.user).exists()
    client.logout()
    assert client.get(path).status_code == 400  # spent
    assert client.login(
        request=HttpRequest(), username=membership.user.username, password="tumour-model-2026"
    )


def test_invitation_link_with_bad_token_is_refused(client, admin_user):
    membership = services.member_invite(actor=admin_user, email="r@example.org", role="viewer")
    path = re.sub(r"^https?://[^/]+", "", invitation_url(membership.user))
    response = client.get(path[:-3] + "xyz/")
    assert response.status_code == 400
    assert b"no longer valid" in response.content


def test_role_change_moves_object_permissions(admin_user, institution):
    colleague = member(Role.RESEARCHER, institution)
    services.member_change_role(actor=admin_user, membership=colleague.membership, role="admin")
    assert "manage_members" in get_perms(colleague, institution)
    services.member_change_role(actor=admin_user, membership=colleague.membership, role="viewer")
    assert get_perms(colleague, institution) == []
    event = AuditEvent.objects.filter(action="member.role_changed").order_by("-seq").first()
    assert event.payload == {"username": colleague.username, "from": "admin", "to": "viewer"}


def test_last_admin_cannot_be_demoted_or_removed(admin_user):
    own = admin_user.membership
    with pytest.raises(Conflict, match="last admin"):
        services.member_change_role(actor=admin_user, membership=own, role="researcher")
    with pytest.raises(Conflict, match="last admin"):
        services.member_deactivate(actor=admin_user, membership=own)
    own.refresh_from_db()
    assert own.role == Role.ADMIN
    assert own.user.is_active


def test_deactivation_closes_access_and_keeps_history(client, admin_user, institution):
    colleague = member(Role.ADMIN, institution)
    services.member_deactivate(actor=admin_user, membership=colleague.membership)
    colleague.refresh_from_db()
    assert not colleague.is_active
    assert get_perms(colleague, institution) == []
    assert Membership.objects.filter(user=colleague).exists()
    assert not client.login(
        request=HttpRequest(), username=colleague.username, password="correct-horse-battery"
    )
    services.member_reactivate(actor=admin_user, membership=colleague.membership)
    assert "manage_members" in get_perms(colleague, institution)
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"member.deactivated", "member.reactivated"} <= actions


def test_admin_cannot_manage_another_institutions_people(admin_user, other_admin):
    target = other_admin.membership
    for act in (
        lambda: services.member_change_role(actor=admin_user, membership=target, role="viewer"),
        lambda: services.member_deactivate(actor=admin_user, membership=target),
    ):
        with pytest.raises(PermissionDenied):
            act()
    target.refresh_from_db()
    assert target.role == Role.ADMIN
    assert not AuditEvent.objects.exists()


def test_invitation_link_of_a_deactivated_person_is_refused(client, admin_user):
    membership = services.member_invite(actor=admin_user, email="gone@example.org", role="viewer")
    path = re.sub(r"^https?://[^/]+", "", invitation_url(membership.user))
    services.member_deactivate(actor=admin_user, membership=membership)
    assert client.get(path).status_code == 400
    response = client.post(
        path, {"new_password1": "x-long-pass-1", "new_password2": "x-long-pass-1"}
    )
    assert response.status_code == 400
    membership.user.refresh_from_db()
    assert not membership.user.has_usable_password()
