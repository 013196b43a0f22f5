"""A researcher launches a federated run in the browser and watches its rounds arrive: the
curve gains a point per completed round without a reload and the final accuracy shows."""

import json
import re

import pytest

from projects.models import TrainingRun
from tests.e2e.conftest import ARTIFACTS
from tests.projects.federation_setup import SITES, seed_medical
from tests.projects.test_federated_runs import workers

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


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
    final = run.round_set.get(number=4)
    headline = page.locator("#run-headline").inner_text()
    assert "Accuracy of the final model" in headline
    assert f"{final.metrics['accuracy']:.4f}" in headline
    # Every site contributed to every round.
    assert page.locator("#round-4 td.site-contributed").count() == len(SITES)
    # Cancelling makes no sense any more: the offer went with the last round.
    assert not page.get_by_text("Cancel this run").is_visible()
    model = run.models.get(round_number=4)
    assert model.sha256 in page.content()
    page.screenshot(path=str(ARTIFACTS / "run-succeeded.png"), full_page=True)
