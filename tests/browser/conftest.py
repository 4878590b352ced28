from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import _other_sessions_wait_out

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "var" / "screenshots"))


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"No Chromium at {CHROMIUM}; `make test` installs Debian's chromium package.")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # tests make around it are ordinary synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # While that loop runs, asgiref's Local gives this thread's database connections a store of their own. The
    # connection opened before it would stay open and unused to the end of the run (and still be on the test
    # database when it is dropped); those opened meanwhile would be left open once it stops. Each is closed as
    # its store is left.
    connections.close_all()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            yield browser
            browser.close()
            connections.close_all()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, django_db_blocker):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()
    # The live server may still be answering what the page asked for last; the database is flushed next.
    with django_db_blocker.unblock():
        _other_sessions_wait_out(timeout=10.0, busy_only=True)


@pytest.fixture
def screenshot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def log_in(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


# The journeys of each role (tests/browser/test_journeys_*.py)

JOURNEY_SHOTS = SCREENSHOTS / "journeys"


@pytest.fixture
def journey_shot(page, request):
    """Screenshot the whole page as <screenshots>/journeys/<test name>[-<step>].png, for a person to look at."""
    JOURNEY_SHOTS.mkdir(parents=True, exist_ok=True)

    def take(step: str = "") -> Path:
        path = JOURNEY_SHOTS / f"{request.node.name}{'-' + step if step else ''}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def images_loaded(page, selector: str) -> int:
    """Wait until every image matching the selector has loaded with real pixels; return how many there are."""
    count = page.locator(selector).count()
    assert count, f"no image matches {selector}"
    page.wait_for_function(
        "selector => [...document.querySelectorAll(selector)].every(img => img.complete && img.naturalWidth > 0)",
        arg=selector,
    )
    return count


def totp_code(device) -> str:
    """The current code of a django-otp TOTP device, as the person's authenticator app would show it."""
    from django_otp.oath import totp

    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"
