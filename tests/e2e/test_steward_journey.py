"""A data steward compares two versions of an agreement, then approves the new one, reading
what follows before confirming. Screenshots: steward-1-compare.png, steward-2-confirm.png,
steward-3-approved.png."""

import re

import pytest

from projects import services
from projects.models import AgreementVersion
from tests.e2e.conftest import ARTIFACTS, log_in
from tests.factories import PASSWORD
from tests.projects.scenario import build_scenario, terms

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_steward_compares_versions_and_approves_with_confirmation(page):
    scenario = build_scenario().ready()
    services.agreement_draft(
        actor=scenario.a.researcher,
        problem=scenario.refresh(),
        change_note="Products may use the model; revenue is shared.",
        **terms(
            purpose="Train a tumour malignancy classifier for screening and for products.",
            commercial_use=True,
            revenue_sharing="In proportion to the rows each contributor's data brought.",
        ),
    )
    services.agreement_approve(
        actor=scenario.a.steward,
        version=AgreementVersion.objects.get(number=2),
        terms_sha256=AgreementVersion.objects.get(number=2).terms_sha256,
    )
    title = scenario.problem.title

    log_in(page, scenario.b.steward.username, PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Inbox").click()
    page.get_by_role("link", name=f"Approve agreement version 2 of {title}").click()
    page.get_by_role("link", name="Compare version 2 with version 1").click()

    page.get_by_role("heading", name="Agreement version 1 compared with version 2").wait_for()
    table = page.locator("table.agreement-diff")
    purpose = table.locator("tr", has_text="Purpose")
    assert purpose.locator("td.new ins").inner_text().strip() == "and for products."
    assert purpose.locator("td.old del").inner_text().strip() == "research."
    commercial = table.locator("tr", has_text="Commercial use allowed")
    assert commercial.locator("td.old").inner_text() == "no"
    assert commercial.locator("td.new").inner_text() == "yes"
    assert "3 terms changed." in page.locator("main").inner_text()
    page.screenshot(path=str(ARTIFACTS / "steward-1-compare.png"), full_page=True)

    page.get_by_role("link", name="Read version 2").click()
    approve = page.locator("details#approve")
    # Nothing is decided by the first click: it opens the confirmation.
    page.get_by_text("Approve version 2…").click()
    confirmation = approve.locator("form").inner_text()
    assert "Harbour Hospital agrees to exactly the terms above (version 2" in confirmation
    assert "Yours is the last approval: version 2 takes effect at once and replaces version 1." in (
        confirmation
    )
    assert AgreementVersion.objects.get(number=2).status == AgreementVersion.Status.PENDING
    approve.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "steward-2-confirm.png"), full_page=False)

    page.get_by_role("button", name="Yes, approve version 2").click()
    message = page.get_by_text("Your approval is recorded. Version 2 is in effect.")
    message.wait_for()
    assert message.is_visible() and page.evaluate("window.scrollY") < 200  # in view
    assert AgreementVersion.objects.get(number=2).status == AgreementVersion.Status.EFFECTIVE
    assert re.search(r"Approved", page.locator("table.matrix").inner_text())
    page.screenshot(path=str(ARTIFACTS / "steward-3-approved.png"), full_page=False)
