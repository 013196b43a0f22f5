"""The audit trail reads as sentences: named actors, translated actions and targets, details
on their own row. Stored events are never changed for it."""

import re

import pytest
from django.db import transaction
from django.test import override_settings
from django.urls import reverse

from alliance import audit_display
from alliance.models import AuditEvent
from alliance.services.audit import audit_record, audit_verify
from tests.factories import InstitutionFactory, StaffFactory

pytestmark = pytest.mark.django_db


def _event(*, actor=None, action: str, target=None, subject=None, payload=None) -> AuditEvent:
    with transaction.atomic():
        return audit_record(
            actor=actor,
            action=action,
            target=target,
            subject_institution=subject,
            payload=payload or {},
        )


def _row(page: str, event: AuditEvent) -> str:
    """The event's main row and its details row, as text."""
    found = re.search(
        rf'<tr id="event-{event.seq}" class="event">(.*?)</tr>\s*'
        rf'<tr class="event-details" id="event-{event.seq}-details">(.*?)</tr>',
        page,
        re.DOTALL,
    )
    assert found, f"event {event.seq} has no row and details row"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1) + found.group(2)))


@pytest.fixture
def staff_client(client):
    client.force_login(StaffFactory())
    return client


def test_the_coordinators_events_name_it_and_visitors_stay_as_they_are(staff_client):
    hospital = InstitutionFactory(name="North Hospital", slug="north-hospital")
    round_closed = _event(
        action="round.closed",
        target=hospital,
        payload={"round": 2, "contributed": ["north-hospital"]},
    )
    applied = _event(action="application.submitted", target=hospital)
    hashes = {e.seq: e.hash for e in (round_closed, applied)}

    page = staff_client.get(reverse("audit-list")).content.decode()

    closed = _row(page, round_closed)
    assert "Coordinator" in closed and "system or visitor" not in closed
    assert "Round closed" in closed and "round.closed" in closed
    # A site named in the payload reads as its institution, not its slug.
    assert "contributed North Hospital" in closed
    assert "system or visitor" in _row(page, applied)
    # Nothing stored changed: the chain still holds, hashes as written.
    assert {e.seq: e.hash for e in AuditEvent.objects.all()} == hashes
    assert audit_verify().ok


def test_a_person_is_named_with_their_institution(staff_client, admin_user, institution):
    event = _event(actor=admin_user, action="institution.updated", target=institution)
    page = staff_client.get(reverse("audit-list")).content.decode()
    text = _row(page, event)
    assert "mei-ling (Taipei North Hospital)" in text
    assert "Institution profile updated" in text


def test_a_sites_own_event_names_the_site():
    audit_display.register_actions({}, site=["site.test_reported"])
    hospital = InstitutionFactory(name="Harbour Hospital")
    event = _event(action="site.test_reported", subject=hospital)
    actor = audit_display.actor_of(event)
    assert (actor.kind, actor.name) == (audit_display.SITE, "Site of Harbour Hospital")


def test_targets_and_actions_read_in_the_readers_language(staff_client):
    from projects.services.runs import LaunchConfig, run_launch
    from tests.projects.scenario import build_scenario

    ready = build_scenario().ready()
    run = run_launch(actor=ready.a.researcher, problem=ready.refresh(), config=LaunchConfig())
    closed = _event(action="round.closed", target=run, payload={"round": 1})
    assert closed.target_label == "Tumour malignancy from biopsy features run 1"

    page = staff_client.get(reverse("audit-list")).content.decode()
    english = _row(page, closed)
    assert "Run 1 of “Tumour malignancy from biopsy features”" in english
    assert "Training run" in english
    assert "projects.trainingrun 1" not in english.split("Details of event")[0]

    response = staff_client.get(reverse("audit-list"), HTTP_ACCEPT_LANGUAGE="zh-hant")
    chinese = _row(response.content.decode(), closed)
    assert "協調者" in chinese
    assert "回合結束" in chinese
    assert "「Tumour malignancy from biopsy features」的訓練任務 1" in chinese
    assert "Training run" not in chinese


def test_every_event_has_its_details_on_a_row_of_its_own(staff_client, institution):
    event = _event(action="member.invited", target=institution, payload={"role": "viewer"})
    quiet = _event(action="member.joined", target=institution)
    page = staff_client.get(reverse("audit-list")).content.decode()
    assert "Details of event" in _row(page, event)
    assert "role viewer" in _row(page, event)
    assert "This event records no further details." in _row(page, quiet)


def test_an_unknown_action_and_target_read_as_stored():
    assert audit_display.action_label("something.new") == "something.new"
    assert audit_display.target_text("projects.trainingrun", "odd label") == "odd label"
    assert audit_display.target_type_label("nowhere.thing") == "nowhere.thing"


@override_settings(LANGUAGE_CODE="en")
def test_the_action_filter_offers_labels_and_keeps_codes(staff_client, institution):
    _event(action="institution.updated", target=institution)
    page = staff_client.get(reverse("audit-list")).content.decode()
    assert '<option value="institution.updated"' in page
    assert "Institution profile updated (institution.updated)" in page
