"""The run dashboard: curves, participation matrix, timings, windows of rounds, query counts.

Rounds and site answers are written in bulk, as the coordinator would have left them, so a run
of hundreds of rounds costs a fraction of a second to build.
"""

import datetime
import html
import json
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from projects.dashboards.run import WINDOW
from projects.models import Dataset, ModelVersion, Round, SiteRound, TrainingRun
from projects.services.runs import LaunchConfig, run_changed, run_launch
from tests.projects.scenario import Scenario, make_site

pytestmark = pytest.mark.django_db

SLUG = "tumour-malignancy"
TIMINGS = {
    "dispatch": 0.01,
    "queue_wait": 0.02,
    "site_compute": 1.25,
    "collection": 0.03,
    "aggregation": 0.004,
    "persistence": 0.005,
}
DROPPED = "No answer before the round's deadline."
REJECTED = "The update moves the model farther than the run allows (norm=99)."


def url(name: str, *args) -> str:
    return reverse(name, args=args)


def text(response) -> str:
    return html.unescape(response.content.decode())


def chart(page: str, chart_id: str) -> dict:
    found = re.search(rf'<script id="{chart_id}" type="application/json">(.*?)</script>', page)
    assert found, f"no chart data {chart_id}"
    return json.loads(found.group(1))


def launch(scenario: Scenario, rounds: int = 10) -> TrainingRun:
    return run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=LaunchConfig(rounds=rounds)
    )


def third_dataset(scenario: Scenario) -> Dataset:
    """The validator's site takes part in the rounds here, so every round has three sites."""
    c = scenario.c
    return Dataset.objects.filter(institution=c.institution).first() or Dataset.objects.create(
        problem=scenario.problem,
        institution=c.institution,
        registered_by=c.steward,
        name="Held-out biopsies",
        site_key="held-out.csv",
        row_count=60,
        sha256="ef" * 32,
        columns=[],
        revision=1,
    )


def own_figures(n: int, closed: int) -> dict[str, float]:
    """The figures of the model after round ``n`` (0: the initial model), as the sites score it."""
    return {"accuracy": 0.5 + n / (4 * closed), "loss": 1.0 / max(n, 0.5)}


def seed(scenario: Scenario, run: TrainingRun, closed: int, *, open_round: bool = True) -> None:
    """``closed`` succeeded rounds of three sites, then (optionally) one still training.

    North Hospital (A) always contributes; Harbour Hospital (B) is rejected every 7th round and
    contributes otherwise; the third site is dropped every 5th round. Every 10th round leaves
    a fourth institution out by the agreement's rules.
    """
    datasets = {d.institution_id: d for d in Dataset.objects.filter(problem=scenario.problem)}
    c_dataset = third_dataset(scenario)
    datasets[c_dataset.institution_id] = c_dataset
    a, b, c = scenario.a.institution, scenario.b.institution, scenario.c.institution
    start = timezone.now() - datetime.timedelta(hours=1)
    rounds = []
    for n in range(1, closed + 1):
        began = start + datetime.timedelta(seconds=4 * n)
        rounds.append(
            Round(
                run=run,
                number=n,
                status=Round.Status.SUCCEEDED,
                started_at=began,
                deadline_at=began + datetime.timedelta(minutes=2),
                closed_at=began + datetime.timedelta(seconds=2),
                contributors=3 - (n % 7 == 0) - (n % 5 == 0),
                metrics={"accuracy": 0.5 + n / (4 * closed), "loss": 1.0 / n},
                # The model the round started from: the previous round's, as scored by the sites.
                global_metrics=own_figures(n - 1, closed),
                timings=TIMINGS,
                excluded=[{"institution": "late", "name": "Late Clinic", "reason": "Left."}]
                if n % 10 == 0
                else [],
            )
        )
    if open_round:
        began = start + datetime.timedelta(seconds=4 * (closed + 1))
        rounds.append(
            Round(
                run=run,
                number=closed + 1,
                started_at=began,
                deadline_at=began + datetime.timedelta(minutes=2),
            )
        )
    Round.objects.bulk_create(rounds)
    ids = dict(Round.objects.filter(run=run).values_list("number", "id"))
    sites = []
    for n, round_id in ids.items():
        training = n > closed
        for institution, fails, status, reason in (
            (a, False, SiteRound.Status.CONTRIBUTED, ""),
            (b, n % 7 == 0, SiteRound.Status.REJECTED, REJECTED),
            (c, n % 5 == 0, SiteRound.Status.DROPPED, DROPPED),
        ):
            if training:
                status, reason = SiteRound.Status.DISPATCHED, ""
            elif not fails:
                status, reason = SiteRound.Status.CONTRIBUTED, ""
            sites.append(
                SiteRound(
                    round_id=round_id,
                    institution=institution,
                    dataset=datasets[institution.pk],
                    status=status,
                    reason=reason,
                    reason_code="norm" if status == SiteRound.Status.REJECTED else "",
                    sample_count=90 if status == SiteRound.Status.CONTRIBUTED else None,
                    metrics={"accuracy": 0.6, "loss": 0.7, "validation_rows": 30.0}
                    if status == SiteRound.Status.CONTRIBUTED
                    else {},
                    timings={"compute": 1.2, "queue_wait": 0.02},
                )
            )
    SiteRound.objects.bulk_create(sites)
    ModelVersion.objects.bulk_create(
        ModelVersion(
            run=run,
            round_number=n,
            file=f"models/run{run.pk}-{n}.npy",
            sha256=f"{run.pk:08x}{n:056x}",
            size=288,
            metrics=own_figures(n, closed),
        )
        for n in range(1, closed + 1)  # the launch stored the initial model
    )
    run.status = TrainingRun.Status.RUNNING if open_round else TrainingRun.Status.SUCCEEDED
    run.started_at = start
    run.finished_at = None if open_round else start + datetime.timedelta(seconds=4 * closed + 3)
    run.save()


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


# --- Bounded ---------------------------------------------------------------------------------


def test_run_page_and_live_part_queries_do_not_grow_with_rounds(client, ready):
    small, large = launch(ready, rounds=11), launch(ready, rounds=500)
    seed(ready, small, 10)
    seed(ready, large, 499)
    client.force_login(ready.b.viewer)
    client.get(url("run", SLUG, small.number))  # the first request warms caches up
    for name in ("run", "run-live"):
        few = _queries(client, url(name, SLUG, small.number))
        assert few == _queries(client, url(name, SLUG, large.number))
        # The oldest window is as cheap as the latest.
        assert few == _queries(client, url(name, SLUG, large.number) + "?before=40")
        assert few == _queries(client, url(name, SLUG, large.number) + "?after=7")


def test_cached_and_uncached_pages_take_the_same_queries(client, ready):
    run = launch(ready, rounds=60)
    seed(ready, run, 50)
    client.force_login(ready.b.viewer)
    client.get(url("run", SLUG, run.number))  # sessions and the like, not the closed rounds
    for query in ("", "?before=12"):
        cache.clear()
        cold = _queries(client, url("run", SLUG, run.number) + query)
        assert cold == _queries(client, url("run", SLUG, run.number) + query)


# --- Curves ----------------------------------------------------------------------------------


def test_curves_have_one_point_per_completed_round_and_a_line_per_site(client, ready):
    run = launch(ready, rounds=20)
    seed(ready, run, 12)
    client.force_login(ready.a.researcher)
    page = text(client.get(url("run", SLUG, run.number)))
    accuracy = chart(page, "run-chart-accuracy")
    assert accuracy["type"] == "line"
    assert accuracy["labels"] == [str(n) for n in range(1, 13)]  # not the round still training
    assert (accuracy["y_min"], accuracy["y_max"]) == (None, None)  # the axis follows the data
    by_label = {d["label"]: d["data"] for d in accuracy["datasets"]}
    # Round 12 started from the model after round 11, as the sites scored it.
    assert by_label["Global model the round started from"][-1] == pytest.approx(0.5 + 11 / 48)
    assert by_label["Local updates (weighted)"][-1] == pytest.approx(0.75)
    assert by_label["North Hospital"] == [0.6] * 12
    # Harbour's update was rejected in round 7: no point for it there.
    assert by_label["Harbour Hospital"][6] is None
    assert all(len(data) == 12 for data in by_label.values())
    loss = chart(page, "run-chart-loss")
    assert loss["datasets"][1]["data"][1] == pytest.approx(0.5)
    assert '<canvas data-chart="run-chart-accuracy" role="img" aria-label="' in page
    assert "js/charts.js" in page and "vendor/chartjs/chart.umd.min.js" in page
    # The figures are in a table too.
    assert '<details class="figures">' in page


def test_the_final_metric_is_headlined_when_the_run_succeeded(client, ready):
    run = launch(ready, rounds=8)
    seed(ready, run, 8, open_round=False)
    client.force_login(ready.a.researcher)
    page = text(client.get(url("run", SLUG, run.number)))
    headline = re.search(r'<li id="run-headline">(.*?)</li>', page, re.S).group(1)
    assert '<span class="figure">0.7500</span>' in headline
    assert "Accuracy of the final model, on the contributors" in headline
    assert "8 / 8" in page
    assert 'data-finished="true"' in page


# --- Participation ---------------------------------------------------------------------------


def test_matrix_marks_each_site_with_the_reason_on_hover_and_for_screen_readers(client, ready):
    run = launch(ready, rounds=20)
    seed(ready, run, 14)
    client.force_login(ready.b.viewer)
    page = text(client.get(url("run", SLUG, run.number)))

    def row(n: int) -> str:
        return re.search(rf'<tr id="round-{n}">(.*?)</tr>', page, re.S).group(1)

    header = re.search(r'<table class="matrix run-rounds">.*?</thead>', page, re.S).group(0)
    columns = re.findall(r'<th scope="col">([^<]+)</th>', header)
    assert columns[-4:] == ["Data University", "Harbour Hospital", "Late Clinic", "North Hospital"]
    assert re.findall(r'<td class="site-(\w+)">', row(1)) == [
        "contributed",
        "contributed",
        "absent",
        "contributed",
    ]
    seven = row(7)
    assert f'title="Rejected: {REJECTED}" tabindex="0"' in seven
    assert f'<span class="visually-hidden">Rejected: {REJECTED}</span>' in seven
    ten = row(10)
    assert f'title="Dropped at the deadline: {DROPPED}"' in ten
    assert '<td class="site-none"><abbr class="mark none" title="Left out: Left."' in ten
    assert re.findall(r'<td class="site-(\w+)">', row(15)) == [
        "dispatched",
        "dispatched",
        "absent",
        "dispatched",
    ]
    assert "What the marks mean" in page  # the legend


def test_rounds_table_shows_status_contributions_and_metrics(client, ready):
    run = launch(ready, rounds=20)
    seed(ready, run, 7)
    client.force_login(ready.a.researcher)
    page = text(client.get(url("run", SLUG, run.number)))
    seven = re.search(r'<tr id="round-7">(.*?)</tr>', page, re.S).group(1)
    assert '<span class="badge ok">Succeeded</span>' in seven
    assert '<td class="num">2</td>' in seven  # one rejected
    assert '<td class="num">0.7143</td>' in seven  # the model round 7 started from, 0.5 + 6/28


# --- Timings ---------------------------------------------------------------------------------


def test_timings_are_a_stacked_chart_and_a_table(client, ready):
    run = launch(ready, rounds=20)
    seed(ready, run, 5)
    client.force_login(ready.a.researcher)
    page = text(client.get(url("run", SLUG, run.number)))
    timings = chart(page, "run-chart-timings")
    assert timings["type"] == "bar" and timings["stacked"] is True
    assert timings["labels"] == ["1", "2", "3", "4", "5"]
    assert [d["label"] for d in timings["datasets"]] == [
        "dispatch",
        "queue",
        "site training",
        "collection",
        "aggregation",
        "storage",
    ]
    assert timings["datasets"][2]["data"] == [1.25] * 5
    table = page[page.index('id="timings"') : page.index('id="models"')]
    assert '<td class="num">1.250</td>' in table
    assert '<td class="num">2.00</td>' in table  # wall time
    assert table.count('<tr><th scope="row">') == 5  # the round still training has none


# --- Windows of rounds -----------------------------------------------------------------------


def test_long_runs_show_a_window_of_rounds_with_cursor_links(client, ready):
    w = WINDOW
    closed = 6 * w
    first = closed - w + 1  # the latest window is first..closed
    run = launch(ready, rounds=closed + 10)
    seed(ready, run, closed, open_round=False)
    client.force_login(ready.a.researcher)
    base = url("run", SLUG, run.number)

    page = text(client.get(base))
    assert f'id="round-{closed}"' in page and f'id="round-{first}"' in page
    assert f'id="round-{first - 1}"' not in page
    assert f"{base}?before={first}#rounds" in page
    assert "?after=" not in page
    assert len(chart(page, "run-chart-accuracy")["labels"]) == closed  # the curve covers all
    assert f"{run.pk:08x}{closed:056x}" in page  # the model of the newest round
    assert f"{run.pk:08x}{first - 1:056x}" not in page

    page = text(client.get(base + f"?before={first}"))
    assert f'id="round-{first - 1}"' in page and f'id="round-{first - w}"' in page
    assert f'id="round-{first}"' not in page and f'id="round-{first - w - 1}"' not in page
    assert (
        f"{base}?before={first - w}#rounds" in page and f"{base}?after={first - 1}#rounds" in page
    )
    assert f'data-live-url="{url("run-live", SLUG, run.number)}?before={first}"' in page

    page = text(client.get(base + f"?before={w + 1}"))
    assert 'id="round-1"' in page and f'id="round-{w}"' in page
    assert "?before=" not in page.split('id="rounds"')[1].split('id="timings"')[0]
    assert "0 (initial model)" in page

    page = text(client.get(base + f"?after={w}"))
    assert f'id="round-{w + 1}"' in page and f'id="round-{2 * w}"' in page
    assert f'id="round-{2 * w + 1}"' not in page


@pytest.mark.parametrize("query", ["?before=abc", "?after=-3", "?before=1.5"])
def test_bad_cursors_show_the_latest_rounds_with_a_message(client, ready, query):
    run = launch(ready, rounds=20)
    seed(ready, run, 3)
    client.force_login(ready.a.researcher)
    response = client.get(url("run", SLUG, run.number) + query)
    assert response.status_code == 200
    page = text(response)
    assert "take a round number" in page
    assert 'id="round-4"' in page
    assert client.get(url("run-live", SLUG, run.number) + query).status_code == 200


# --- Empty and invisible ---------------------------------------------------------------------


def test_a_queued_run_says_what_happens_next(client, ready):
    run = launch(ready, rounds=3)
    client.force_login(ready.a.researcher)
    page = text(client.get(url("run", SLUG, run.number)))
    assert page.count('class="empty-state"') == 3  # curves, rounds, timings
    assert "0 (initial model)" in page
    assert "The first round starts as soon as the coordinator picks the run up." in page
    assert "run-chart-" not in page


def test_runs_of_an_invisible_problem_answer_404(client, scenario):
    scenario.ready()
    TrainingRun.objects.all().delete()
    scenario.problem.visibility = "invitation"
    scenario.problem.save()
    run = launch(scenario, rounds=3)
    outsider = make_site("outside-bank", "Outside Bank")
    client.force_login(outsider.researcher)
    assert client.get(url("run", SLUG, run.number)).status_code == 404
    assert client.get(url("run-live", SLUG, run.number)).status_code == 404


# --- The list of runs ------------------------------------------------------------------------


def test_run_list_pages_by_run_number(client, ready):
    first = launch(ready, rounds=3)
    fields = {
        f.attname: getattr(first, f.attname)
        for f in TrainingRun._meta.concrete_fields
        if f.attname not in ("id", "number")
    }
    TrainingRun.objects.bulk_create(TrainingRun(**fields, number=n) for n in range(2, 31))
    client.force_login(ready.c.viewer)
    base = url("run-list", SLUG)

    def numbers(page: str) -> list[int]:
        return [int(n) for n in re.findall(r'<th scope="row"><a href="[^"]+">Run (\d+)</a>', page)]

    page = text(client.get(base))
    assert numbers(page) == list(range(30, 5, -1))
    assert 'href="?before=6"' in page and 'href="?after=' not in page
    page = text(client.get(base + "?before=6"))
    assert numbers(page) == [5, 4, 3, 2, 1]
    assert 'href="?after=5"' in page and 'href="?before=' not in page
    page = text(client.get(base + "?after=5"))
    assert numbers(page) == list(range(30, 5, -1))
    page = text(client.get(base + "?before=x"))
    assert "take a run number" in page and numbers(page)[0] == 30
    page = text(client.get(base + "?after=99"))
    assert "No run on this side of the list." in page


# --- Cached closed rounds and the live part ---------------------------------------------------


def close_open_round(run: TrainingRun, number: int) -> None:
    """What the coordinator does when every site answered: the round and its sites, at once."""
    Round.objects.filter(run=run, number=number).update(
        status=Round.Status.SUCCEEDED,
        closed_at=timezone.now(),
        contributors=3,
        metrics={"accuracy": 0.9876, "loss": 0.1},
        global_metrics={"accuracy": 0.9123, "loss": 0.2},
        timings=TIMINGS,
    )
    SiteRound.objects.filter(round__run=run, round__number=number).update(
        status=SiteRound.Status.CONTRIBUTED, metrics={"accuracy": 0.8, "loss": 0.2}
    )
    run_changed(run.pk)  # a page following the run is woken by it


def test_a_round_that_closes_shows_on_the_next_request(client, ready):
    run = launch(ready, rounds=20)
    seed(ready, run, 6)
    client.force_login(ready.a.researcher)
    page = text(client.get(url("run", SLUG, run.number)))
    assert chart(page, "run-chart-accuracy")["labels"] == [str(n) for n in range(1, 7)]
    close_open_round(run, 7)
    page = text(client.get(url("run", SLUG, run.number)))
    accuracy = chart(page, "run-chart-accuracy")
    assert accuracy["labels"] == [str(n) for n in range(1, 8)]
    assert accuracy["datasets"][0]["data"][-1] == pytest.approx(0.9123)
    assert accuracy["datasets"][1]["data"][-1] == pytest.approx(0.9876)
    assert {d["label"]: d["data"][-1] for d in accuracy["datasets"][2:]} == {
        "Data University": 0.8,
        "Harbour Hospital": 0.8,
        "North Hospital": 0.8,
    }
    assert len(chart(page, "run-chart-timings")["labels"]) == 7
    # The headline: the global model the latest round started from, as the sites scored it.
    assert '<span class="figure">0.9123</span>' in page
    assert '<td class="site-contributed">' in re.search(
        r'<tr id="round-7">(.*?)</tr>', page, re.S
    ).group(1)


def test_the_cached_rounds_are_those_of_this_very_run(client, ready):
    """The key holds the launch time besides the id, which a database may give out again."""
    run = launch(ready, rounds=8)
    seed(ready, run, 8, open_round=False)
    client.force_login(ready.a.researcher)
    assert chart(text(client.get(url("run", SLUG, run.number))), "run-chart-accuracy")
    Round.objects.filter(run=run, number=8).update(global_metrics={"accuracy": 0.1234, "loss": 2.0})
    TrainingRun.objects.filter(pk=run.pk).update(
        created_at=run.created_at + datetime.timedelta(seconds=1)
    )
    page = text(client.get(url("run", SLUG, run.number)))
    assert chart(page, "run-chart-accuracy")["datasets"][0]["data"][-1] == pytest.approx(0.1234)


def test_the_live_part_resends_charts_only_when_a_round_closed(client, ready):
    run = launch(ready, rounds=20)
    seed(ready, run, 6)
    client.force_login(ready.a.researcher)
    live = url("run-live", SLUG, run.number)
    page = text(client.get(live))
    state = re.search(r'<div id="run-live"[^>]* data-charts="([^"]+)"', page).group(1)
    assert '<script id="run-chart-accuracy"' in page and "data-kept" not in page

    same = text(client.get(f"{live}?charts={state}"))
    assert "run-chart-accuracy" in same  # the chart's place, its title and figures
    assert '<script id="run-chart-' not in same and "<canvas" not in same
    assert f'<div id="run-chart-accuracy-box" data-state="{state}" data-kept></div>' in same
    assert f'<div id="run-chart-timings-box" data-state="{state}" data-kept></div>' in same
    assert 'id="round-7"' in same and "6 of 20 rounds done." in same
    assert len(same) < len(page)

    close_open_round(run, 7)
    page = text(client.get(f"{live}?charts={state}"))
    assert "data-kept" not in page
    assert chart(page, "run-chart-accuracy")["labels"][-1] == "7"
    assert re.search(r'data-charts="([^"]+)"', page).group(1) != state
    # A full page never leaves its charts out.
    assert "data-kept" not in text(client.get(url("run", SLUG, run.number) + f"?charts={state}"))
