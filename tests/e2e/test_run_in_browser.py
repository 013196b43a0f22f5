"""A researcher launches a federated run in the browser and watches its rounds arrive: the
curve gains a point per completed round without a reload and the final accuracy shows. While
no round closes, the poller keeps the charts it has drawn."""

import json
import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from projects.models import TrainingRun
from tests.e2e.conftest import ARTIFACTS
from tests.projects.federation_setup import SITES, seed_medical
from tests.projects.scenario import Scenario, build_scenario
from tests.projects.test_dashboard_run import SLUG, close_open_round, launch, seed
from tests.projects.test_federated_runs import workers

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.worker
def test_a_researcher_launches_a_run_and_watches_it_finish(page, broker_ready, tmp_path):
    problem = seed_medical(tmp_path)

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("kaohsiung-harbour-hospital-researcher")
    page.get_by_label("Password").fill("alliance-demo")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=re.compile("Hello")).wait_for()

    page.goto(problem.get_absolute_url())
    page.get_by_role("link", name=re.compile("The runs that train this problem")).click()
    page.get_by_role("link", name="Launch a run").click()
    page.get_by_role("heading", name="Launch a training run").wait_for()
    page.locator("#id_rounds").fill("4")

    with workers(["coordinator", *[f"site.{slug}" for slug in SITES]]):
        page.get_by_role("button", name="Launch the run").click()
        page.get_by_role("heading", name=re.compile("Run 1")).wait_for()
        # A mark on the window survives only if the page is never reloaded.
        page.evaluate("window.__stayedOnPage = true")
        accuracy = page.locator('canvas[data-chart="run-chart-accuracy"]')
        # The curve appears with the first completed round, brought by the poller.
        page.locator('canvas[data-chart="run-chart-accuracy"][data-points]').wait_for(
            timeout=60_000
        )
        page.locator('#run-live[data-finished="true"]').wait_for(timeout=60_000)

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert page.evaluate("window.__stayedOnPage") is True
    live = page.locator("#run-live")
    assert "Succeeded" in live.inner_text()
    assert page.locator("#round-4").is_visible()
    # One point per completed round, drawn by Chart.js from the refreshed part's data.
    assert accuracy.get_attribute("data-points") == "4"
    timings = page.locator('canvas[data-chart="run-chart-timings"]')
    assert timings.get_attribute("data-points") == "4"
    points = json.loads(page.locator("script#run-chart-accuracy").text_content())
    assert points["labels"] == ["1", "2", "3", "4"]
    # The headline: the final model's own figure, scored at the sites after the last round.
    final = run.models.get(round_number=4)
    headline = page.locator("#run-headline").inner_text()
    assert "ROC AUC of the final model, on the contributors" in headline
    assert f"{final.metrics['roc_auc']:.4f}" in headline
    # Every site contributed to every round.
    assert page.locator("#round-4 td.site-contributed").count() == len(SITES)
    # Cancelling makes no sense any more: the offer went with the last round.
    assert not page.get_by_text("Cancel this run").is_visible()
    model = run.models.get(round_number=4)
    assert model.sha256 in page.content()
    page.screenshot(path=str(ARTIFACTS / "run-succeeded.png"), full_page=True)


@pytest.fixture
def ready(transactional_db) -> Scenario:
    return build_scenario().ready()


def test_the_page_keeps_its_charts_and_shows_a_closed_round_as_it_closes(page, live_server, ready):
    run = launch(ready, rounds=20)
    seed(ready, run, 6)
    client = Client()
    client.force_login(ready.a.researcher)
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    polls: list[str] = []
    page.on("request", lambda request: "/live/" in request.url and polls.append(request.url))
    accuracy = 'canvas[data-chart="run-chart-accuracy"]'
    # The page asks for its live part at once; that answer puts the part in place, and keeps
    # the charts already drawn.
    with page.expect_response(lambda response: "/live/" in response.url):
        page.goto(reverse("run", args=[SLUG, run.number]))
    page.locator(f'{accuracy}[data-points="6"]').wait_for()
    page.evaluate(
        f"""() => {{
        document.querySelector('{accuracy}').dataset.original = "yes";
        document.getElementById("run-live").dataset.original = "yes";
    }}"""
    )
    assert page.locator("script#run-chart-accuracy").count() == 1
    assert polls and all("charts=" in address for address in polls)

    # The next request is held until the run changes; a round that closes answers it.
    close_open_round(run, 7)
    page.locator(f'{accuracy}[data-points="7"]').wait_for(timeout=10_000)
    assert page.locator(f'{accuracy}[data-original="yes"]').count() == 0  # drawn afresh
    assert page.locator("#run-live:not([data-original])").count() == 1
    assert any("seen=" in address for address in polls)
    assert page.locator('canvas[data-chart="run-chart-timings"]').get_attribute("data-points") == (
        "7"
    )
    assert page.locator("#round-7 td.site-contributed").count() == 3
    page.screenshot(path=str(ARTIFACTS / "run-live-charts-kept.png"), full_page=True)
