"""Concurrent writers must not fork the chain, and a change racing a chain check is not lost."""

import threading

import pytest
from django.db import connection, transaction

from alliance import services
from alliance.models import AuditCheckpoint, AuditEvent
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
