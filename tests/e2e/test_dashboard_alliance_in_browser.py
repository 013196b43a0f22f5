"""A member reads the alliance dashboard's chart; staff read the console's front page."""

import re

import pytest

from projects.services import runs
from tests.e2e.conftest import ARTIFACTS
from tests.factories import PASSWORD, StaffFactory
from tests.projects.scenario import build_scenario
from tests.projects.test_dashboard_alliance import add_rounds, clone_runs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _log_in(page, user) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=re.compile("Hello")).wait_for()


def test_member_reads_the_dashboard_and_staff_the_console(page, monkeypatch):
    scenario = build_scenario().ready()
    # The run is only read here; nobody should start training it.
    monkeypatch.setattr(runs.launch, "send_advance", lambda run_id: None)
    run = runs.run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=runs.LaunchConfig(rounds=3)
    )
    add_rounds([run], 30)
    clone_runs(run, 1, "failed", 2)

    page.goto("/")
    figures = page.locator("#figures")
    assert "30 federated rounds completed" in " ".join(figures.inner_text().split())
    page.screenshot(path=str(ARTIFACTS / "home-figures.png"), full_page=True)

    _log_in(page, scenario.b.researcher)
    canvas = page.locator('canvas[data-chart="activity-chart"]')
    # charts.js marks the canvas once drawn: one point per week.
    page.wait_for_function(
        "document.querySelector('canvas[data-chart=\"activity-chart\"]').dataset.points === '12'"
    )
    assert canvas.get_attribute("role") == "img"
    page.locator("details.figures summary").click()
    rows = page.locator("details.figures tbody tr")
    assert rows.count() == 12
    assert sum(int(r.locator("td").last.inner_text()) for r in rows.all()) == 30
    page.get_by_role("link", name="Run 1").first.click()
    page.wait_for_url(re.compile(r"/problems/tumour-malignancy/runs/1/$"))
    page.go_back()
    page.screenshot(path=str(ARTIFACTS / "dashboard-alliance.png"), full_page=True)

    page.get_by_role("button", name=re.compile("Log out")).click()
    _log_in(page, StaffFactory(username="console"))
    page.goto("/admin/")
    board = page.locator("#staff-dashboard")
    text = " ".join(board.inner_text().split())
    assert "Verified: the chain holds up to event" in text
    assert "1 failed run" in text
    assert "0 applications waiting" in text
    page.screenshot(path=str(ARTIFACTS / "admin-staff-dashboard.png"), full_page=True)
