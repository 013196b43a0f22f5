"""Before each task the coordinator's database connection is checked as before a request, except
right after a task it served: then the check's round trip is saved."""

import time

import pytest
from django.db import connections

from portal import celery as portal_celery


@pytest.fixture
def open_connection(transactional_db):
    connection = connections["default"]
    connection.ensure_connection()
    yield connection


def _checked_before_next_query(connection, monkeypatch) -> bool:
    checks = []
    real = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(1) or real())
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return bool(checks)


def test_a_connection_that_just_served_a_task_is_not_checked_again(open_connection, monkeypatch):
    portal_celery._database_connections_served()
    portal_celery._database_connections_as_per_request()
    assert not _checked_before_next_query(open_connection, monkeypatch)


def test_a_connection_idle_since_its_last_task_is_checked(open_connection, monkeypatch):
    monkeypatch.setattr(
        portal_celery,
        "_last_success",
        time.monotonic() - portal_celery.HEALTH_CHECK_AFTER_IDLE - 1,
    )
    portal_celery._database_connections_as_per_request()
    assert _checked_before_next_query(open_connection, monkeypatch)


def test_a_connection_with_an_error_is_checked_even_right_after_a_task(
    open_connection, monkeypatch
):
    portal_celery._database_connections_served()
    open_connection.errors_occurred = True
    checks = []
    real = open_connection.is_usable
    monkeypatch.setattr(open_connection, "is_usable", lambda: checks.append(1) or real())
    portal_celery._database_connections_as_per_request()
    assert checks  # checked there and then, and found usable
    assert not open_connection.errors_occurred
