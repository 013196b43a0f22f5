"""Concurrent writers must not fork the chain, and a change racing a chain check is not lost."""

import itertools
import json
import threading

import pytest
from django.db import connection, transaction

from alliance import services, tlog
from alliance.models import AuditCheckpoint, AuditEvent, SignedCheckpoint
from alliance.services import audit_log
from alliance.services.audit import _lock_checkpoint, _save_checkpoint, audit_record, verify_events
from tests.conftest import require_postgres

WRITERS = 8
EVENTS_PER_WRITER = 15


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_keep_one_chain():
    require_postgres()
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(EVENTS_PER_WRITER):
                with transaction.atomic():
                    audit_record(actor=None, action="test.concurrent", payload={"w": n, "i": i})
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    total = WRITERS * EVENTS_PER_WRITER
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, total + 1))
    prev_hashes = AuditEvent.objects.values_list("prev_hash", flat=True)
    assert len(set(prev_hashes)) == total  # no two events claim the same predecessor
    result = services.audit_verify()
    assert result.ok, result
    assert result.count == total


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_change_during_a_check_still_clears_the_checkpoint():
    """A raw UPDATE racing a chain check waits for it, then clears the checkpoint it saved."""
    require_postgres()
    with transaction.atomic():
        for i in range(3):
            audit_record(actor=None, action="test.raced", payload={"i": i})
    updated = threading.Event()

    def tamper() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("UPDATE alliance_auditevent SET payload = '{}' WHERE seq = 2")
            updated.set()
        finally:
            connection.close()

    with transaction.atomic():
        _lock_checkpoint()
        result = verify_events(AuditEvent.objects.order_by("seq"))
        thread = threading.Thread(target=tamper)
        thread.start()
        # The tamperer's trigger needs the checkpoint table: it waits for this check to commit.
        assert not updated.wait(timeout=1.0)
        _save_checkpoint(result)
    thread.join(timeout=30)
    assert updated.is_set()
    assert not AuditCheckpoint.objects.exists()
    status = services.audit_chain_status()
    assert (status.ok, status.first_broken_seq) == (False, 2)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_signing_alongside_appends_never_disagrees_with_the_log(settings, tmp_path):
    """Writers append (each commit also tries to sign) while other threads sign in a loop.

    Every checkpoint must be the Merkle root of exactly the first ``size`` events, and each
    must be consistent with the next: a signer that read a half-committed or reordered log
    would sign a root that no prefix has.
    """
    require_postgres()
    settings.AUDIT_CHECKPOINT_LOG = tmp_path / "checkpoints.log"
    writers, signers, per_writer = 4, 2, 10
    barrier = threading.Barrier(writers + signers)
    done = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                with transaction.atomic():
                    audit_record(actor=None, action="test.signed", payload={"w": n, "i": i})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def signer() -> None:
        try:
            barrier.wait()
            while not done.is_set():
                audit_log.audit_checkpoint_issue()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    helpers = [threading.Thread(target=signer) for _ in range(signers)]
    for thread in threads + helpers:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    for thread in helpers:
        thread.join(timeout=60)
    assert not errors, errors
    total = writers * per_writer
    assert audit_log.audit_checkpoint_issue().size == total
    entries = [e.canonical_bytes() for e in AuditEvent.objects.order_by("seq")]
    checkpoints = list(SignedCheckpoint.objects.order_by("size"))
    assert len(checkpoints) > 1
    for checkpoint in checkpoints:
        assert checkpoint.root == tlog.mth(entries[: checkpoint.size]).hex(), checkpoint.size
    for older, newer in itertools.pairwise(checkpoints):
        proof, _size = audit_log.audit_consistency_proof(first=older.size, second=newer.size)
        tlog.verify_consistency(
            older.size, newer.size, bytes.fromhex(older.root), bytes.fromhex(newer.root), proof
        )
    logged = [
        json.loads(line)["size"] for line in settings.AUDIT_CHECKPOINT_LOG.read_text().splitlines()
    ]
    assert sorted(logged) == [c.size for c in checkpoints]
