"""Real headless Chromium (Debian's package) driven by Playwright against a live server.

One browser serves every browser test (it starts with the first and stops after the last test
of this package); each test gets a fresh context: its own cookies, storage and viewport.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        needs(f"{CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needs("the playwright package")
    # Playwright's sync API runs an event loop in this thread; the tests' own ORM calls are
    # still synchronous, so Django's async-safety guard is lifted while the browser lives.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            try:
                yield browser
            finally:
                browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server) -> Iterator[object]:
    context = browser.new_context(base_url=live_server.url, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    # Every browser test also checks the Content-Security-Policy: whatever page it visits,
    # Chromium must not have refused a script, a style or anything else on it.
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    try:
        yield page
    finally:
        context.close()
    assert not refused, "the Content-Security-Policy refused:\n" + "\n".join(refused)


def log_in(page, username: str, password: str) -> None:
    """Log in through the login form, as a person would."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
