"""The 403, 404 and 500 pages carry the portal's navigation and a way back (portal/api.py's handlers)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from matching import selectors


def _is_styled_page(response, heading: str) -> str:
    page = response.content.decode()
    assert '<link rel="stylesheet" href="/static/css/portal.css">' in page
    assert f"<h1>{heading}</h1>" in page
    return page


def test_a_missing_page_is_the_styled_404_with_navigation_and_a_way_back(client, alice):
    # Given a signed-in caseworker
    client.force_login(alice)

    # When she follows a link to a case that does not exist, and to a page outside her role
    missing = client.get(reverse("matching:case_detail", args=[999_999]))
    outside = client.get(reverse("matching:audit_list"))

    # Then both are the portal's 404 page, with her navigation and a link back to her start page
    for response in (missing, outside):
        assert response.status_code == 404
        page = _is_styled_page(response, "Page not found")
        assert f'href="{reverse("matching:case_list")}">Cases</a>' in page
        assert f'href="{reverse("home")}">Back to your start page</a>' in page


def test_a_visitor_who_is_not_signed_in_gets_a_login_link_on_the_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    page = _is_styled_page(response, "Page not found")
    assert f'href="{reverse("login")}">Log in</a>' in page and "Log out" not in page


def test_a_refused_admin_page_is_the_styled_403(client, bob):
    # Given a reviewer, who may use the review admin but not manage members
    client.force_login(bob)

    # When he opens the member list
    response = client.get(reverse("admin:portal_membership_changelist"))

    # Then he gets the portal's 403 page, with the navigation and a way back
    assert response.status_code == 403
    page = _is_styled_page(response, "Not allowed")
    assert "Review &amp; admin</a>" in page
    assert f'href="{reverse("home")}">Back to your start page</a>' in page


def test_a_server_error_is_the_styled_500_with_navigation(client, alice, monkeypatch):
    # Given a case list that fails inside
    def broken(user):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(selectors, "cases_for", broken)
    client.raise_request_exception = False
    client.force_login(alice)

    # When the caseworker opens it
    response = client.get(reverse("matching:case_list"))

    # Then she sees the portal's 500 page, not a bare "Server Error (500)", and can go back
    assert response.status_code == 500
    page = _is_styled_page(response, "Something went wrong on our side")
    assert f'href="{reverse("matching:case_list")}">Cases</a>' in page
    assert f'href="{reverse("home")}">Back to your start page</a>' in page


@pytest.mark.parametrize("path", ["/api/cases/999999/", "/api/no-such-route/"])
def test_the_api_still_answers_errors_in_json(client, alice, path):
    client.force_login(alice)
    response = client.get(path)
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")


def test_a_form_posted_with_a_stale_token_gets_the_styled_page_and_changes_nothing(alice, open_case):
    from django.test import Client

    from matching.models import Case
    from tests.conftest import OBAMA_2

    # Given a caseworker's case, and a browser whose form token no longer matches its cookie
    case = open_case(OBAMA_2, reference="C-CSRF", process=False)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    browser.cookies["csrftoken"] = "x" * 32

    # When she posts the close form
    page = browser.post(
        reverse("matching:case_close", args=[case.pk]), {"reason": "Found safe.", "csrfmiddlewaretoken": "y" * 32}
    )

    # Then the page is the portal's, says nothing was saved, and the case is still open
    assert page.status_code == 403
    body = _is_styled_page(page, "This form has expired")
    assert "Nothing was saved" in body and f'href="{reverse("home")}">Back to your start page</a>' in body
    assert Case.objects.get(pk=case.pk).closed_at is None
