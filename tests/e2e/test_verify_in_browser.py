"""A researcher launches a run, sees its final model certified where the data lives and reads
its card; the validator's steward sees the evaluation its site made."""

import re

import pytest

from projects.demo import UNIVERSITY
from projects.models import Certification, TrainingRun
from tests.e2e.conftest import ARTIFACTS
from tests.projects.federation_setup import SITES, seed_medical
from tests.projects.test_federated_runs import workers

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("alliance-demo")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=re.compile("Hello")).wait_for()


@pytest.mark.worker
def test_a_run_is_certified_where_the_data_lives_and_its_card_read(page, broker_ready, tmp_path):
    problem = seed_medical(tmp_path)
    log_in(page, "kaohsiung-harbour-hospital-researcher")
    page.goto(f"/problems/{problem.slug}/runs/new/")
    page.locator("#id_rounds").fill("4")
    queues = ["coordinator", *[f"site.{slug}" for slug in [*SITES, UNIVERSITY]]]
    with workers(queues):
        page.get_by_role("button", name="Launch the run").click()
        page.get_by_role("heading", name=re.compile("Run 1")).wait_for()
        page.locator('#run-live[data-finished="true"]').wait_for(timeout=90_000)
        run = TrainingRun.objects.get()
        final = run.models.get(round_number=4)
        # The validators' verdict follows the final model's own figures.
        for _ in range(60):
            if Certification.objects.filter(model=final).exists():
                break
            page.wait_for_timeout(500)
    page.reload()
    verdict = page.locator("section.verdict")
    assert re.search(
        r"Certified: ROC AUC 0\.\d{4} ≥ 0\.95 on \d+ held-out rows at", verdict.inner_text()
    )
    page.screenshot(path=str(ARTIFACTS / "verify-run-certified.png"), full_page=True)
    verdict.get_by_role("link", name="Model card").click()
    page.get_by_role("heading", name=re.compile("Model card")).wait_for()
    assert final.sha256 in page.content()
    assert "Certified." in page.locator("main").inner_text()
    page.screenshot(path=str(ARTIFACTS / "verify-model-card.png"), full_page=True)

    log_in(page, f"{UNIVERSITY}-steward")
    page.goto(f"/problems/{problem.slug}/runs/1/models/4/")
    row = page.locator("tr", has_text="Held-out validation")
    assert "National Data Science University" in row.inner_text()
    assert "Scored" in row.inner_text() and "roc_auc" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "verify-validator-evaluation.png"), full_page=True)
