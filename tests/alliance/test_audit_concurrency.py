"""Concurrent writers must not fork the chain (PostgreSQL: the advisory lock serialises them)."""

import threading

import pytest
from django.db import connection, transaction

from alliance import services
from alliance.models import AuditEvent
from alliance.services.audit import audit_record
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
