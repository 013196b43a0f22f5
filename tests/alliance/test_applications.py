import pytest
from django.core.exceptions import PermissionDenied
from guardian.shortcuts import get_perms

from alliance import services
from alliance.models import AuditEvent, Institution, MembershipApplication, Role
from portal.common.errors import ApplicationError, Conflict
from tests.conftest import after_commit_work
from tests.factories import ApplicationFactory, UserFactory

pytestmark = pytest.mark.django_db

FORM = {
    "name": "Taichung Medical Centre",
    "sector": "medicine",
    "country": "Taiwan",
    "contact_name": "Mei-Ling Wang",
    "contact_email": "Mei-Ling@TMC.example.org",
    "motivation": "Tumour models with other hospitals.",
}


def test_submit_creates_applied_institution_and_audits(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        application = services.application_submit(actor=None, **FORM)
    assert application.status == MembershipApplication.Status.PENDING
    assert application.contact_email == "mei-ling@tmc.example.org"
    assert application.institution.status == Institution.Status.APPLIED
    assert application.institution.slug == "taichung-medical-centre"
    event = AuditEvent.objects.get(action="application.submitted")
    assert event.subject_institution == application.institution
    assert event.actor is None
    assert len(after_commit_work(callbacks)) == 1  # the acknowledgement email, sent after commit


def test_refuses_second_application_while_one_is_pending():
    services.application_submit(actor=None, **FORM)
    with pytest.raises(Conflict, match="already applied"):
        services.application_submit(actor=None, **{**FORM, "contact_email": "b@tmc.example.org"})
    assert MembershipApplication.objects.count() == 1


def test_refuses_application_from_email_with_an_account():
    UserFactory(email="mei-ling@tmc.example.org")
    with pytest.raises(Conflict, match="already has an account"):
        services.application_submit(actor=None, **FORM)
    assert not Institution.objects.exists()


def test_refuses_invalid_sector_without_leaving_anything():
    with pytest.raises(Exception) as info:
        services.application_submit(actor=None, **{**FORM, "sector": "astrology"})
    assert "sector" in str(info.value)
    assert not Institution.objects.exists()
    assert not AuditEvent.objects.exists()


def test_approval_admits_and_invites_contact_as_admin(staff, django_capture_on_commit_callbacks):
    application = ApplicationFactory(contact_email="mei-ling@tmc.example.org")
    with django_capture_on_commit_callbacks() as callbacks:
        membership = services.application_approve(actor=staff, application=application)
    application.refresh_from_db()
    institution = application.institution
    institution.refresh_from_db()
    assert application.status == MembershipApplication.Status.APPROVED
    assert application.reviewed_by == staff
    assert institution.status == Institution.Status.ADMITTED
    assert institution.admitted_at is not None
    user = membership.user
    assert membership.role == Role.ADMIN
    assert user.username == "mei-ling"
    assert not user.has_usable_password()
    assert set(get_perms(user, institution)) == {"change_institution", "manage_members"}
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions == ["application.approved", "institution.admitted", "member.invited"]
    assert len(after_commit_work(callbacks)) == 1  # the invitation


def test_approval_is_for_staff_only(admin_user):
    application = ApplicationFactory()
    with pytest.raises(PermissionDenied):
        services.application_approve(actor=admin_user, application=application)
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.PENDING


def test_an_application_is_decided_once(staff):
    application = ApplicationFactory()
    services.application_approve(actor=staff, application=application)
    with pytest.raises(Conflict, match="already approved"):
        services.application_reject(actor=staff, application=application, reason="late")
    with pytest.raises(Conflict):
        services.application_approve(actor=staff, application=application)


def test_rejection_needs_a_reason(staff):
    application = ApplicationFactory()
    with pytest.raises(ApplicationError, match="reason"):
        services.application_reject(actor=staff, application=application, reason="  ")
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.PENDING


def test_rejection_records_reason_and_tells_applicant(staff, django_capture_on_commit_callbacks):
    application = ApplicationFactory()
    with django_capture_on_commit_callbacks() as callbacks:
        services.application_reject(
            actor=staff, application=application, reason="Not a legal entity."
        )
    application.refresh_from_db()
    assert application.status == MembershipApplication.Status.REJECTED
    assert application.decision_reason == "Not a legal entity."
    assert application.institution.status == Institution.Status.REJECTED
    event = AuditEvent.objects.get(action="application.rejected")
    assert event.payload["reason"] == "Not a legal entity."
    assert len(after_commit_work(callbacks)) == 1


def test_rejected_institution_may_apply_again(staff):
    first = services.application_submit(actor=None, **FORM)
    services.application_reject(actor=staff, application=first, reason="Incomplete.")
    second = services.application_submit(actor=None, **FORM)
    assert second.institution_id == first.institution_id
    assert second.institution.status == Institution.Status.APPLIED


def test_a_name_in_chinese_characters_gets_an_ascii_slug(staff):
    application = services.application_submit(actor=None, **{**FORM, "name": "臺中榮民總醫院"})
    assert application.institution.name == "臺中榮民總醫院"
    assert application.institution.slug.startswith("member-")
    services.application_reject(actor=staff, application=application, reason="Duplicate.")
    again = services.application_submit(actor=None, **{**FORM, "name": "臺中榮民總醫院"})
    assert again.institution_id == application.institution_id
