"""The alliance dashboard, the home page's public figures and the staff console's front page.

Runs, rounds and models are written as rows (no worker runs here), in bulk for the large data
sets, so that each page can be rendered at two sizes and its query count compared.
"""

import datetime
import html
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alliance.models import AuditEvent, Institution, MembershipApplication
from alliance.services.audit import audit_chain_status, audit_record
from projects import services
from projects.models import ModelVersion, Problem, Round, TrainingRun
from projects.services.runs import LaunchConfig, run_launch
from tests.factories import StaffFactory, UserFactory
from tests.projects.scenario import DEFINITION, Scenario, make_site

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"


def text(response) -> str:
    return html.unescape(response.content.decode())


def squash(page: str) -> str:
    """The page's text with tags dropped and white space collapsed, to match sentences."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def launch(scenario: Scenario) -> TrainingRun:
    return run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=LaunchConfig(rounds=3)
    )


def clone_runs(base: TrainingRun, count: int, status: str, first_number: int) -> list:
    """``count`` copies of ``base`` with the given status (numbers from ``first_number``)."""
    now = timezone.now()
    runs = []
    for i in range(count):
        run = TrainingRun.objects.get(pk=base.pk)
        run.pk = None
        run.number = first_number + i
        run.status = status
        run.finished_at = now - datetime.timedelta(minutes=i)
        if status == TrainingRun.Status.FAILED:
            run.reasons = [f"Too few sites answered in round {i + 1}."]
        runs.append(run)
    return TrainingRun.objects.bulk_create(runs)


def add_rounds(runs: list, count: int) -> None:
    """``count`` succeeded rounds spread over ``runs`` and the last weeks, each with a model."""
    now = timezone.now()
    rounds, models = [], []
    for i in range(count):
        run = runs[i % len(runs)]
        number = i // len(runs) + 1
        closed = now - datetime.timedelta(days=i % 60)
        rounds.append(
            Round(
                run=run,
                number=number,
                status=Round.Status.SUCCEEDED,
                started_at=closed - datetime.timedelta(seconds=5),
                deadline_at=closed + datetime.timedelta(minutes=2),
                closed_at=closed,
                contributors=2,
                metrics={"accuracy": 0.8},
            )
        )
        models.append(
            ModelVersion(
                run=run,
                round_number=number,
                file=f"models/{i:064x}.npy",
                sha256=f"{i:064x}",
                size=128,
                metrics={"accuracy": 0.8},
            )
        )
    Round.objects.bulk_create(rounds)
    ModelVersion.objects.bulk_create(models)


def grow(scenario: Scenario, size: int) -> None:
    """Institutions, applications, runs (succeeded and failed), rounds, models and events."""
    tag = f"s{size}"
    Institution.objects.bulk_create(
        Institution(
            name=f"Member {tag}-{i}",
            slug=f"member-{tag}-{i}",
            sector=["medicine", "finance", "culture", "transportation"][i % 4],
            country="Taiwan",
            status=Institution.Status.ADMITTED if i % 3 else Institution.Status.SUSPENDED,
        )
        for i in range(size)
    )
    applicants = Institution.objects.bulk_create(
        Institution(
            name=f"Applicant {tag}-{i}",
            slug=f"applicant-{tag}-{i}",
            sector="manufacturing",
            country="Taiwan",
            status=Institution.Status.APPLIED,
        )
        for i in range(size)
    )
    MembershipApplication.objects.bulk_create(
        MembershipApplication(
            institution=institution,
            contact_name="Contact",
            contact_email=f"contact-{institution.slug}@example.org",
            motivation="To learn together.",
        )
        for institution in applicants
    )
    base = scenario.extra.get("base") or launch(scenario)
    scenario.extra["base"] = base
    first = TrainingRun.objects.filter(problem=scenario.problem).count() + 1
    runs = clone_runs(base, max(1, size // 20), TrainingRun.Status.SUCCEEDED, first)
    clone_runs(base, max(1, size // 20), TrainingRun.Status.FAILED, first + len(runs))
    add_rounds(runs, size)
    for i in range(max(1, size // 20)):
        audit_record(
            actor=scenario.a.admin,
            action="test.recorded",
            target=scenario.a.institution,
            payload={"i": i},
        )


def count_queries(client, url: str) -> int:
    # The chain badge re-hashes only events written since its last check: settle it first.
    audit_chain_status()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


# --- Home page: public figures -------------------------------------------------------------


def test_home_shows_public_figures_to_visitors(client, ready):
    run = launch(ready)
    add_rounds([run], 3)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    services.problem_propose(
        actor=ready.b.researcher,
        slug="secret-fraud",
        title="Confidential fraud signals",
        sector="finance",
        summary="Invitation only.",
        question="Is it fraud?",
        visibility=Problem.Visibility.INVITATION,
        **DEFINITION,
    )
    page = squash(text(client.get(reverse("home"))))
    assert "3 member institutions" in page
    assert "2 problems" in page
    assert "1 training run completed" in page
    assert "3 federated rounds completed" in page
    assert "1 model produced" in page  # the run's final model; its rounds' are steps to it
    assert "0 models certified" in page and "0 models released" in page
    assert "Training 1" in page and "Proposed 1" in page
    assert "Medicine 3" in page
    # Counts only: no title of any problem, let alone an invitation-only one.
    assert "Confidential fraud signals" not in page
    assert "Tumour malignancy" not in page


def test_home_empty_state_says_how_to_start(client):
    page = squash(text(client.get(reverse("home"))))
    assert "No institution has been admitted yet." in page
    assert "No problem has been proposed yet." in page
    assert "No model has been trained yet." in page
    assert reverse("apply") in text(client.get(reverse("home")))


# --- Alliance dashboard --------------------------------------------------------------------


def test_dashboard_sends_visitors_to_log_in(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_dashboard_shows_the_alliance_to_a_member(client, ready):
    run = launch(ready)
    add_rounds([run], 4)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    client.force_login(ready.b.steward)
    response = client.get(reverse("dashboard"))
    page = text(response)
    flat = squash(page)
    assert "You act for Harbour Hospital as Data steward" in flat
    assert "4 federated rounds completed" in flat
    assert "Medicine 3" in flat
    # The activity chart: a labelled canvas, its data, and the same figures as a table.
    assert 'data-chart="activity-chart" role="img" aria-label=' in page
    data = json.loads(re.search(r'id="activity-chart"[^>]*>(.*?)</script>', page).group(1))
    assert data["datasets"][0]["label"] == "Runs launched"
    assert sum(data["datasets"][0]["data"]) == 1
    assert sum(data["datasets"][1]["data"]) == 4
    assert len(data["labels"]) == 12
    assert '<details class="figures">' in page
    # The latest models link to their run's page.
    assert "1 final model of a completed run in the alliance." in flat
    assert "Certified: 0; released: 0." in flat
    assert reverse("run", args=[SLUG, run.number]) in page
    # Recent activity: events the steward may read, and the way to the whole trail.
    assert "Run launched" in flat or "Agreement approved" in flat
    assert reverse("audit-list") in page


def test_dashboard_hides_models_of_problems_the_member_may_not_see(client, ready):
    run = launch(ready)
    add_rounds([run], 2)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    Problem.objects.filter(pk=ready.problem.pk).update(visibility=Problem.Visibility.INVITATION)
    outsider = make_site("outside-bank", "Outside Bank")
    client.force_login(outsider.researcher)
    page = squash(text(client.get(reverse("dashboard"))))
    # The alliance-wide count stays; which problem produced the models does not show.
    assert "1 final model of a completed run in the alliance." in page
    assert "Tumour malignancy" not in page
    assert "No model you may see has been produced yet." in page
    client.force_login(ready.a.viewer)
    assert "Tumour malignancy" in squash(text(client.get(reverse("dashboard"))))


def test_dashboard_for_staff_without_membership_points_to_the_console(client, ready):
    client.force_login(StaffFactory())
    response = client.get(reverse("dashboard"))
    assert response.status_code == 200
    page = text(response)
    assert reverse("admin:index") in page
    assert reverse("staff-overview") in page
    assert "Agreement approved" in page  # staff read every event


def test_dashboard_empty_states_say_what_to_do(client):
    client.force_login(UserFactory())
    page = squash(text(client.get(reverse("dashboard"))))
    assert "Your account does not belong to a member institution." in page
    assert "No run was launched and no round completed in the last 12 weeks." in page
    assert "No model you may see has been produced yet." in page
    assert "Nothing recorded yet that you may read." in page
    assert "Propose the first problem." in page


# --- Staff console -------------------------------------------------------------------------


def test_console_front_page_is_for_staff_only(client, ready):
    url = reverse("admin:index")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    client.force_login(ready.a.admin)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_console_front_page_shows_what_needs_staff(client, ready):
    base = launch(ready)
    [failed] = clone_runs(base, 1, TrainingRun.Status.FAILED, 2)
    applicant = Institution.objects.create(
        name="Keelung Port", slug="keelung-port", sector="transportation", country="Taiwan"
    )
    application = MembershipApplication.objects.create(
        institution=applicant, contact_name="Li", contact_email="li@keelung.example.org"
    )
    client.force_login(StaffFactory())
    page = text(client.get(reverse("admin:index")))
    flat = squash(page)
    assert "1 application waiting" in flat
    assert "Review Keelung Port" in flat
    assert reverse("admin:alliance_membershipapplication_change", args=[application.pk]) in page
    assert "Admitted 3" in flat and "Applied 1" in flat
    assert "1 failed run" in flat
    assert "Too few sites answered in round 1." in flat
    assert reverse("run", args=[SLUG, failed.number]) in page
    assert reverse("admin:projects_trainingrun_change", args=[failed.pk]) in page
    count = AuditEvent.objects.count()
    assert f"Verified: the chain holds up to event {count}." in flat
    assert reverse("staff-overview") in page
    # The app list is still there under the dashboard.
    assert 'href="/admin/projects/" class="section"' in page


def test_console_front_page_names_a_broken_audit_event(client, ready):
    client.force_login(StaffFactory())
    assert 'data-chain="ok"' in text(client.get(reverse("admin:index")))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE alliance_auditevent SET target_label = 'forged' WHERE seq = 2")
    flat = squash(text(client.get(reverse("admin:index"))))
    assert "The chain is broken: event 2 was altered after it was written." in flat
    assert "Event 1 holds." in flat


def test_console_front_page_empty_states(client):
    client.force_login(StaffFactory())
    flat = squash(text(client.get(reverse("admin:index"))))
    assert "No application is waiting." in flat
    assert "No run has failed." in flat


def test_staff_overview_links_to_the_console(client):
    client.force_login(StaffFactory())
    assert reverse("admin:index") in text(client.get(reverse("staff-overview")))


# --- Bounded queries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url_name", "who"),
    [
        ("home", None),
        ("dashboard", "a.researcher"),
        ("dashboard", "staff"),
        ("admin:index", "staff"),
    ],
)
def test_query_count_does_not_grow_with_the_data(client, ready, url_name, who):
    if who == "staff":
        client.force_login(StaffFactory())
    elif who is not None:
        site, role = who.split(".")
        client.force_login(getattr(getattr(ready, site), role))
    url = reverse(url_name)
    grow(ready, 10)
    small = count_queries(client, url)
    grow(ready, 500)
    large = count_queries(client, url)
    assert small == large, f"{url}: {small} queries with little data, {large} with more"
    figures = {"home": "510 federated rounds completed", "admin:index": "26 failed runs"}
    expected = figures.get(url_name, "26 final models of completed runs in the alliance")
    assert expected in squash(text(client.get(url)))
