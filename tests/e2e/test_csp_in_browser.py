"""Under the Content-Security-Policy the portal's own scripts still work, inline ones do not run.

The ``page`` fixture fails any browser test whose pages made Chromium refuse something under the
policy; this test visits the pages no other browser test opens, and uses the behaviour that
moved out of inline handlers into static/js/portal.js.
"""

import pytest
from django.urls import reverse

from tests.factories import PASSWORD, StaffFactory
from tests.projects.scenario import build_scenario

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page, username: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")


def test_pages_work_under_the_policy(page):
    scenario = build_scenario().ready()
    slug, v = scenario.problem.slug, scenario.agreement.number

    # The language switcher (was an onchange attribute) still switches.
    page.goto(reverse("home"))
    with page.expect_navigation():
        page.select_option("#lang", "zh-hant")
    assert page.locator("html").get_attribute("lang") == "zh-hant"
    with page.expect_navigation():
        page.select_option("#lang", "en")
    assert page.locator("html").get_attribute("lang") == "en"

    # The API docs' Swagger UI starts from its own script file.
    page.goto(reverse("api:docs"))
    page.locator(".swagger-ui .info").wait_for()

    _login(page, scenario.a.researcher.username)
    page.goto(reverse("agreement-print", args=[slug, v]))
    page.evaluate("window.print = () => { window.printed = true; }")
    page.get_by_role("button", name="Print").click()
    assert page.evaluate("window.printed === true")

    # The console pages, Django's own change list style allowed by its hash.
    staff = StaffFactory(username="csp-staff", is_superuser=True)
    page.context.clear_cookies()
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(staff.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    page.goto(reverse("admin:alliance_auditevent_changelist"))
    page.goto(reverse("admin:axes_accessattempt_changelist"))
    page.goto(reverse("staff-overview"))


def test_the_policy_is_enforced(page, live_server):
    """An inline script put into a page does not run (in a page of its own: the refusal is
    what this test wants, and the fixture's page fails on any)."""
    other = page.context.browser.new_page()
    try:
        other.goto(live_server.url + reverse("home"))
        other.evaluate(
            """() => {
                const s = document.createElement('script');
                s.textContent = 'window.inlineRan = true';
                document.body.appendChild(s);
            }"""
        )
        assert other.evaluate("window.inlineRan === undefined")
        other.evaluate("window.portalRan = typeof document.querySelector === 'function'")
        assert other.evaluate("window.portalRan === true")
    finally:
        other.close()
