"""A newcomer follows the README's demo: an admin invites a researcher, staff find the
invitation in the demo mailbox, the researcher sets a password, finds the demo problem and
launches a first run, which real workers train to its end.

Screenshots: newcomer-1-invitation-sent.png, newcomer-2-mailbox.png,
newcomer-3-password-set.png, newcomer-4-problem.png, newcomer-5-first-run.png.
"""

import re

import pytest

from projects.models import TrainingRun
from tests.e2e.conftest import ARTIFACTS, log_in
from tests.projects.federation_setup import SITES, seed_medical
from tests.projects.test_federated_runs import workers

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DEMO_PASSWORD = "alliance-demo"
EMAIL = "hui-min.lin@taipei-north.example.org"


@pytest.fixture
def demo_mailbox(settings, live_server):
    """The embedded default's email, with links to the server under test."""
    settings.DEMO_MAILBOX = True
    settings.PORTAL_HTTPS = False
    settings.EMAIL_BACKEND = "portal.common.mailbox.DemoMailboxBackend"
    settings.PORTAL_BASE_URL = live_server.url


def test_a_newcomer_goes_from_the_mailboxs_invitation_to_a_first_run(
    page, broker_ready, tmp_path, demo_mailbox
):
    seed_medical(tmp_path)  # the demo, its sites' files under tmp_path (and its mailbox)

    with workers(["coordinator", *[f"site.{slug}" for slug in SITES]]):
        # 1. Taipei North Hospital's admin invites a researcher ("My institution").
        log_in(page, "taipei-north-hospital-admin", DEMO_PASSWORD)
        page.get_by_role("navigation", name="Main").get_by_role(
            "link", name="My institution"
        ).click()
        invite = page.locator("#invite-form")
        invite.get_by_label("First name").fill("Hui-Min")
        invite.get_by_label("Last name").fill("Lin")
        invite.get_by_label("Email").fill(EMAIL)
        invite.get_by_label("Role").select_option(label="Researcher")
        invite.get_by_role("button", name="Send invitation").click()
        confirmation = page.get_by_text(f"Invitation sent to {EMAIL}.")
        confirmation.wait_for()
        assert page.url.endswith("#messages")
        box = confirmation.bounding_box()
        assert box is not None and 0 <= box["y"] < page.viewport_size["height"]  # in view
        page.screenshot(path=str(ARTIFACTS / "newcomer-1-invitation-sent.png"))
        page.get_by_role("button", name=re.compile("Log out")).click()

        # 2. Staff open the demo mailbox ("Staff", then "Demo mailbox"); the worker sent it.
        log_in(page, "staff", DEMO_PASSWORD)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Staff").click()
        page.get_by_role("link", name="Demo mailbox").click()
        invitation = page.locator("article.mail", has_text=EMAIL)
        for _ in range(100):
            if invitation.count():
                break
            page.wait_for_timeout(200)
            page.reload()
        heading = invitation.get_by_role("heading")
        assert (
            heading.inner_text()
            == "You are invited to the alliance portal for Taipei North Hospital"
        )
        page.screenshot(path=str(ARTIFACTS / "newcomer-2-mailbox.png"), full_page=True)
        address = invitation.locator("ul.mail-links a").first.get_attribute("href")
        assert address.startswith(f"{page.url.split('/staff/')[0]}/invitation/")
        # The newcomer opens the link in their own browser: here, after staff log out.
        page.get_by_role("button", name=re.compile("Log out")).click()
        page.goto(address)

        # 3. The newcomer chooses a password and is in.
        page.get_by_role("heading", name="Welcome to the alliance portal").wait_for()
        page.locator("#id_new_password1").fill("sepsis-Lactate-42")
        page.locator("#id_new_password2").fill("sepsis-Lactate-42")
        page.get_by_role("button", name="Set password and log in").click()
        page.get_by_text("Welcome to the alliance portal. Your password is set.").wait_for()
        page.screenshot(path=str(ARTIFACTS / "newcomer-3-password-set.png"))

        # 4. "Problems", the demo problem, "Launch a run".
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Problems").click()
        page.get_by_role("link", name="Tumour malignancy from biopsy features").click()
        page.screenshot(path=str(ARTIFACTS / "newcomer-4-problem.png"))
        page.get_by_role("link", name="Launch a run").click()
        page.get_by_role("heading", name="Launch a training run").wait_for()
        page.locator("#id_rounds").fill("3")
        page.get_by_role("button", name="Launch the run").click()
        page.get_by_role("heading", name="Run 1").wait_for()
        page.locator('#run-live[data-finished="true"]').wait_for(timeout=90_000)

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert run.launched_by.email == EMAIL
    assert "Succeeded" in page.locator("#run-live").inner_text()
    assert not page.get_by_text("This page follows it live").is_visible()
    page.screenshot(path=str(ARTIFACTS / "newcomer-5-first-run.png"), full_page=True)
