import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.urls import reverse

from alliance import services
from alliance.models import AuditEvent
from alliance.models.audit import GENESIS_HASH, AuditTrailIsAppendOnly
from alliance.services.audit import audit_record

pytestmark = pytest.mark.django_db


def _events(n: int, actor=None) -> list[AuditEvent]:
    with transaction.atomic():
        return [
            audit_record(actor=actor, action="test.happened", payload={"i": i, "note": "數據"})
            for i in range(n)
        ]


def _raw(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_events_form_a_chain_from_genesis():
    first, second, third = _events(3)
    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert third.hash == third.compute_hash()
    assert services.audit_verify().ok


def test_numbers_hash_as_the_database_gives_them_back():
    """PostgreSQL's jsonb keeps a number as a decimal and writes 1e+16 back as
    10000000000000000: the hash must cover that form, or the chain would look altered."""
    numbers = {"big": 1e16, "bigger": 1.5e300, "small": 1.5e-7, "one": 1.0, "int": 7, "neg": -2e20}
    with transaction.atomic():
        event = audit_record(actor=None, action="test.numbers", payload=numbers)
    assert event.payload["big"] == 10**16 and isinstance(event.payload["big"], int)
    assert event.payload["bigger"] == 15 * 10**299
    assert event.payload["small"] == 1.5e-7 and event.payload["one"] == 1.0
    assert event.payload["neg"] == -2 * 10**20
    stored = AuditEvent.objects.get(seq=event.seq)
    assert stored.payload == event.payload
    assert stored.compute_hash() == event.hash
    assert services.audit_verify().ok


@pytest.mark.django_db(transaction=True)
def test_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError, match="transaction"):
        audit_record(actor=None, action="test.loose")


def test_verify_audit_exits_zero_with_the_count(capsys):
    _events(4)
    call_command("verify_audit")
    assert "4 events verified" in capsys.readouterr().out


def _verify_fails_at(seq: int, capsys) -> None:
    with pytest.raises(CommandError) as info:
        call_command("verify_audit")
    assert info.value.returncode == 1
    assert f"first broken sequence number: {seq}" in str(info.value)
    assert f"BROKEN at event {seq}" in capsys.readouterr().err


def test_detects_an_altered_payload(capsys):
    _events(5)
    _raw("UPDATE alliance_auditevent SET payload = %s WHERE seq = 3", ['{"i": 99}'])
    _verify_fails_at(3, capsys)


def test_detects_an_altered_action_even_with_a_recomputed_own_hash(capsys):
    events = _events(5)
    forged = events[1]
    forged.action = "test.forged"
    _raw(
        "UPDATE alliance_auditevent SET action = %s, hash = %s WHERE seq = 2",
        ["test.forged", forged.compute_hash()],
    )
    _verify_fails_at(3, capsys)  # event 3 still points at the true hash of event 2


def test_detects_a_removed_event(capsys):
    _events(5)
    _raw("DELETE FROM alliance_auditevent WHERE seq = %s", [4])
    _verify_fails_at(4, capsys)


def test_detects_reordered_events(capsys):
    _events(5)
    _raw("UPDATE alliance_auditevent SET seq = 100 WHERE seq = 2", [])
    _raw("UPDATE alliance_auditevent SET seq = 2 WHERE seq = 3", [])
    _raw("UPDATE alliance_auditevent SET seq = 3 WHERE seq = 100", [])
    _verify_fails_at(2, capsys)


def test_orm_refuses_updates_and_deletes():
    (event,) = _events(1)
    event.action = "changed"
    with pytest.raises(AuditTrailIsAppendOnly):
        event.save()
    with pytest.raises(AuditTrailIsAppendOnly):
        event.delete()
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.filter(seq=1).update(action="changed")
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(seq=1).action == "test.happened"


def test_admin_is_read_only(client, staff):
    staff.is_superuser = True
    staff.save()
    (event,) = _events(1)
    client.force_login(staff)
    assert client.get(reverse("admin:alliance_auditevent_changelist")).status_code == 200
    assert client.get(reverse("admin:alliance_auditevent_add")).status_code == 403
    detail = client.post(reverse("admin:alliance_auditevent_change", args=[event.pk]), {})
    assert detail.status_code == 403
    delete = client.post(reverse("admin:alliance_auditevent_delete", args=[event.pk]), {})
    assert delete.status_code == 403
    assert AuditEvent.objects.count() == 1


def test_api_is_read_only(api_as, staff):
    _events(1)
    client = api_as(staff)
    url = reverse("api:audit-event-detail", args=[1])
    assert client.get(url).status_code == 200
    assert client.put(url, {"action": "x"}, format="json").status_code == 405
    assert client.patch(url, {"action": "x"}, format="json").status_code == 405
    assert client.delete(url).status_code == 405
    assert client.post(reverse("api:audit-event-list"), {}, format="json").status_code == 405


def test_members_see_only_events_of_their_institution(
    api_as, admin_user, other_admin, staff, institution
):
    services.member_invite(actor=admin_user, email="a@example.org", role="viewer")
    services.member_invite(actor=other_admin, email="b@example.org", role="viewer")
    mine = api_as(admin_user).get(reverse("api:audit-event-list")).json()["results"]
    assert [e["payload"]["email"] for e in mine] == ["a@example.org"]
    assert all(e["actor_institution"] == institution.slug for e in mine)
    everything = api_as(staff).get(reverse("api:audit-event-list")).json()
    assert len(everything["results"]) == 2 and everything["next"] is None
    other_seq = AuditEvent.objects.get(payload__email="b@example.org").seq
    hidden = api_as(admin_user).get(reverse("api:audit-event-detail", args=[other_seq]))
    assert hidden.status_code == 404


def test_the_api_pages_events_by_cursor_newest_first(api_as, staff, admin_user):
    _events(7)
    client = api_as(staff)
    path, seen = reverse("api:audit-event-list") + "?page_size=3", []
    while path:
        body = client.get(path).json()
        assert "count" not in body and len(body["results"]) <= 3
        seen += [e["seq"] for e in body["results"]]
        path = body["next"]
    assert seen == sorted(AuditEvent.objects.values_list("seq", flat=True), reverse=True)
    # A page is as deep as its cursor says, not an OFFSET that shifts when events are added.
    first = client.get(reverse("api:audit-event-list") + "?page_size=3").json()
    _events(2)
    second = client.get(first["next"]).json()
    assert second["results"][0]["seq"] == first["results"][-1]["seq"] - 1


def test_chain_verification_endpoint_is_for_staff(api_as, staff, admin_user):
    _events(2)
    assert api_as(admin_user).get(reverse("api:audit-event-verify")).status_code == 403
    body = api_as(staff).get(reverse("api:audit-event-verify")).json()
    assert body == {"ok": True, "count": 2, "first_broken_seq": None, "reason": ""}
