"""The dashboards fit a phone's width: wide tables scroll inside themselves, the page does not,
and a word longer than the screen (a 5,000-character comment, a 200-character institution name)
wraps instead of widening the page. The main menu folds behind its button."""

import pytest
from django.urls import reverse

from projects import services
from projects.services import runs
from tests.e2e.conftest import ARTIFACTS
from tests.factories import PASSWORD, InstitutionFactory
from tests.projects.scenario import build_scenario
from tests.projects.test_dashboard_run import seed

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def test_dashboards_fit_a_phone(page, monkeypatch):
    scenario = build_scenario().ready()
    # The run is only read here; nobody should start training it.
    monkeypatch.setattr(runs.launch, "send_advance", lambda run_id: None)
    run = runs.run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=runs.LaunchConfig(rounds=40)
    )
    seed(scenario, run, 30)
    slug = scenario.problem.slug
    services.problem_comment(
        actor=scenario.a.researcher, problem=scenario.problem, revision=1, body="x" * 5000
    )
    InstitutionFactory(name="Institution" + "N" * 189, slug="long-name")
    pages = {
        "home": reverse("home"),
        "dashboard": reverse("dashboard"),
        "my institution": reverse("my-institution"),
        "inbox": reverse("inbox"),
        "problem": reverse("problem-detail", args=[slug]),
        "runs": reverse("run-list", args=[slug]),
        "run": reverse("run", args=[slug, run.number]),
        "audit trail": reverse("audit-list"),
        "revision and its comments": reverse("problem-revision", args=[slug, 1]),
    }

    page.set_viewport_size(PHONE)
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(scenario.a.researcher.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")
    # The menu is folded: the header takes one line until its button opens it.
    header = page.locator("header.topbar")
    assert header.bounding_box()["height"] < 60
    menu = page.get_by_role("navigation", name="Main", include_hidden=True)
    assert not menu.is_visible()
    page.get_by_role("button", name="Menu").click()
    assert menu.get_by_role("link", name="Audit trail").is_visible()
    assert page.get_by_role("button", name="Menu").get_attribute("aria-expanded") == "true"

    too_wide = {}
    for name, path in pages.items():
        response = page.goto(path)
        assert response is not None and response.status == 200, name
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[name] = width
        if name == "run":
            page.locator("canvas[data-points]").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "run-on-a-phone.png"), full_page=True)
    assert not too_wide, f"pages wider than a {PHONE['width']} px phone: {too_wide}"
