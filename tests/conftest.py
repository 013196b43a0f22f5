"""Shared fixtures: people in every role, a real Celery worker, and services that must exist."""

import time
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.core import mail
from django.db import connection
from django.utils import translation
from rest_framework.test import APIClient

from alliance.models import Role
from tests.factories import InstitutionFactory, StaffFactory, member


def needs(reason: str) -> None:
    """Skip a test whose service is absent; under REQUIRE_SERVICES=1 (CI) fail instead."""
    if settings.REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def require_postgres() -> None:
    if connection.vendor != "postgresql":
        needs("PostgreSQL (set DATABASE_URL)")


@pytest.fixture
def institution():
    return InstitutionFactory(name="Taipei North Hospital", slug="taipei-north-hospital")


@pytest.fixture
def other_institution():
    return InstitutionFactory(name="Kaohsiung Harbour Hospital", slug="kaohsiung-harbour-hospital")


@pytest.fixture
def admin_user(institution):
    return member(Role.ADMIN, institution, user__username="mei-ling")


@pytest.fixture
def steward(institution):
    return member(Role.DATA_STEWARD, institution, user__username="dr-chen")


@pytest.fixture
def researcher(institution):
    return member(Role.RESEARCHER, institution, user__username="researcher-a")


@pytest.fixture
def other_admin(other_institution):
    return member(Role.ADMIN, other_institution, user__username="yu-ting")


@pytest.fixture
def staff():
    return StaffFactory(username="wei")


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def api_as(api) -> Callable:
    def login(user):
        api.force_authenticate(user)  # None: anonymous
        return api

    return login


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    """Poll until ``predicate()`` is truthy (work done by another process or thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@pytest.fixture(scope="session")
def broker_ready() -> None:
    """The configured broker answers, and its coordinator queue starts empty."""
    from portal.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            conn.default_channel.queue_declare("coordinator", durable=True, auto_delete=False)
            conn.default_channel.queue_purge("coordinator")
    except Exception as exc:  # any failure to reach the broker means "not available"
        needs(f"Celery broker {settings.CELERY_BROKER_URL} unreachable: {exc}")


@pytest.fixture
def celery_worker(broker_ready, transactional_db) -> Iterator[object]:
    """A real Celery worker (in-process thread) consuming the coordinator queue.

    Tests that use it see committed data only, hence ``transactional_db``.
    """
    from celery.contrib.testing.worker import start_worker

    from portal.celery import app

    with start_worker(
        app, queues=["coordinator"], pool="solo", perform_ping_check=False, shutdown_timeout=10
    ) as worker:
        yield worker


@pytest.fixture
def outbox() -> list:
    return mail.outbox


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """After the session, end connections that worker and server threads left open.

    Threads (an in-process Celery worker, the live server, concurrent writers) keep their own
    PostgreSQL sessions; the test database cannot be dropped while one is still open.
    """
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            # After a browser test this connection need not be the one Django closes before
            # dropping the database (Playwright's event loop changes the context that holds
            # connections), so close it here.
            connection.close()


@pytest.fixture(autouse=True)
def _default_language_after_each_test():
    """A request answered in another language leaves it active in this thread (LocaleMiddleware
    does not switch back): a later test calling a service directly would read its messages in
    that language. Each test ends where the next expects to start."""
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Tests create many users; a slow hasher proves nothing here, so use a fast one."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True, scope="session")
def _site_workers_trust_the_portal() -> None:
    """Site workers in the tests obey the portal's key, as `run_site_worker` is told to."""
    from portal.common.keys import portal_public_text

    settings.PORTAL_PUBLIC_KEY = portal_public_text()


def after_commit_work(callbacks: list[Callable[[], object]]) -> list[Callable[[], object]]:
    """What a transaction left to do after commit, less signing the audit log's new head."""
    from alliance.services.audit_log import audit_checkpoint_after_append

    return [c for c in callbacks if c is not audit_checkpoint_after_append]
