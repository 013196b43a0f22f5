"""Joining, end to end through a real Celery worker delivering the emails.

Application on the public page -> approval in the staff console -> invitation email sent by the
worker -> the contact sets a password -> invites a researcher -> who sets theirs.
"""

import re

import pytest
from django.test import Client
from django.urls import reverse

from alliance import services
from alliance.models import AuditEvent, Institution, MembershipApplication
from tests.conftest import wait_for
from tests.factories import StaffFactory

pytestmark = [pytest.mark.worker]

LINK = re.compile(r"https?://[^/\s]+(/invitation/[^\s]+/)")


def _email_to(outbox: list, address: str, subject_part: str):
    def find():
        for message in outbox:
            if address in message.to and subject_part in message.subject:
                return message
        return None

    return wait_for(find, timeout=30, what=f"email '{subject_part}' to {address}")


def _accept(link_path: str, password: str) -> Client:
    browser = Client()
    assert browser.get(link_path).status_code == 200
    response = browser.post(link_path, {"new_password1": password, "new_password2": password})
    assert response.status_code == 302, response.content
    assert response["Location"] == reverse("dashboard")
    return browser


def test_application_to_invited_researcher(celery_worker, outbox):
    staff = StaffFactory(username="wei", is_superuser=True)
    visitor = Client()
    response = visitor.post(
        reverse("apply"),
        {
            "name": "Taichung Medical Centre",
            "sector": "medicine",
            "country": "Taiwan",
            "contact_name": "Mei-Ling Wang",
            "contact_email": "mei-ling@tmc.example.org",
            "motivation": "Tumour malignancy models with other hospitals.",
        },
    )
    assert response.status_code == 302
    _email_to(outbox, "mei-ling@tmc.example.org", "We received the application")

    console = Client()
    console.force_login(staff)
    application = MembershipApplication.objects.get()
    console.post(
        reverse("admin:alliance_membershipapplication_changelist"),
        {"action": "approve", "_selected_action": [application.pk]},
    )
    invitation = _email_to(outbox, "mei-ling@tmc.example.org", "You are invited")
    assert "Username: mei-ling" in invitation.body or "username: mei-ling" in invitation.body
    mei_ling = _accept(LINK.search(invitation.body).group(1), "tumour-model-2026")
    assert Institution.objects.get(slug="taichung-medical-centre").status == "admitted"

    response = mei_ling.post(
        reverse("my-institution"),
        {"email": "yu-ting@tmc.example.org", "role": "researcher", "first_name": "Yu-Ting"},
    )
    assert response.status_code == 302
    invitation = _email_to(outbox, "yu-ting@tmc.example.org", "You are invited")
    yu_ting = _accept(LINK.search(invitation.body).group(1), "federated-2026!")
    dashboard = yu_ting.get(reverse("dashboard")).content.decode()
    assert "Taichung Medical Centre" in dashboard
    assert "Researcher" in dashboard

    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions == [
        "application.submitted",
        "application.approved",
        "institution.admitted",
        "member.invited",
        "member.joined",
        "member.invited",
        "member.joined",
    ]
    assert services.audit_verify().ok
