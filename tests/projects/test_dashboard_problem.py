"""The problem dashboard: next step, figures, ratification per revision, approvals by version,
the latest runs, and a query count that does not grow with runs and rounds."""

import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from projects import services
from projects.models import TrainingRun
from tests.projects.scenario import DEFINITION, Scenario
from tests.projects.test_dashboard_run import launch, seed

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"


def url(name: str, *args) -> str:
    return reverse(name, args=args)


def text(response) -> str:
    return html.unescape(response.content.decode())


def section(page: str, start: str, end: str) -> str:
    first = page.index(start)
    return page[first : page.index(end, first)]


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_problem_page_queries_do_not_grow_with_runs_and_rounds(client, ready):
    seed(ready, launch(ready, rounds=11), 10)
    client.force_login(ready.b.steward)
    client.get(url("problem-detail", SLUG))  # the first request warms caches up
    few = _queries(client, url("problem-detail", SLUG))
    seed(ready, launch(ready, rounds=500), 499)
    for _ in range(6):
        seed(ready, launch(ready, rounds=5), 3, open_round=False)
    assert _queries(client, url("problem-detail", SLUG)) == few


def test_a_data_ready_problem_says_the_next_step_and_its_figures(client, ready):
    client.force_login(ready.c.researcher)
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Next: a researcher of a contributing institution launches a training run." in page
    assert f'<a href="{url("run-list", SLUG)}">Training runs</a>' in page
    summary = section(page, 'class="problem-summary"', 'id="definition"')
    figures = dict(
        (label, value)
        for value, label in re.findall(
            r'<span class="figure">([^<]+)</span> <span class="label">([^<]+)</span>', summary
        )
    )
    assert figures["contributing institutions"] == "2"
    assert figures["datasets registered"] == "2"
    assert figures["rows at the sites (never here)"] == "240"
    assert figures["agreement in effect"] == "version 1"
    assert figures["training runs"] == "0"
    participants = section(page, 'id="participants"', "</ul>")
    assert '2</span> <span class="label">contributors (bring data)' in participants
    assert '1</span> <span class="label">validators (evaluate)' in participants
    # No run yet: the empty state says who may launch one.
    runs = section(page, 'id="runs"', 'id="revisions"')
    assert 'class="empty-state"' in runs
    assert "a researcher of a contributing institution may launch one" in runs


def test_the_latest_runs_show_status_rounds_and_final_metric(client, ready):
    seed(ready, launch(ready, rounds=8), 8, open_round=False)
    seed(ready, launch(ready, rounds=20), 4)
    client.force_login(ready.a.viewer)
    page = text(client.get(url("problem-detail", SLUG)))
    runs = section(page, 'id="runs"', 'id="revisions"')
    assert runs.index("Run 2") < runs.index("Run 1")  # newest first
    assert "8 of 8" in runs and "4 of 20" in runs
    assert 'Accuracy (final) <span class="num">0.7500</span>' in runs
    assert '<td>Accuracy <span class="num">0.7500</span>' in runs  # the running one: latest
    assert "✓</span> Succeeded" in runs and "…</span> Running" in runs
    assert url("run", SLUG, 1) in runs and url("run-list", SLUG) in runs
    assert '>2</span> <span class="label">runs launched' in runs
    assert '>1</span> <span class="label">training now' in runs


def test_ratification_is_shown_for_every_revision(client, ready):
    services.problem_revise(
        actor=ready.a.researcher,
        problem=ready.refresh(),
        change_note="Grade is required now.",
        **{**DEFINITION, "threshold": 0.95},
    )
    services.problem_ratify(actor=ready.b.researcher, problem=ready.refresh(), revision=2)
    client.force_login(ready.b.viewer)
    page = text(client.get(url("problem-detail", SLUG)))
    history = section(page, 'id="revisions"', "</table>")
    rows = re.findall(r"<tr><td>(.*?)</tr>", history, re.S)
    assert len(rows) == 2
    assert "Revision 2" in rows[0] and "awaiting" in rows[0]
    assert "by Harbour Hospital" in rows[0]
    assert "waiting for Data University, North Hospital" in rows[0]
    assert "Revision 1" in rows[1] and "ratified" in rows[1]
    assert "by Data University, Harbour Hospital, North Hospital" in rows[1]
    assert "Waiting for: Data University, North Hospital." in page  # the next step


def test_approval_matrix_is_institution_by_version(client, ready: Scenario):
    ready.draft(min_contributors=3)
    services.agreement_decline(
        actor=ready.b.steward, version=ready.agreement, reason="Three is too many for us."
    )
    client.force_login(ready.a.steward)
    page = text(client.get(url("problem-detail", SLUG)))
    grid = section(page, 'id="approvals"', "</table>")
    heads = re.findall(r'<th scope="col"><a href="[^"]+">(Version \d)</a>', grid)
    assert heads == ["Version 2", "Version 1"]
    rows = dict(re.findall(r'<th scope="row">([^<]+?)(?: <small.*?)?</th>(.*?)</tr>', grid, re.S))
    assert set(rows) == {"Harbour Hospital", "North Hospital"}  # the validator decides nothing
    harbour = rows["Harbour Hospital"]
    assert re.search(
        r'<abbr class="mark bad" title="Declined on [\d-]+\. Three is too many', harbour
    )
    assert "✗</span> Declined" in harbour
    assert "✓</span> Approved" in harbour  # version 1
    north = rows["North Hospital"]
    assert "…</span> Awaiting" in north and "✓</span> Approved" in north


def test_runs_of_a_problem_before_data_ready_say_when_they_start(client, scenario):
    scenario.propose()
    client.force_login(scenario.a.researcher)
    page = text(client.get(url("problem-detail", SLUG)))
    assert "Next: every contributor and validator ratifies revision 1." in page
    assert "Waiting for: North Hospital." in page
    runs = section(page, 'id="runs"', 'id="revisions"')
    assert "Runs start once the problem is data ready" in runs
    assert not TrainingRun.objects.exists()
