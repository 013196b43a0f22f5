"""A visitor applies in the browser; alliance staff see the application in the console queue."""

import pytest

from alliance.models import MembershipApplication
from tests.e2e.conftest import ARTIFACTS
from tests.factories import PASSWORD, StaffFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_public_application_reaches_the_staff_queue(page):
    StaffFactory(username="wei", is_superuser=True)

    page.goto("/")
    page.get_by_role("link", name="Apply for membership").first.click()
    page.get_by_label("Institution name").fill("Kaohsiung Harbour Hospital")
    page.get_by_label("Sector").select_option("medicine")
    page.get_by_label("Country").fill("Taiwan")
    page.get_by_label("Your full name").fill("Mei-Ling Wang")
    page.get_by_label("Your work email").fill("mei-ling@khh.example.org")
    page.get_by_label("Why your institution wants to join").fill("Tumour malignancy models.")
    page.get_by_role("button", name="Submit application").click()
    page.get_by_role("heading", name="Thank you: your application is received").wait_for()
    assert MembershipApplication.objects.get().institution.name == "Kaohsiung Harbour Hospital"

    page.goto("/accounts/login/?next=/staff/")
    page.get_by_label("Username").fill("wei")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Staff overview").wait_for()
    assert page.get_by_role("link", name="Kaohsiung Harbour Hospital").is_visible()

    page.get_by_role("link", name="Review in the console").click()
    row = page.locator("#result_list tbody tr").filter(has_text="Kaohsiung Harbour Hospital")
    row.wait_for()
    assert "Pending review" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "application-in-staff-queue.png"), full_page=True)
