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


# --- Members cost no more than staff ------------------------------------------------------------

# The main pages, with the same content, for a member (a viewer at a contributing institution:
# no buttons and no inbox of their own) and for alliance staff (who see everything and act for
# nobody). Checking who a member is and what they may see must not make their page dearer than
# staff's: the person comes with their membership, a problem with their institution's part in
# it, and visibility is a subquery of the query that reads the rows.
MAIN_PAGES = [
    ("home", lambda problem, run: []),
    ("dashboard", lambda problem, run: []),
    ("problem-detail", lambda problem, run: [problem.slug]),
    ("problem-list", lambda problem, run: []),
    ("run", lambda problem, run: [problem.slug, run.number]),
    ("run-live", lambda problem, run: [problem.slug, run.number]),
    ("audit-list", lambda problem, run: []),
    ("api:problem-list", lambda problem, run: []),
    ("api:problem-detail", lambda problem, run: [problem.slug]),
    ("api:run-list", lambda problem, run: [problem.slug]),
    ("api:run-detail", lambda problem, run: [problem.slug, run.number]),
    ("api:run-rounds", lambda problem, run: [problem.slug, run.number]),
    ("api:run-site-rounds", lambda problem, run: [problem.slug, run.number]),
    ("api:run-models", lambda problem, run: [problem.slug, run.number]),
    ("api:audit-event-list", lambda problem, run: []),
]


def test_member_pages_cost_no_more_queries_than_staff_pages(settings, tmp_path):
    from rest_framework.test import APIClient

    from tests.factories import StaffFactory
    from tests.projects.scenario import build_scenario
    from tests.projects.test_run_pages import add_rounds, launch

    settings.MEDIA_ROOT = tmp_path / "media"
    scenario = build_scenario().ready()
    run = add_rounds(scenario, launch(scenario), closed=3)
    problem = scenario.refresh()
    services.audit_chain_status()
    people = {"member": scenario.b.viewer, "staff": StaffFactory()}
    dearer = []
    for name, args in MAIN_PAGES:
        url = reverse(name, args=args(problem, run))
        counts = {}
        for who, user in people.items():
            client = APIClient()
            client.force_login(user)
            client.get(url)  # per-process caches (content types, permissions) fill once
            counts[who] = _count(lambda client=client, url=url: client.get(url))
        if counts["member"] > counts["staff"]:
            dearer.append(f"{name}: member {counts['member']}, staff {counts['staff']}")
    assert not dearer, "member pages dearer than staff's:\n" + "\n".join(dearer)


# What only a member's page shows costs one query each, and nothing else of theirs is dearer:
# the proposer's admin sees, besides what staff see, their inbox (the badge) and the form to
# invite institutions (the admitted ones not yet taking part, read once). Their permissions on
# the problem come with the problem (no query of their own), and their institution's page reads
# its headline counts in one query and whether they manage its people in one.
MEMBER_ONLY = {"problem-detail": 2}
MY_INSTITUTION_BUDGET = 13


def test_the_proposers_admin_pays_only_for_what_only_they_see(settings, tmp_path):
    from rest_framework.test import APIClient

    from tests.factories import StaffFactory
    from tests.projects.scenario import build_scenario
    from tests.projects.test_run_pages import add_rounds, launch

    settings.MEDIA_ROOT = tmp_path / "media"
    scenario = build_scenario().ready()
    add_rounds(scenario, launch(scenario), closed=3)
    problem = scenario.refresh()
    InstitutionFactory()  # one the admin may invite
    services.audit_chain_status()
    counts = {}
    for who, user in {"member": scenario.a.admin, "staff": StaffFactory()}.items():
        client = APIClient()
        client.force_login(user)
        url = reverse("problem-detail", args=[problem.slug])
        page = client.get(url)  # per-process caches (content types, permissions) fill once
        assert (b'name="institution"' in page.content) is (who == "member")  # the invite form
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        counts[who] = captured.captured_queries
    member_sql = [q["sql"] for q in counts["member"]]
    assert len(member_sql) <= len(counts["staff"]) + MEMBER_ONLY["problem-detail"], member_sql
    apart = [sql for sql in member_sql if "guardian_" in sql and "projects_problem" not in sql]
    assert not apart, "permissions read apart from the problem"
    institutions = [sql for sql in member_sql if 'FROM "alliance_institution"' in sql]
    assert len(institutions) == 1, institutions


def test_my_institution_query_budget(settings, tmp_path):
    from tests.projects.scenario import build_scenario
    from tests.projects.test_run_pages import add_rounds, launch

    settings.MEDIA_ROOT = tmp_path / "media"
    scenario = build_scenario().ready()
    add_rounds(scenario, launch(scenario), closed=3)
    services.audit_chain_status()
    from django.test import Client

    client = Client()
    client.force_login(scenario.a.admin)
    url = reverse("my-institution")
    page = client.get(url)
    assert b'id="invite"' in page.content or b"invite" in page.content  # an admin manages people
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    sql = [q["sql"] for q in captured.captured_queries]
    assert len(sql) <= MY_INSTITUTION_BUDGET, "\n".join(s[:200] for s in sql)
