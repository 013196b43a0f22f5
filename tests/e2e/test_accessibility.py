"""The main pages pass an automated accessibility check: axe-core finds nothing critical or
serious on them, for a visitor, a member and alliance staff.

axe-core is a test tool vendored under tests/e2e/vendor/ (see its README); it is put into each
page by the browser itself (an init script), never served by the portal.
"""

import json
from pathlib import Path

import pytest
from django.urls import reverse

from projects.services import runs
from tests.e2e.conftest import ARTIFACTS, log_in
from tests.factories import PASSWORD, StaffFactory
from tests.projects.scenario import build_scenario
from tests.projects.test_dashboard_run import seed

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
AXE_VERSION = "4.14.1"
BLOCKING = ("critical", "serious")


def _violations(page) -> list[dict]:
    result = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return {version: axe.version, violations: result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))};
        }"""
    )
    assert result["version"] == AXE_VERSION
    return [v for v in result["violations"] if v["impact"] in BLOCKING]


def test_main_pages_have_no_critical_or_serious_accessibility_violation(
    page, monkeypatch, mailbox_settings
):
    scenario = build_scenario().ready()
    # The run is only read here; nobody should start training it.
    monkeypatch.setattr(runs.launch, "send_advance", lambda run_id: None)
    run = runs.run_launch(
        actor=scenario.a.researcher, problem=scenario.refresh(), config=runs.LaunchConfig(rounds=6)
    )
    seed(scenario, run, 4)
    from projects import services
    from tests.projects.scenario import terms

    services.agreement_draft(
        actor=scenario.a.researcher, problem=scenario.refresh(), **terms(min_contributors=3)
    )
    slug = scenario.problem.slug
    page.context.add_init_script(path=str(AXE))

    visitor = {
        "home": reverse("home"),
        "apply": reverse("apply"),
        "log in": reverse("login"),
    }
    member = {
        "dashboard": reverse("dashboard"),
        "inbox": reverse("inbox"),
        "my institution": reverse("my-institution"),
        "problems": reverse("problem-list"),
        "problem": reverse("problem-detail", args=[slug]),
        "revision": reverse("problem-revision", args=[slug, 1]),
        "agreement": reverse("agreement-detail", args=[slug, 2]),
        "agreement comparison": reverse("agreement-compare", args=[slug]),
        "runs": reverse("run-list", args=[slug]),
        "launch form": reverse("run-launch", args=[slug]),
        "run": reverse("run", args=[slug, run.number]),
        "audit trail": reverse("audit-list"),
    }
    staff = {
        "staff overview": reverse("staff-overview"),
        "demo mailbox": reverse("staff-mailbox"),
        "audit trail (staff)": reverse("audit-list"),
    }
    found: dict[str, list[dict]] = {}

    def check(pages: dict[str, str]) -> None:
        for name, path in pages.items():
            response = page.goto(path)
            assert response is not None and response.status == 200, name
            page.wait_for_load_state("load")
            violations = _violations(page)
            if violations:
                found[name] = violations

    check(visitor)
    log_in(page, scenario.a.steward.username, PASSWORD)
    check({"agreement to decide": member["agreement"]})
    page.get_by_role("button", name="Log out").click()
    log_in(page, scenario.a.researcher.username, PASSWORD)
    check(member)
    page.get_by_role("button", name="Log out").click()
    log_in(page, StaffFactory(username="auditor").username, PASSWORD)
    check(staff)
    report = ARTIFACTS / "accessibility.json"
    report.write_text(json.dumps(found, indent=2), encoding="utf-8")
    assert not found, json.dumps(found, indent=2)


@pytest.fixture
def mailbox_settings(settings, tmp_path):
    """The demo mailbox on, so that its page is checked too."""
    settings.VAR_DIR = tmp_path
    settings.DEMO_MAILBOX = True
    settings.PORTAL_HTTPS = False
    settings.EMAIL_BACKEND = "portal.common.mailbox.DemoMailboxBackend"
