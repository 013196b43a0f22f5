"""The audit log's signed head: checkpoints, proofs, and catching a cut or rewritten log."""

import base64
import hashlib
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.urls import reverse

from alliance import tlog
from alliance.models import AuditEvent, AuditTreeNode, SignedCheckpoint
from alliance.models.audit import GENESIS_HASH, canonical_event_bytes
from alliance.services import audit, audit_log
from alliance.services.audit import (
    audit_chain_status,
    audit_record,
    audit_rows,
    audit_verify,
    verify_rows,
)

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _events(n: int, actor=None) -> list[AuditEvent]:
    with transaction.atomic():
        return [
            audit_record(actor=actor, action="test.happened", payload={"i": i, "note": "數據"})
            for i in range(n)
        ]


def _mth_of_database(size: int) -> bytes:
    return tlog.mth(e.canonical_bytes() for e in AuditEvent.objects.order_by("seq")[:size])


def _rewrite(seq: int, payload: dict) -> None:
    """Change one event and recompute its hash and every later link, as an attacker with SQL."""
    events = list(AuditEvent.objects.order_by("seq"))
    prev = events[seq - 2].hash if seq > 1 else GENESIS_HASH
    with connection.cursor() as cursor:
        for event in events[seq - 1 :]:
            if event.seq == seq:
                event.payload = payload
            event.prev_hash = prev
            event.hash = event.compute_hash()
            cursor.execute(
                "UPDATE alliance_auditevent SET payload = %s, prev_hash = %s, hash = %s "
                "WHERE seq = %s",
                [json.dumps(event.payload), event.prev_hash, event.hash, event.seq],
            )
            prev = event.hash


def _cut_tail(n: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM alliance_auditevent WHERE seq > (SELECT max(seq) - %s "
            "FROM alliance_auditevent)",
            [n],
        )


def test_canonical_bytes_known_answer():
    """The bytes an event's hash covers are pinned: a faster encoder must produce these."""
    data = canonical_event_bytes(
        7,
        datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        3,
        "mei-ling",
        2,
        None,
        "member.invited",
        "alliance.membership",
        "12",
        "Dr Chen — 數據",
        {"role": "researcher", "b": [1, 2.5, None, True], "a": {"z": "é", "y": ""}},
        "ab" * 32,
    )
    assert (
        data
        == (
            '{"action":"member.invited","actor_id":3,"actor_institution_id":2,'
            '"actor_username":"mei-ling","created_at":"2026-03-01T08:30:15.123456Z",'
            '"payload":{"a":{"y":"","z":"é"},"b":[1,2.5,null,true],"role":"researcher"},'
            '"prev_hash":"' + "ab" * 32 + '","seq":7,"subject_institution_id":null,'
            '"target_id":"12","target_label":"Dr Chen — 數據","target_type":"alliance.membership"}'
        ).encode()
    )
    assert (
        hashlib.sha256(data).hexdigest()
        == "03c57309d3e3afc6290ebc1a479a17f116023ac7f7b20a42d9239840dfe37849"
    )


# Awkward values for the encoder: no actor, a whole second, quotes, backslashes, every kind of
# control character json escapes (PostgreSQL text holds no NUL), non-ASCII and U+2028 (kept
# as is), empty strings, and payload keys whose sorted order differs from jsonb's (by length).
AWKWARD = {
    "created_at": "2026-03-01T08:30:15.000000Z",
    "actor_username": "",
    "action": 'odd "quoted" \\ action',
    "target_type": "alliance.institution",
    "target_id": "",
    "target_label": "Tab\there\nnew line\r\b\f\x01\x1f\x7f é 數據 \u2028 end",
    "payload": {
        "bb": [0, -1, 2.5, 1e-07, None, False, "é\u2028\n"],
        "a": {"": "", "Zz": "\\", "é": 1},
        "ccc": "x",
        "z": 0,
    },
}


def test_canonical_bytes_known_answer_with_awkward_values():
    """A second pinned case: the escapes, key order and nulls a faster encoder must keep."""
    a = AWKWARD
    data = canonical_event_bytes(
        1,
        a["created_at"],
        None,
        a["actor_username"],
        None,
        4,
        a["action"],
        a["target_type"],
        a["target_id"],
        a["target_label"],
        a["payload"],
        GENESIS_HASH,
    )
    expected = (
        '{"action":"odd \\"quoted\\" \\\\ action","actor_id":null,"actor_institution_id":null,'
        '"actor_username":"","created_at":"2026-03-01T08:30:15.000000Z",'
        '"payload":{"a":{"":"","Zz":"\\\\","é":1},"bb":[0,-1,2.5,1e-07,null,false,"é\u2028\\n"],'
        '"ccc":"x","z":0},"prev_hash":"' + GENESIS_HASH + '","seq":1,"subject_institution_id":4,'
        '"target_id":"","target_label":"Tab\\there\\nnew line\\r\\b\\f\\u0001\\u001f\x7f é 數據 '
        '\u2028 end","target_type":"alliance.institution"}'
    ).encode()
    assert data == expected
    # The same bytes as the plain definition: the document through json.dumps.
    document = {
        "seq": 1,
        "created_at": a["created_at"],
        "actor_id": None,
        "actor_username": a["actor_username"],
        "actor_institution_id": None,
        "subject_institution_id": 4,
        "action": a["action"],
        "target_type": a["target_type"],
        "target_id": a["target_id"],
        "target_label": a["target_label"],
        "payload": a["payload"],
        "prev_hash": GENESIS_HASH,
    }
    plain = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert data == plain.encode()
    assert (
        hashlib.sha256(data).hexdigest()
        == "ac53f04ad785326ee80d54fe63745cc2b8acb222f08c77f2aa1c0a618c3ca1ef"
    )


def _record_at(when: datetime, **fields) -> AuditEvent:
    """Record an event, then set its time (and hash) as if it had been written at ``when``."""
    with transaction.atomic():
        event = audit_record(**fields)
        event.created_at = when
        event.hash = event.compute_hash()
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE alliance_auditevent SET created_at = %s, hash = %s WHERE seq = %s",
                [when, event.hash, event.seq],
            )
    return event


def test_the_verifier_streams_the_models_bytes_for_awkward_values(institution, admin_user):
    """What the verifier hashes from the database equals each event's own canonical bytes."""
    whole_second = datetime(2026, 3, 1, 8, 30, 15, tzinfo=UTC)
    a = AWKWARD
    events = [
        _record_at(
            whole_second,
            actor=None,
            action=a["action"],
            target=institution,
            payload=a["payload"],
        ),
        # The same payload again (put in canonical form once per pass), with an actor.
        _record_at(whole_second, actor=admin_user, action="same.payload", payload=a["payload"]),
        *_events(2),
        _record_at(
            datetime(2026, 3, 1, 8, 30, 15, 7, tzinfo=UTC),
            actor=None,
            action="label.awkward",
            payload={},
        ),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE alliance_auditevent SET target_label = %s WHERE seq = %s",
            [a["target_label"], events[-1].seq],
        )
    events[-1].target_label = a["target_label"]
    events[-1].hash = events[-1].compute_hash()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE alliance_auditevent SET hash = %s WHERE seq = %s",
            [events[-1].hash, events[-1].seq],
        )
    streamed = [row for chunk in audit._encoded_chunks() for row in chunk]
    stored = list(AuditEvent.objects.order_by("seq"))
    assert [row[3] for row in streamed] == [e.canonical_bytes() for e in stored]
    assert [(row[0], row[1], row[2]) for row in streamed] == [
        (e.seq, e.prev_hash, e.hash) for e in stored
    ]
    assert stored[0].canonical_bytes().startswith(b'{"action":"odd \\"quoted\\"')
    assert b'"created_at":"2026-03-01T08:30:15.000000Z"' in stored[0].canonical_bytes()
    assert b'"created_at":"2026-03-01T08:30:15.000007Z"' in stored[-1].canonical_bytes()
    audit_log.audit_checkpoint_issue()
    result = audit_verify()
    assert (result.ok, result.count) == (True, 5)


def test_streamed_rows_encode_to_the_models_bytes(staff, admin_user):
    events = _events(2) + _events(2, actor=admin_user) + _events(1, actor=staff)
    rows = list(audit_rows())
    assert [canonical_event_bytes(*row[:12]) for row in rows] == [
        e.canonical_bytes() for e in events
    ]
    assert [row[12] for row in rows] == [e.hash for e in events]
    assert list(audit_rows(after_seq=2, upto_seq=4)) == rows[2:4]


def test_a_checkpoint_signs_the_merkle_root_of_every_event():
    _events(5)
    checkpoint = audit_log.audit_checkpoint_issue()
    assert checkpoint.size == 5
    assert checkpoint.root == _mth_of_database(5).hex()
    name, public = audit_log.audit_log_origin(), audit_log.portal_key("AUDIT_LOG_KEY").public_key()
    body = tlog.open_note(checkpoint.note, name, public)
    assert body == f"{name}\n5\n{base64.b64encode(bytes.fromhex(checkpoint.root)).decode()}\n"
    # Nothing new: no second checkpoint of the same size.
    assert audit_log.audit_checkpoint_issue() == checkpoint
    assert SignedCheckpoint.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_checkpoint_is_issued_when_events_commit_and_leaves_for_the_file_log(settings, tmp_path):
    settings.AUDIT_CHECKPOINT_LOG = tmp_path / "checkpoints.log"
    _events(3)
    _events(2)
    sizes = list(SignedCheckpoint.objects.order_by("size").values_list("size", flat=True))
    assert sizes == [3, 5]
    lines = [json.loads(line) for line in settings.AUDIT_CHECKPOINT_LOG.read_text().splitlines()]
    assert [line["size"] for line in lines] == [3, 5]
    assert lines[-1]["note"] == SignedCheckpoint.objects.get(size=5).note
    printed = _command_output("audit_checkpoint")
    assert printed == lines[-1]["note"]


def _command_output(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_proofs_come_from_stored_subtrees_and_verify():
    _events(300)
    first = audit_log.audit_checkpoint_issue()
    _events(40)
    second = audit_log.audit_checkpoint_issue()
    assert AuditTreeNode.objects.filter(level=8, index=0).exists()
    for seq in (1, 2, 255, 256, 257, 300):
        proof = audit_log.audit_inclusion_proof(seq=seq, size=300)
        tlog.verify_inclusion(
            seq - 1, 300, tlog.leaf_hash(proof.entry), proof.proof, bytes.fromhex(first.root)
        )
    proof = audit_log.audit_inclusion_proof(seq=340)
    assert proof.checkpoint == second
    tlog.verify_inclusion(339, 340, proof.leaf_hash, proof.proof, bytes.fromhex(second.root))
    hashes, size = audit_log.audit_consistency_proof(first=300)
    assert size == 340
    tlog.verify_consistency(300, 340, bytes.fromhex(first.root), bytes.fromhex(second.root), hashes)
    with pytest.raises(audit_log.CheckpointNotFound):
        audit_log.audit_inclusion_proof(seq=1, size=299)
    with pytest.raises(audit_log.ApplicationError):
        audit_log.audit_inclusion_proof(seq=341)


def _kept_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "kept.note"
    path.write_text(audit_log.audit_checkpoint_issue().note)
    return path


def _verify_against(path: Path) -> str:
    return _command_output("verify_audit", "--checkpoint", str(path))


def test_verify_audit_proves_the_log_consistent_with_a_kept_checkpoint(tmp_path):
    _events(20)
    kept = _kept_checkpoint(tmp_path)
    _events(7)
    assert "20 events are the first of the 27" in _verify_against(kept)
    audit_log.audit_checkpoint_issue()
    log = tmp_path / "file.log"
    log.write_text(json.dumps({"note": kept.read_text()}) + "\n")
    assert "consistent" in _verify_against(log)


def test_verify_audit_names_events_removed_from_the_tail(tmp_path):
    _events(20)
    kept = _kept_checkpoint(tmp_path)
    _cut_tail(5)
    with pytest.raises(CommandError, match="events 16 to 20 were removed") as caught:
        _verify_against(kept)
    assert caught.value.returncode == 1
    # Without the file, the newest signed checkpoint in the database says the same.
    result = audit_verify()
    assert (result.ok, result.first_broken_seq) == (False, 16)
    assert "removed" in result.reason


def test_verify_audit_names_a_rewrite_even_with_every_hash_recomputed(tmp_path):
    _events(20)
    kept = _kept_checkpoint(tmp_path)
    _rewrite(13, {"i": 12, "note": "rewritten"})
    # The chain alone no longer notices: every link was recomputed.
    assert verify_rows(audit_rows()).ok
    with pytest.raises(CommandError, match="events were rewritten") as caught:
        _verify_against(kept)
    assert caught.value.returncode == 1
    result = audit_verify()
    assert not result.ok
    assert "rewritten" in result.reason
    # The badge keeps saying so, cheaply, until a full verification passes.
    assert not audit_chain_status().ok


def test_the_badge_notices_a_cut_tail_and_shows_the_signed_head(client, staff):
    _events(12)
    checkpoint = audit_log.audit_checkpoint_issue()
    client.force_login(staff)
    page = client.get(reverse("audit-list")).content.decode()
    assert "Chain verified up to event 12" in page
    assert f"Signed checkpoint: 12 events, root {checkpoint.root[:16]}" in page
    _cut_tail(2)
    page = client.get(reverse("audit-list")).content.decode()
    assert "Chain broken at event 11" in page
    assert "events 11 to 12 were removed" in page


def test_verify_audit_refuses_a_checkpoint_with_a_bad_signature(tmp_path):
    _events(4)
    kept = _kept_checkpoint(tmp_path)
    kept.write_text(kept.read_text().replace("\n4\n", "\n3\n"))
    with pytest.raises(CommandError, match="signature does not verify"):
        _verify_against(kept)


def test_the_signer_refuses_a_log_that_no_longer_continues_its_tree():
    _events(6)
    audit_log.audit_checkpoint_issue()
    _cut_tail(2)
    _events(3)
    with pytest.raises(audit_log.AuditLogBroken):
        audit_log.audit_checkpoint_issue()
    assert list(SignedCheckpoint.objects.values_list("size", flat=True)) == [6]


# --- API -------------------------------------------------------------------------------------


CHECKPOINTS = "/api/v1/audit-checkpoints/"


@pytest.mark.parametrize(
    "url",
    [
        CHECKPOINTS,
        CHECKPOINTS + "latest/",
        CHECKPOINTS + "key/",
        CHECKPOINTS + "3/",
        CHECKPOINTS + "consistency-proof/?first=1",
        "/api/v1/audit-events/1/inclusion-proof/",
    ],
)
def test_anonymous_callers_get_no_checkpoint_or_proof(api, url):
    _events(3)
    audit_log.audit_checkpoint_issue()
    assert api.get(url).status_code in (401, 403)


def test_every_member_may_poll_and_keep_checkpoints(api_as, researcher):
    _events(3)
    first = audit_log.audit_checkpoint_issue()
    _events(2)
    audit_log.audit_checkpoint_issue()
    api = api_as(researcher)
    latest = api.get(CHECKPOINTS + "latest/").json()
    assert latest["size"] == 5
    listed = api.get(CHECKPOINTS).json()["results"]
    assert [c["size"] for c in listed] == [5, 3]
    assert api.get(CHECKPOINTS + "3/").json()["note"] == first.note
    key = api.get(CHECKPOINTS + "key/").json()
    name, _key_id, public = key["verifier_key"].split("+", 2)  # base64 may hold "+" too
    assert name == key["origin"]
    raw = base64.b64decode(public)[1:]
    tlog.open_note(latest["note"], name, Ed25519PublicKey.from_public_bytes(raw))
    proof = api.get(CHECKPOINTS + "consistency-proof/?first=3").json()
    tlog.verify_consistency(
        3,
        5,
        bytes.fromhex(first.root),
        bytes.fromhex(latest["root"]),
        [bytes.fromhex(h) for h in proof["proof"]],
    )


def test_checkpoint_and_proof_requests_are_checked(api_as, researcher):
    api = api_as(researcher)
    assert api.get(CHECKPOINTS + "latest/").status_code == 404
    _events(3)
    audit_log.audit_checkpoint_issue()
    for query in ("", "?first=0", "?first=x", "?first=1&second=99", f"?first={2**70}"):
        answer = api.get(CHECKPOINTS + "consistency-proof/" + query)
        assert answer.status_code in (400, 404), query
    assert api.get(CHECKPOINTS + "consistency-proof/?first=4").status_code == 400
    assert api.get(CHECKPOINTS + "99/").status_code == 404


def test_inclusion_proofs_only_for_events_the_member_may_read(
    api_as, admin_user, other_admin, institution
):
    with transaction.atomic():
        audit_record(actor=admin_user, action="test.ours", target=institution)
        audit_record(actor=other_admin, action="test.theirs")
    audit_log.audit_checkpoint_issue()
    api = api_as(admin_user)
    assert api.get("/api/v1/audit-events/1/inclusion-proof/").status_code == 200
    assert api.get("/api/v1/audit-events/2/inclusion-proof/").status_code == 404
    assert api.get("/api/v1/audit-events/1/inclusion-proof/?size=0").status_code == 400
    assert api.get("/api/v1/audit-events/1/inclusion-proof/?size=7").status_code == 404


def test_an_inclusion_proof_verifies_offline_with_the_documented_script(api_as, staff, tmp_path):
    _events(9)
    checkpoint = audit_log.audit_checkpoint_issue()
    api = api_as(staff)
    key = api.get(CHECKPOINTS + "key/").json()["verifier_key"]
    answer = api.get("/api/v1/audit-events/6/inclusion-proof/").json()
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(answer))
    kept = tmp_path / "kept.note"
    kept.write_text(checkpoint.note)
    script = [sys.executable, str(ROOT / "scripts" / "verify_inclusion.py"), str(proof_file)]
    ran = subprocess.run(
        [*script, "--key", key, "--checkpoint", str(kept)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "event 6 is in the signed log of 9 events" in ran.stdout
    answer["entry"] = answer["entry"].replace('"i":5', '"i":50')
    answer["leaf_hash"] = hashlib.sha256(b"\x00" + answer["entry"].encode()).hexdigest()
    proof_file.write_text(json.dumps(answer))
    ran = subprocess.run([*script, "--key", key], capture_output=True, text=True, check=False)
    assert ran.returncode == 1
    assert "does not lead to the signed root" in ran.stderr


def test_staff_console_shows_checkpoints_read_only(client, staff):
    staff.is_superuser = True
    staff.save()
    _events(2)
    checkpoint = audit_log.audit_checkpoint_issue()
    client.force_login(staff)
    listing = client.get(reverse("admin:alliance_signedcheckpoint_changelist"))
    assert listing.status_code == 200
    assert checkpoint.root[:16] in listing.content.decode()
    detail = client.get(reverse("admin:alliance_signedcheckpoint_change", args=[checkpoint.pk]))
    assert checkpoint.note.splitlines()[0] in detail.content.decode()
    assert client.get(reverse("admin:alliance_signedcheckpoint_add")).status_code == 403
    delete = reverse("admin:alliance_signedcheckpoint_delete", args=[checkpoint.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert SignedCheckpoint.objects.filter(pk=checkpoint.pk).exists()
