"""Each role's refusals in headless Chromium: the 403 and 404 pages are the portal's own, styled, with the
person's navigation and a way back, whatever the role."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in
from tests.conftest import OBAMA_2, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What each role's navigation offers, in order
NAVIGATION = {
    "alice": ["Cases", "API token"],
    "bob": ["Bias audits", "Review & admin", "API token"],
    "dana": ["Cases", "Galleries", "Bias audits", "Settings", "Review & admin", "API token"],
}
ROLE_LINE = {
    "alice": "alice · Caseworker, Acme Search",
    "bob": "bob · Reviewer, Acme Search",
    "dana": "dana · Organisation admin, Acme Search",
}
# A page outside each role's work (answered 404, so that it is not confirmed to exist), and an admin page the
# role may not open (403)
# (every portal page is within an org admin's role; a caseworker's 403 is in the test after this one)
OUTSIDE = {"alice": "/galleries/", "bob": "/cases/"}
FORBIDDEN = {"bob": "/admin/portal/membership/", "dana": "/admin/auth/user/"}


def _styled_with_navigation(page, username: str) -> None:
    assert page.locator("header.top nav a").all_inner_texts() == NAVIGATION[username]
    assert " ".join(page.inner_text("header.top .who").split()).startswith(ROLE_LINE[username])
    assert page.is_visible("header.top button:has-text('Log out')")
    assert page.evaluate(
        "[...document.styleSheets].some(s => (s.href || '').includes('portal') && s.cssRules.length > 0)"
    ), "the portal's stylesheet did not load"
    back = page.locator(".error-page a.button")
    assert back.inner_text() == "Back to your start page" and back.get_attribute("href") == "/"


@pytest.mark.parametrize("username", ["alice", "bob", "dana"])
def test_the_refusal_pages_carry_the_navigation_of_each_role(
    page, journey_shot, live_server, alice, bob, dana, password, username
):
    # Given a member of each role, signed in
    log_in(page, live_server, username, password)

    # When they open an address that does not exist
    response = page.goto(f"{live_server.url}/cases/999999/")

    # Then the 404 page is the portal's, with their own navigation and a way back
    assert response.status == 404
    assert page.inner_text(".error-page h1") == "Page not found"
    assert page.text_content(".error-code") == "Error 404"
    _styled_with_navigation(page, username)
    journey_shot("404")

    # and a page outside their role reads the same, without confirming that it exists
    if username in OUTSIDE:
        response = page.goto(f"{live_server.url}{OUTSIDE[username]}")
        assert response.status == 404
        assert page.inner_text(".error-page h1") == "Page not found"
        _styled_with_navigation(page, username)

    # and an admin page their role may not open is a styled 403 that says what to do
    if username in FORBIDDEN:
        response = page.goto(f"{live_server.url}{FORBIDDEN[username]}")
        assert response.status == 403
        assert page.inner_text(".error-page h1") == "Not allowed"
        assert "ask your organisation's admin to change your role" in page.inner_text(".error-page")
        _styled_with_navigation(page, username)
        journey_shot("403")


def test_a_caseworker_whose_form_expired_gets_the_portals_403_page(
    page, journey_shot, live_server, alice, open_case, password
):
    # Given alice on her case page, who has since signed in again in another tab (which renews the form token)
    case = open_case(OBAMA_2, reference="J-E1")
    # A worker left running by an earlier test may claim the photo first; either way it finishes.
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    log_in(page, live_server, "alice", password)
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    other_tab = page.context.new_page()
    log_in(other_tab, live_server, "alice", password)
    other_tab.close()

    # When she submits the form to close the case
    page.fill("textarea[name=reason]", "Found safe.")
    with page.expect_response(f"**/cases/{case.pk}/close/") as answer:
        page.click("form.close-case button[type=submit]")

    # Then the refusal is the portal's 403 page, which says nothing was saved and what to do, with her
    # navigation and a way back, not a bare error
    assert answer.value.status == 403
    journey_shot()
    assert page.locator(".error-page h1").all_inner_texts() == ["This form has expired"], page.inner_text("body")[:300]
    assert "Nothing was saved" in page.inner_text(".error-page")
    _styled_with_navigation(page, "alice")
