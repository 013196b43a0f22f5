"""A researcher on a phone follows a live run to its end: the menu opens from its button, the
page says when it loses the portal and recovers by itself, and once the run is over the launch
message goes and the run reads as finished. Real workers train the run.

Screenshots: phone-run-1-launched.png, phone-run-2-connection-lost.png,
phone-run-3-finished.png.
"""

import pytest
from playwright.sync_api import expect

from projects.models import TrainingRun
from tests.e2e.conftest import ARTIFACTS, log_in
from tests.projects.federation_setup import SITES, seed_medical
from tests.projects.test_federated_runs import workers

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def test_a_researcher_on_a_phone_follows_a_live_run_to_its_end(page, broker_ready, tmp_path):
    seed_medical(tmp_path)
    page.set_viewport_size(PHONE)
    log_in(page, "kaohsiung-harbour-hospital-researcher", "alliance-demo")
    menu = page.get_by_role("navigation", name="Main", include_hidden=True)
    page.get_by_role("button", name="Menu").click()
    menu.get_by_role("link", name="Problems").click()
    page.get_by_role("link", name="Tumour malignancy from biopsy features").click()
    page.get_by_role("link", name="Launch a run").click()
    # Only the chosen strategy's option shows (the form's script hides the others once it has
    # run: expect waits for it, where is_visible() read the page before it on a busy machine).
    expect(page.get_by_label("FedProx: proximal term μ")).to_be_hidden()
    page.get_by_label("Aggregation strategy").select_option("fedprox")
    expect(page.get_by_label("FedProx: proximal term μ")).to_be_visible()
    expect(page.get_by_label("FedAdam: server learning rate η")).to_be_hidden()
    page.locator("#id_rounds").fill("5")

    with workers(["coordinator", *[f"site.{slug}" for slug in SITES]]):
        page.get_by_role("button", name="Launch the run").click()
        page.get_by_role("heading", name="Run 1").wait_for()
        launched = page.get_by_text("Run 1 is launched")
        assert launched.is_visible()
        page.screenshot(path=str(ARTIFACTS / "phone-run-1-launched.png"))

        # The portal stops answering the poller for a while: the page says so, then recovers.
        page.route("**/live/**", lambda route: route.abort())
        lost = page.locator("#run-connection")
        lost.wait_for(state="visible", timeout=10_000)
        assert "Connection to the portal lost" in lost.inner_text()
        assert "stale" in page.locator("#run-live").get_attribute("class")
        page.screenshot(path=str(ARTIFACTS / "phone-run-2-connection-lost.png"))
        page.unroute("**/live/**")
        lost.wait_for(state="hidden", timeout=15_000)

        page.locator('#run-live[data-finished="true"]').wait_for(timeout=90_000)

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert run.strategy == "fedprox"
    assert not launched.is_visible()  # the launch message ended with the run
    assert "Succeeded" in page.locator("#run-live").inner_text()
    assert "5 / 5" in page.locator("#run-live").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=str(ARTIFACTS / "phone-run-3-finished.png"), full_page=True)
