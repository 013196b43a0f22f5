"""A researcher launches a federated run in the browser and watches its rounds arrive."""

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
        # The page is not reloaded: the live fragment brings every round and the final state.
        page.locator('#run-live[data-finished="true"]').wait_for(timeout=60_000)

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED
    live = page.locator("#run-live")
    assert "Succeeded" in live.inner_text()
    assert page.locator("#round-4").is_visible()
    # Cancelling makes no sense any more: the offer went with the last round.
    assert not page.get_by_text("Cancel this run").is_visible()
    final = run.models.get(round_number=4)
    assert final.sha256 in page.content()
    page.screenshot(path=str(ARTIFACTS / "run-succeeded.png"), full_page=True)
