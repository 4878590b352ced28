"""The portal's own pages: a member's personal API token, minted and revoked after the second factor."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.models import ApiKey, AuditEvent

TOKEN_PAGE = "/token/"


def _secret(page: str) -> str:
    found = re.search(r'<pre class="secret" id="token-secret">(fsp_[^<]+)</pre>', page)
    assert found, "no secret on the page"
    return found.group(1)


def test_a_member_mints_a_token_sees_its_secret_once_and_the_api_takes_it(client, alice):
    # Given alice, signed in, with no token
    client.force_login(alice)
    assert "You have no API token." in client.get(TOKEN_PAGE).content.decode()

    # When she creates one
    response = client.post(TOKEN_PAGE, {"action": "create", "name": "Case sync"})

    # Then the page shows its secret, this once, with its name and when it was made
    page = response.content.decode()
    secret = _secret(page)
    key = ApiKey.objects.get(user=alice, kind="personal", revoked_at__isnull=True)
    assert response.status_code == 200 and response["Cache-Control"] == "private, no-store"
    assert "Case sync" in page and f"fsp_{key.prefix}_" in page
    assert key.created_at.strftime("%Y-%m-%d %H:%M") in page
    assert AuditEvent.objects.filter(action="api_key.create", actor=alice, target_id=str(key.pk)).exists()
    # and the API takes it, as her
    client.logout()
    answer = client.get("/api/cases/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert answer.status_code == 200 and "results" in answer.json()
    # and the page never shows the secret again
    client.force_login(alice)
    again = client.get(TOKEN_PAGE).content.decode()
    assert secret not in again and 'id="token-secret"' not in again
    assert key.created_at.strftime("%Y-%m-%d %H:%M") in again


def test_a_new_token_revokes_the_one_before(client, alice):
    client.force_login(alice)
    first = _secret(client.post(TOKEN_PAGE, {"action": "create"}).content.decode())

    second = _secret(client.post(TOKEN_PAGE, {"action": "create"}).content.decode())

    client.logout()
    assert client.get("/api/cases/", HTTP_AUTHORIZATION=f"Bearer {first}").status_code == 401
    assert client.get("/api/cases/", HTTP_AUTHORIZATION=f"Bearer {second}").status_code == 200


def test_revoking_stops_the_token_at_once_and_is_logged(client, alice):
    # Given alice's token
    client.force_login(alice)
    secret = _secret(client.post(TOKEN_PAGE, {"action": "create"}).content.decode())
    key = ApiKey.objects.get(user=alice, kind="personal")

    # When she revokes it on the page
    response = client.post(TOKEN_PAGE, {"action": "revoke"}, follow=True)

    # Then the page says so and shows no token, the API refuses it, and the log has it
    page = response.content.decode()
    assert "Your API token is revoked" in page and "You have no API token." in page
    assert AuditEvent.objects.filter(action="api_key.revoke", actor=alice, target_id=str(key.pk)).exists()
    client.logout()
    assert client.get("/api/cases/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401


def test_an_over_long_name_is_refused_with_a_message_and_no_token(client, alice):
    client.force_login(alice)

    response = client.post(TOKEN_PAGE, {"action": "create", "name": "x" * 101})

    assert response.status_code == 400 and "Ensure this value has at most 100 characters" in response.content.decode()
    assert not ApiKey.objects.filter(user=alice).exists()


def test_an_unknown_action_is_refused(client, alice):
    client.force_login(alice)

    assert client.post(TOKEN_PAGE, {"action": "delete-everything"}).status_code == 400
    assert not ApiKey.objects.filter(user=alice).exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_reviewer_with_only_a_password_is_sent_to_the_second_factor_first(client, bob, password, settings, method):
    # Given bob, a reviewer, signed in with his password, his authenticator not yet confirmed this session
    settings.REQUIRE_TWO_FACTOR = True
    TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    client.post(reverse("login"), {"username": "bob", "password": password})

    # When he opens the token page, or posts to it
    response = getattr(client, method)(TOKEN_PAGE, {"action": "create"} if method == "post" else None)

    # Then he is sent to confirm his second factor, and no token is made
    assert response.status_code == 302 and response["Location"].startswith(reverse("two_factor_verify"))
    assert not ApiKey.objects.filter(user=bob).exists()


def test_a_token_cannot_open_the_page(client, alice):
    # A token is honoured under /api/ only: on the page it is no session, so no second token can be minted
    client.force_login(alice)
    secret = _secret(client.post(TOKEN_PAGE, {"action": "create"}).content.decode())
    client.logout()

    response = client.post(TOKEN_PAGE, {"action": "create"}, HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert ApiKey.objects.filter(user=alice).count() == 1
