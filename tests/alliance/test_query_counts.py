"""Pages and list endpoints answer in a number of queries that does not grow with the data."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alliance import services
from alliance.models import Role
from alliance.services.audit import audit_record
from tests.factories import InstitutionFactory, member

pytestmark = pytest.mark.django_db


def _grow(institution, admin, size: int) -> None:
    """Add ``size`` people to the institution, ``size`` other members and audit events."""
    for i in range(size):
        member(Role.RESEARCHER, institution)
        InstitutionFactory(sector=["medicine", "finance", "culture"][i % 3])
    with transaction.atomic():
        for i in range(size):
            audit_record(actor=admin, action="test.grown", target=institution, payload={"i": i})
    # The chain badge re-hashes events written since its last check (a few more queries, once);
    # checking here compares the pages in their steady state.
    services.audit_chain_status()


def _count(fetch) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = fetch()
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "url_name",
    [
        "home",
        "my-institution",
        "audit-list",
        "dashboard",
        "staff-overview",
        "api:member-list",
        "api:audit-event-list",
        "api:institution-list",
    ],
)
def test_query_count_does_not_grow(client, admin_user, staff, institution, url_name):
    viewer = staff if url_name == "staff-overview" else admin_user
    client.force_login(viewer)
    url = reverse(url_name)
    _grow(institution, admin_user, 3)
    # One render first: per-process caches (content types for permission checks) fill once.
    client.get(url)
    small = _count(lambda: client.get(url))
    _grow(institution, admin_user, 30)
    large = _count(lambda: client.get(url))
    assert small == large, f"{url}: {small} queries with little data, {large} with more"


def test_invite_query_budget(admin_user):
    with CaptureQueriesContext(connection) as captured:
        services.member_invite(actor=admin_user, email="q@example.org", role="viewer")
    assert len(captured) <= 25
