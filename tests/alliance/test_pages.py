import pytest
from django.urls import reverse

from alliance.models import AuditEvent, Institution, MembershipApplication, Role
from tests.factories import ApplicationFactory, InstitutionFactory, member

pytestmark = pytest.mark.django_db


def test_home_presents_members_by_sector(client, institution):
    InstitutionFactory(name="Metro Taipei", slug="metro-taipei", sector="transportation")
    InstitutionFactory(name="Applicant", slug="applicant", status="applied")
    page = client.get(reverse("home")).content.decode()
    assert "Taipei North Hospital" in page
    assert "Metro Taipei" in page
    assert "Transportation" in page
    assert "Applicant" not in page
    assert reverse("apply") in page


def test_home_speaks_traditional_chinese(client):
    page = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="zh-Hant").content.decode()
    assert "申請入會" in page


def test_apply_form_submits_an_application(client):
    response = client.post(
        reverse("apply"),
        {
            "name": "Taichung Medical Centre",
            "sector": "medicine",
            "country": "Taiwan",
            "contact_name": "Mei-Ling Wang",
            "contact_email": "mei-ling@tmc.example.org",
            "motivation": "Tumour models.",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("apply-thanks")
    assert MembershipApplication.objects.get().institution.name == "Taichung Medical Centre"


def test_apply_form_shows_errors_and_keeps_input(client, institution):
    response = client.post(
        reverse("apply"),
        {
            "name": institution.name,
            "sector": "medicine",
            "country": "Taiwan",
            "contact_name": "X",
            "contact_email": "not-an-email",
            "motivation": "",
        },
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Enter a valid email address." in body
    assert "This field is required." in body
    assert 'value="X"' in body
    assert not MembershipApplication.objects.exists()


def test_non_admitted_institution_is_invisible_to_outsiders(client, other_admin):
    hidden = InstitutionFactory(name="Suspended Co", slug="suspended-co", status="suspended")
    assert client.get(reverse("institution-detail", args=[hidden.slug])).status_code == 404
    client.force_login(other_admin)
    assert client.get(reverse("institution-detail", args=[hidden.slug])).status_code == 404
    insider = member(Role.VIEWER, hidden)
    client.force_login(insider)
    assert client.get(reverse("institution-detail", args=[hidden.slug])).status_code == 200


def test_profile_edit_only_by_own_admin(client, admin_user, other_admin, researcher, institution):
    url = reverse("institution-edit", args=[institution.slug])
    assert client.get(url).status_code == 302  # to the login page
    for outsider in (other_admin, researcher):
        client.force_login(outsider)
        assert client.get(url).status_code == 403
        assert client.post(url, {"country": "X", "sector": "finance"}).status_code == 403
    client.force_login(admin_user)
    response = client.post(
        url, {"sector": "medicine", "country": "Taiwan", "website": "", "description": "New."}
    )
    assert response.status_code == 302
    institution.refresh_from_db()
    assert institution.description == "New."
    assert institution.country == "Taiwan"


def test_people_page_shows_only_own_people(client, admin_user, researcher, other_admin):
    client.force_login(admin_user)
    page = client.get(reverse("my-institution")).content.decode()
    assert researcher.username in page
    assert other_admin.username not in page
    assert "Invite a colleague" in page


def test_non_admin_sees_people_but_cannot_invite(client, researcher):
    client.force_login(researcher)
    page = client.get(reverse("my-institution")).content.decode()
    assert "Invite a colleague" not in page
    response = client.post(reverse("my-institution"), {"email": "z@x.org", "role": "viewer"})
    assert "Only your institution" in response.content.decode()
    assert not AuditEvent.objects.filter(action="member.invited").exists()


def test_admin_invites_and_changes_roles_from_the_page(client, admin_user, researcher):
    client.force_login(admin_user)
    response = client.post(
        reverse("my-institution"), {"email": "new@tnh.example.org", "role": "data_steward"}
    )
    assert response.status_code == 302
    url = reverse("member-action", args=[researcher.membership.pk, "role"])
    client.post(url, {"role": "viewer"})
    researcher.membership.refresh_from_db()
    assert researcher.membership.role == Role.VIEWER
    own = reverse("member-action", args=[admin_user.membership.pk, "deactivate"])
    page = client.post(own, follow=True).content.decode()
    assert "last admin" in page


def test_member_actions_on_other_institution_are_404(client, admin_user, other_admin):
    client.force_login(admin_user)
    url = reverse("member-action", args=[other_admin.membership.pk, "deactivate"])
    assert client.post(url).status_code == 404
    other_admin.refresh_from_db()
    assert other_admin.is_active


def test_staff_overview_is_for_staff(client, staff, admin_user):
    ApplicationFactory(institution__name="Keelung Port", institution__slug="keelung-port")
    client.force_login(admin_user)
    assert client.get(reverse("staff-overview")).status_code == 403
    client.force_login(staff)
    page = client.get(reverse("staff-overview")).content.decode()
    assert "Keelung Port" in page
    assert "applications waiting" in page


def test_staff_approves_from_the_console(client, staff):
    staff.is_superuser = True
    staff.save()
    application = ApplicationFactory()
    client.force_login(staff)
    response = client.post(
        reverse("admin:alliance_membershipapplication_changelist"),
        {"action": "approve", "_selected_action": [application.pk]},
        follow=True,
    )
    assert response.status_code == 200
    application.refresh_from_db()
    assert application.status == "approved"
    assert application.institution.status == Institution.Status.ADMITTED


def test_console_rejection_asks_for_a_reason_first(client, staff):
    staff.is_superuser = True
    staff.save()
    application = ApplicationFactory()
    client.force_login(staff)
    url = reverse("admin:alliance_membershipapplication_changelist")
    ask = client.post(url, {"action": "reject", "_selected_action": [application.pk]})
    assert ask.status_code == 200
    assert b"Reason" in ask.content
    application.refresh_from_db()
    assert application.status == "pending"
    client.post(
        url,
        {
            "action": "reject",
            "_selected_action": [application.pk],
            "confirm": "yes",
            "reason": "Not eligible.",
        },
    )
    application.refresh_from_db()
    assert application.status == "rejected"
    assert application.decision_reason == "Not eligible."


def test_console_suspends_with_a_reason(client, staff, institution):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    client.post(
        reverse("admin:alliance_institution_changelist"),
        {
            "action": "suspend",
            "_selected_action": [institution.pk],
            "confirm": "yes",
            "reason": "Breach.",
        },
    )
    institution.refresh_from_db()
    assert institution.status == Institution.Status.SUSPENDED
    assert institution.status_reason == "Breach."


def test_audit_page_lists_own_events(client, admin_user, other_admin):
    from alliance import services

    services.member_invite(actor=admin_user, email="mine@x.org", role="viewer")
    services.member_invite(actor=other_admin, email="theirs@x.org", role="viewer")
    client.force_login(admin_user)
    page = client.get(reverse("audit-list")).content.decode()
    assert "member.invited" in page
    assert "mine" in page
    assert "theirs" not in page


def test_login_and_logout(client, admin_user):
    response = client.post(
        reverse("login"), {"username": admin_user.username, "password": "correct-horse-battery"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert client.get(reverse("dashboard")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("dashboard")).status_code == 302


def test_password_reset_sends_a_link(client, admin_user, mailoutbox):
    response = client.post(reverse("password_reset"), {"email": admin_user.email})
    assert response.status_code == 302
    assert len(mailoutbox) == 1
    assert "/accounts/reset/" in mailoutbox[0].body
