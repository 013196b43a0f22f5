"""A data steward approves a data-use agreement in the browser, and the problem is data ready."""

import re

import pytest

from projects.models import AgreementVersion, Problem
from tests.e2e.conftest import ARTIFACTS
from tests.factories import PASSWORD
from tests.projects.scenario import build_scenario

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_last_stewards_approval_makes_the_problem_data_ready(page):
    scenario = build_scenario()
    scenario.propose()
    scenario.join()
    scenario.ratify()
    scenario.register()
    scenario.draft()
    scenario.approve(scenario.a)  # North Hospital has approved; Harbour Hospital is the last
    title = scenario.problem.title

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("harbour-hospital-steward")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=re.compile("Hello")).wait_for()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Inbox").click()
    page.get_by_role("heading", name="Inbox").wait_for()
    page.get_by_role("link", name=f"Approve agreement version 1 of {title}").click()

    page.get_by_role("heading", name=re.compile("Data-use agreement for .*version 1")).wait_for()
    document = page.locator("article.agreement-document")
    assert "Only these model families may be trained on the data: Logistic regression." in (
        document.inner_text()
    )
    assert scenario.agreement.terms_sha256 in document.inner_text()
    matrix = page.locator("table.matrix")
    assert "Awaiting" in matrix.locator("tr", has_text="Harbour Hospital").inner_text()

    page.get_by_text("Approve version 1…").click()  # opens the confirmation
    page.get_by_role("button", name="Yes, approve version 1").click()
    page.get_by_text("Version 1 is in effect.").wait_for()
    assert "Approved" in matrix.locator("tr", has_text="Harbour Hospital").inner_text()
    assert AgreementVersion.objects.get(pk=scenario.agreement.pk).status == "effective"

    page.get_by_role("link", name=title).first.click()
    current = page.locator('[aria-current="step"]')
    current.wait_for()
    assert "Data ready" in current.inner_text()
    assert Problem.objects.get(pk=scenario.problem.pk).stage == Problem.Stage.DATA_READY
    page.screenshot(path=str(ARTIFACTS / "agreement-effective-data-ready.png"), full_page=True)
