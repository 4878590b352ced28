"""The second factor holds on the API too: only a valid key or token stands in for it."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.keys import api_key_create
from portal.models import ApiKey, ApiKeyKind

BOGUS_HEADERS = ["x", "Basic ZGFuYTpjb3JyZWN0IGhvcnNlIGJhdHRlcnk=", "Token abc", "Bearer", "Bearer fsp_nope_nope"]


@pytest.fixture
def two_factor(settings):
    settings.REQUIRE_TWO_FACTOR = True


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def _password_only(client, user, password):
    """Signed in with the password, second factor not yet confirmed."""
    client.post(reverse("login"), {"username": user.username, "password": password})
    assert "_auth_user_id" in client.session
    return client


@pytest.mark.parametrize("header", BOGUS_HEADERS)
def test_an_org_admin_with_only_a_password_cannot_use_the_api_with_a_bogus_header(
    client, two_factor, dana, password, header
):
    # Given dana, signed in with her password alone
    _password_only(client, dana, password)

    # When she calls the API with an Authorization header that is not a valid key
    response = client.get("/api/galleries/", HTTP_AUTHORIZATION=header)

    # Then the second factor is still asked for (or the bad key refused): never the galleries
    assert response.status_code in (401, 403), response.content
    body = response.json()
    assert "results" not in body and body["errors"][0]["code"] in ("two_factor_required", "authentication_failed")


def test_a_bogus_header_cannot_mint_a_personal_token_without_the_second_factor(client, two_factor, dana, password):
    _password_only(client, dana, password)

    response = client.post("/api/auth/token/", {}, content_type="application/json", HTTP_AUTHORIZATION="x")

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "two_factor_required"
    assert not ApiKey.objects.filter(user=dana, kind=ApiKeyKind.PERSONAL).exists()


def test_a_valid_organisation_key_still_works_without_a_session(client, two_factor, org, dana):
    _, secret = api_key_create(organisation=org, name="Importer", role="org_admin", acting_user=dana)

    response = client.get("/api/galleries/", HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 200 and "results" in response.json()


def test_a_verified_session_may_use_the_api(client, two_factor, dana, password):
    device = TOTPDevice.objects.create(user=dana, name="phone", confirmed=True)
    _password_only(client, dana, password)
    client.post(reverse("two_factor_verify"), {"token": _code(device), "next": "/admin/"})

    response = client.get("/api/galleries/")

    assert response.status_code == 200


def test_a_throttled_code_is_reported_as_throttled_not_as_invalid(client, two_factor, bob, password):
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    _password_only(client, bob, password)

    wrong = client.post(reverse("two_factor_verify"), {"token": "000000"})
    right_too_soon = client.post(reverse("two_factor_verify"), {"token": _code(device)})

    assert wrong.status_code == 400 and "That code is not valid" in wrong.content.decode()
    page = right_too_soon.content.decode()
    assert right_too_soon.status_code == 400
    assert "you are throttled" in page and "That code is not valid" not in page
    # One wrong code is not "too many": the page says what happened
    assert "The last code was wrong" in page and "Too many" not in page


def test_a_code_already_used_says_so_and_to_wait_for_the_next_one(client, two_factor, bob, password):
    from django.test import Client

    # Given bob signed in with the code on his phone
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    code = _code(device)
    _password_only(client, bob, password)
    assert client.post(reverse("two_factor_verify"), {"token": code}).status_code == 302
    device.refresh_from_db()
    # (at the edge of a step the phone's next code is accepted early; make "now" that step for the retry)
    device.last_t += 1
    device.save(update_fields=["last_t"])

    # When he signs in again, in another browser, and types the code still on his phone
    other = _password_only(Client(), bob, password)
    again = other.post(reverse("two_factor_verify"), {"token": _code(device)})

    # Then he is told it was already used and to wait for the next one, not that it is wrong
    page = again.content.decode()
    assert again.status_code == 400
    assert "This code was already used; wait for the next one" in page
    assert "your app shows it in about" in page and "That code is not valid" not in page
    # and a wrong code is still called wrong (after the throttle's pause)
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0, throttling_failure_timestamp=None)
    wrong = other.post(reverse("two_factor_verify"), {"token": "000000" if _code(device) != "000000" else "111111"})
    assert "That code is not valid" in wrong.content.decode()


# The session is renewed at every change of privilege, so that a session id planted before it is worth nothing


def _planted(session_key: str):
    """A browser carrying someone else's session cookie."""
    from django.conf import settings
    from django.test import Client

    browser = Client()
    browser.cookies[settings.SESSION_COOKIE_NAME] = session_key
    return browser


@pytest.mark.parametrize("step", ["two_factor_verify", "two_factor_setup"])
def test_a_session_id_planted_before_the_second_factor_is_worth_nothing_after_it(
    client, two_factor, bob, password, step
):
    # Given an attacker who knows bob's password, signed in and stopped at the second factor with session P
    if step == "two_factor_verify":
        device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    attacker = _password_only(client, bob, password)
    if step == "two_factor_setup":
        attacker.get(reverse(step))
        device = TOTPDevice.objects.get(user=bob)
    planted = attacker.session.session_key

    # When P is planted in bob's browser and bob enters his code there
    browser = _planted(planted)
    confirmed = browser.post(reverse(step), {"token": _code(device), "next": "/admin/reviews/reviewitem/"})

    # Then bob is through, under a new session id, and P no longer opens anything
    assert confirmed.status_code == 302 and confirmed.url == "/admin/reviews/reviewitem/"
    assert browser.cookies["sessionid"].value != planted
    assert browser.get("/admin/reviews/reviewitem/").status_code == 200
    stale = _planted(planted).get("/admin/reviews/reviewitem/")
    assert stale.status_code == 302 and stale.url.startswith(reverse("login")), stale.status_code


def test_signing_in_renews_the_session(client, bob, password):
    client.get(reverse("login"))
    client.session.save()
    before = client.cookies["sessionid"].value

    client.post(reverse("login"), {"username": bob.username, "password": password})

    assert client.cookies["sessionid"].value != before
    assert _planted(before).get(reverse("home")).status_code == 302
