"""The audit trail explorer: filters, cursor pages, exports, the chain badge and its checkpoint."""

import csv
import io
import json
from datetime import UTC, timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alliance.models import AuditCheckpoint, AuditEvent
from alliance.models.audit import GENESIS_HASH
from alliance.services.audit import audit_chain_status, audit_record, audit_verify
from tests.factories import InstitutionFactory

pytestmark = pytest.mark.django_db

URL = reverse("audit-list")


def _record(n: int, *, actor=None, action="test.happened", target=None, subject=None) -> list:
    with transaction.atomic():
        return [
            audit_record(
                actor=actor,
                action=action,
                target=target,
                subject_institution=subject,
                payload={"i": i, "note": "數據"},
            )
            for i in range(n)
        ]


def _bulk(n: int, *, actor=None, action: str = "test.happened", target=None) -> None:
    """Append ``n`` valid links at once: audit_record writes one by one, too slow for 600."""
    last = AuditEvent.objects.order_by("-seq").first()
    seq, prev = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    membership = getattr(actor, "membership", None)
    now = timezone.now()
    events = []
    for i in range(n):
        seq += 1
        event = AuditEvent(
            seq=seq,
            created_at=now,
            actor=actor,
            actor_username=actor.username if actor else "",
            actor_institution_id=membership.institution_id if membership else None,
            subject_institution=target,
            action=action,
            target_type=target._meta.label_lower if target else "",
            target_id=str(target.pk) if target else "",
            target_label=str(target) if target else "",
            payload={"i": i},
            prev_hash=prev,
        )
        event.hash = prev = event.compute_hash()
        events.append(event)
    # The model's manager refuses bulk inserts; a plain queryset is the test's back door.
    QuerySet(model=AuditEvent).bulk_create(events)


def _raw(sql: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


def _seqs(response) -> list[int]:
    return [event.seq for event in response.context["page"].events]


@pytest.fixture
def trail(admin_user, other_admin, institution, other_institution):
    """Events by two institutions, about two targets, with three actions."""
    _record(2, actor=admin_user, action="member.invited", target=institution)  # 1, 2
    _record(2, actor=other_admin, action="member.invited", target=other_institution)  # 3, 4
    _record(1, actor=other_admin, action="institution.updated", subject=institution)  # 5
    _record(1, actor=None, action="run.launched", target=other_institution)  # 6
    return AuditEvent.objects.count()


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


# Filters ---------------------------------------------------------------------------------------


def test_staff_see_every_event_newest_first(staff_client, trail):
    response = staff_client.get(URL)
    assert response.status_code == 200
    assert _seqs(response) == [6, 5, 4, 3, 2, 1]


def test_filters_by_institution_as_actor_or_subject(staff_client, trail, institution):
    response = staff_client.get(URL, {"institution": institution.slug})
    assert _seqs(response) == [5, 2, 1]  # 5: done by another institution, about this one


def test_filters_by_actor(staff_client, trail, other_admin):
    response = staff_client.get(URL, {"actor": other_admin.username})
    assert _seqs(response) == [5, 4, 3]


def test_filters_by_action_from_the_known_actions(staff_client, trail):
    response = staff_client.get(URL, {"action": "run.launched"})
    assert _seqs(response) == [6]
    page = response.content.decode()
    for action in ("institution.updated", "member.invited", "run.launched"):
        assert f'<option value="{action}"' in page


def test_filters_by_target_type_and_id(staff_client, trail, other_institution):
    response = staff_client.get(
        URL, {"target_type": "alliance.institution", "target_id": str(other_institution.pk)}
    )
    assert _seqs(response) == [6, 4, 3]


def test_filters_by_target_name(staff_client, trail):
    response = staff_client.get(URL, {"target": "harbour"})
    assert _seqs(response) == [6, 4, 3]


def test_filters_by_date_range(staff_client, trail):
    today = timezone.localdate()
    assert _seqs(staff_client.get(URL, {"date_from": today, "date_to": today})) == [
        6,
        5,
        4,
        3,
        2,
        1,
    ]
    tomorrow = today + timedelta(days=1)
    response = staff_client.get(URL, {"date_from": tomorrow})
    assert _seqs(response) == []
    assert "No event matches these filters." in response.content.decode()
    assert _seqs(staff_client.get(URL, {"date_to": today - timedelta(days=1)})) == []


def test_a_run_page_link_narrows_to_that_run(staff_client, admin_user, institution):
    _record(3, actor=admin_user)
    # A run is only a target type and id to the explorer: the alliance app knows no runs.
    _raw(
        "UPDATE alliance_auditevent SET target_type = 'projects.trainingrun', target_id = '7' "
        "WHERE seq = 2"
    )
    response = staff_client.get(URL + "?target_type=projects.trainingrun&target_id=7")
    assert _seqs(response) == [2]


@pytest.mark.parametrize(
    "params",
    [
        {"institution": "no-such-institution"},
        {"action": "no.such.action"},
        {"target_type": "DROP TABLE"},
        {"date_from": "yesterday"},
        {"date_to": "2026-13-45"},
        {"date_from": "2026-05-02", "date_to": "2026-05-01"},
        {"before": "abc"},
        {"after": "-4"},
        {"before": "3", "after": "1"},
        {"actor": "x" * 200},
    ],
)
def test_bad_filter_values_answer_400_with_a_message(staff_client, trail, params):
    response = staff_client.get(URL, params)
    assert response.status_code == 400
    page = response.content.decode()
    assert "Some filters are not valid" in page
    assert 'class="msg error"' in page
    export = staff_client.get(reverse("audit-export", args=["json"]), params)
    assert export.status_code == 400
    assert export.content.decode().startswith("Invalid filter")


def test_unknown_export_format_is_not_found(staff_client, trail):
    assert staff_client.get(reverse("audit-export", args=["xml"])).status_code == 404


# Cursor pages ----------------------------------------------------------------------------------


def test_cursor_pages_both_ways(staff_client):
    _bulk(120)
    first = staff_client.get(URL)
    assert _seqs(first) == list(range(120, 70, -1))
    page = first.context["page"]
    assert page.newer_after is None
    assert page.older_before == 71
    second = staff_client.get(URL, {"before": 71})
    assert _seqs(second) == list(range(70, 20, -1))
    assert second.context["page"].newer_after == 70
    last = staff_client.get(URL, {"before": 21})
    assert _seqs(last) == list(range(20, 0, -1))
    assert last.context["page"].older_before is None
    back = staff_client.get(URL, {"after": 20})
    assert _seqs(back) == list(range(70, 20, -1))
    assert back.context["page"].newer_after == 70
    assert back.context["page"].older_before == 21
    top = staff_client.get(URL, {"after": 70})
    assert _seqs(top) == list(range(120, 70, -1))
    assert top.context["page"].newer_after is None
    html = second.content.decode()
    assert "after=70" in html and "before=21" in html


def test_cursor_links_keep_the_filters(staff_client, admin_user):
    _bulk(60, actor=admin_user, action="member.invited")
    _bulk(60, action="run.launched")
    response = staff_client.get(URL, {"action": "member.invited"})
    assert _seqs(response) == list(range(60, 10, -1))
    assert "action=member.invited&amp;before=11" in response.content.decode()
    older = staff_client.get(URL, {"action": "member.invited", "before": 11})
    assert _seqs(older) == list(range(10, 0, -1))


def test_a_page_past_the_end_says_what_to_do(staff_client):
    _record(3)
    response = staff_client.get(URL, {"after": 99})
    assert response.status_code == 200
    assert "Go to the newest events." in response.content.decode()


# Exports ---------------------------------------------------------------------------------------


def _body(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_exports_the_filtered_events_as_json(staff_client, trail, institution):
    response = staff_client.get(
        reverse("audit-export", args=["json"]), {"institution": institution.slug}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    rows = json.loads(_body(response))
    assert [row["seq"] for row in rows] == [1, 2, 5]  # chain order
    event = AuditEvent.objects.get(seq=5)
    assert rows[2]["hash"] == event.hash
    assert rows[2]["prev_hash"] == AuditEvent.objects.get(seq=4).hash
    assert rows[2]["subject_institution"] == institution.slug
    assert rows[2]["action"] == "institution.updated"
    assert rows[2]["payload"] == {"i": 0, "note": "數據"}
    assert rows[0]["prev_hash"] == GENESIS_HASH


def test_exported_rows_carry_what_the_hash_covers(staff_client, trail):
    rows = json.loads(_body(staff_client.get(reverse("audit-export", args=["json"]))))
    for row in rows:
        event = AuditEvent(
            seq=row["seq"],
            created_at=AuditEvent.objects.get(seq=row["seq"]).created_at,
            actor_id=row["actor_id"],
            actor_username=row["actor"],
            actor_institution_id=row["actor_institution_id"],
            subject_institution_id=row["subject_institution_id"],
            action=row["action"],
            target_type=row["target_type"],
            target_id=row["target_id"],
            target_label=row["target_label"],
            payload=row["payload"],
            prev_hash=row["prev_hash"],
        )
        assert event.compute_hash() == row["hash"]
        stamp = event.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert row["created_at"] == stamp


def test_exports_the_filtered_events_as_csv(staff_client, trail, other_admin):
    response = staff_client.get(
        reverse("audit-export", args=["csv"]), {"actor": other_admin.username}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    assert [int(row["seq"]) for row in rows] == [3, 4, 5]
    assert {row["actor"] for row in rows} == {other_admin.username}
    assert rows[0]["hash"] == AuditEvent.objects.get(seq=3).hash
    assert rows[0]["prev_hash"] == AuditEvent.objects.get(seq=2).hash
    assert json.loads(rows[0]["payload"]) == {"i": 0, "note": "數據"}
    for column in ("seq", "created_at", "actor", "action", "target_type", "payload", "hash"):
        assert column in rows[0]


def test_export_of_nothing_is_an_empty_list(staff_client, trail):
    response = staff_client.get(reverse("audit-export", args=["json"]), {"action": "run.launched"})
    assert len(json.loads(_body(response))) == 1
    response = staff_client.get(reverse("audit-export", args=["json"]), {"target": "nothing"})
    assert json.loads(_body(response)) == []


# Permissions -----------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client, trail):
    for url in (URL, reverse("audit-export", args=["csv"])):
        response = client.get(url)
        assert response.status_code == 302
        assert "login" in response["Location"]


def test_members_see_and_export_only_their_institutions_events(client, admin_user, trail):
    client.force_login(admin_user)
    assert _seqs(client.get(URL)) == [5, 2, 1]
    # Filtering by another institution cannot widen what a member may read.
    other = client.get(URL, {"actor": "yu-ting"})
    assert _seqs(other) == [5]
    rows = json.loads(_body(client.get(reverse("audit-export", args=["json"]))))
    assert [row["seq"] for row in rows] == [1, 2, 5]


def test_people_without_an_institution_see_nothing(client, trail):
    from tests.factories import UserFactory

    client.force_login(UserFactory())
    response = client.get(URL)
    assert response.status_code == 200
    assert _seqs(response) == []
    assert json.loads(_body(client.get(reverse("audit-export", args=["json"])))) == []


def test_members_may_filter_only_by_institutions_they_can_know(client, admin_user, trail):
    from alliance.models import Institution

    hidden = InstitutionFactory(
        slug="applicant", status=Institution.Status.APPLIED, admitted_at=None
    )
    client.force_login(admin_user)
    assert client.get(URL, {"institution": hidden.slug}).status_code == 400


# The chain badge and its checkpoint ------------------------------------------------------------


def test_badge_says_the_chain_is_verified(staff_client, trail):
    page = staff_client.get(URL).content.decode()
    assert 'class="chain ok"' in page
    assert f"Chain verified up to event {trail}" in page


def test_badge_names_an_event_altered_in_the_database(staff_client, trail):
    staff_client.get(URL)  # the checkpoint now covers every event
    assert AuditCheckpoint.objects.get().seq == trail
    _raw("UPDATE alliance_auditevent SET payload = %s WHERE seq = 3", ['{"i": 99}'])
    assert not AuditCheckpoint.objects.exists()  # the trigger cleared it
    page = staff_client.get(URL).content.decode()
    assert 'class="chain bad"' in page
    assert "Chain broken at event 3: event 3 was altered after it was written" in page
    # The intact prefix is kept, so the failure is found again without re-hashing it all.
    assert AuditCheckpoint.objects.get().seq == 2
    assert "Chain broken at event 3" in staff_client.get(URL).content.decode()


def test_badge_names_a_deleted_event(staff_client, trail):
    audit_chain_status()
    _raw("DELETE FROM alliance_auditevent WHERE seq = 4")
    assert not AuditCheckpoint.objects.exists()
    result = audit_chain_status()
    assert (result.ok, result.first_broken_seq, result.count) == (False, 4, 3)
    assert "Chain broken at event 4: event 4 is missing" in staff_client.get(URL).content.decode()


def test_deleting_the_newest_event_is_noticed(trail):
    audit_chain_status()
    _raw("DELETE FROM alliance_auditevent WHERE seq = %s", [trail])
    # Nothing after it is left to break, but the checkpoint claimed an event that is gone.
    assert not AuditCheckpoint.objects.exists()
    result = audit_chain_status()
    assert result.ok and result.count == trail - 1


def test_emptying_the_trail_clears_the_checkpoint(trail):
    audit_chain_status()
    # PostgreSQL fires the trigger on TRUNCATE too; SQLite has no TRUNCATE, only DELETE.
    if connection.vendor == "postgresql":
        _raw("SET CONSTRAINTS ALL IMMEDIATE")  # the test's open transaction defers FK checks
        _raw("TRUNCATE alliance_auditevent")
    else:
        _raw("DELETE FROM alliance_auditevent")
    assert not AuditCheckpoint.objects.exists()
    assert audit_chain_status().count == 0


def test_checkpoint_advances_over_new_events_only(trail):
    first = audit_chain_status()
    assert first.ok and first.count == trail
    checkpoint = AuditCheckpoint.objects.get()
    assert (checkpoint.seq, checkpoint.hash) == (trail, AuditEvent.objects.get(seq=trail).hash)
    _record(5)
    with CaptureQueriesContext(connection) as captured:
        second = audit_chain_status()
    assert second.ok and second.count == trail + 5
    reads = [q["sql"] for q in captured if 'FROM "alliance_auditevent"' in q["sql"]]
    assert any(f'"seq" > {trail}' in sql for sql in reads), reads
    assert not any('"seq" > 0' in sql for sql in reads), reads
    assert AuditCheckpoint.objects.get().seq == trail + 5
    # With nothing new, the status is two small queries and hashes nothing.
    with CaptureQueriesContext(connection) as captured:
        assert audit_chain_status().count == trail + 5
    assert len(captured) == 2


def test_a_forged_event_after_the_checkpoint_is_caught(trail):
    audit_chain_status()
    last = AuditEvent.objects.get(seq=trail)
    # An insert fires no trigger: events past the checkpoint are always verified anyway.
    forged = AuditEvent(
        seq=trail + 1,
        created_at=last.created_at,
        action="test.forged",
        payload={},
        prev_hash="f" * 64,
    )
    forged.hash = forged.compute_hash()
    forged.save()
    assert AuditCheckpoint.objects.get().seq == trail
    result = audit_chain_status()
    assert (result.ok, result.first_broken_seq, result.count) == (False, trail + 1, trail)
    assert "does not follow its predecessor" in result.reason


def test_no_event_can_be_slipped_in_before_the_first(trail):
    """Below the checkpoint only seq 0 is free, and the database refuses it."""
    audit_chain_status()
    forged = AuditEvent(
        seq=0,
        created_at=AuditEvent.objects.get(seq=1).created_at,
        action="test.forged",
        payload={},
        prev_hash=GENESIS_HASH,
    )
    forged.hash = forged.compute_hash()
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()
    assert audit_chain_status().ok


def test_verify_audit_and_the_badge_agree(trail, capsys):
    _raw("UPDATE alliance_auditevent SET action = 'test.forged' WHERE seq = 2")
    full = audit_verify()
    badge = audit_chain_status()
    assert (full.ok, full.first_broken_seq, full.reason) == (False, 2, badge.reason)
    assert badge.first_broken_seq == 2


def test_verify_audit_refreshes_the_checkpoint(trail, capsys):
    assert not AuditCheckpoint.objects.exists()
    call_command("verify_audit")
    assert AuditCheckpoint.objects.get().seq == trail
    assert f"{trail} events verified" in capsys.readouterr().out


def test_an_empty_trail_is_verified_up_to_nothing(staff_client):
    page = staff_client.get(URL).content.decode()
    assert "Chain verified up to event 0" in page
    assert "Nothing recorded yet" in page or "No event on this page" in page


# Bounded queries -------------------------------------------------------------------------------


def _count(client, url: str, params: dict | None = None) -> int:
    audit_chain_status()  # compare pages with the checkpoint at the newest event
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == 200
    if hasattr(response, "streaming_content"):
        _body(response)
    return len(captured)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"before": 10},
        {"after": 5},
        {"institution": "taipei-north-hospital", "action": "member.invited"},
        {"target_type": "alliance.institution", "target_id": "1", "date_from": "2020-01-01"},
    ],
)
def test_query_count_does_not_grow(staff_client, admin_user, institution, params):
    _bulk(20, actor=admin_user, action="member.invited", target=institution)
    small = _count(staff_client, URL, params)
    _bulk(580, actor=admin_user, action="member.invited", target=institution)
    large = _count(staff_client, URL, params)
    assert small == large, f"{params}: {small} queries with 20 events, {large} with 600"


def test_export_query_count_does_not_grow(staff_client, admin_user, institution):
    export = reverse("audit-export", args=["csv"])
    _bulk(20, actor=admin_user, target=institution)
    small = _count(staff_client, export)
    _bulk(580, actor=admin_user, target=institution)
    large = _count(staff_client, export)
    assert small == large
