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
