from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.models import AuditEvent
from tests.conftest import ROOT


@pytest.fixture
def two_factor(settings):
    settings.REQUIRE_TWO_FACTOR = True


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"


def test_a_reviewer_must_enrol_a_second_factor_before_reviewing(client, two_factor, bob, password):
    client.post(reverse("login"), {"username": "bob", "password": password})

    response = client.get(reverse("admin:index"))

    assert response.status_code == 302 and response.url.startswith(reverse("two_factor_setup"))
    page = client.get(response.url).content.decode()
    assert "<svg" in page and "authenticator app" in page


def test_enrolling_with_a_valid_code_opens_the_admin_and_is_recorded(client, two_factor, bob, password):
    client.post(reverse("login"), {"username": "bob", "password": password})
    client.get(reverse("two_factor_setup"))
    device = TOTPDevice.objects.get(user=bob)

    right = client.post(reverse("two_factor_setup"), {"token": _code(device), "next": "/admin/"})

    assert right.status_code == 302 and right.url == "/admin/"
    assert client.get(reverse("admin:index")).status_code == 200
    assert AuditEvent.objects.filter(action="2fa.enrol", actor=bob).exists()


def test_a_wrong_code_is_refused_and_then_throttled(client, two_factor, bob, password):
    client.post(reverse("login"), {"username": "bob", "password": password})
    client.get(reverse("two_factor_setup"))
    device = TOTPDevice.objects.get(user=bob)

    wrong = client.post(reverse("two_factor_setup"), {"token": "000000"})
    # Straight after a wrong code even the right one is refused: guessing costs time.
    right_too_soon = client.post(reverse("two_factor_setup"), {"token": _code(device)})

    assert wrong.status_code == 400 and "not valid" in wrong.content.decode()
    assert right_too_soon.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_a_new_session_asks_for_the_code_again(client, two_factor, bob, password):
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    client.post(reverse("login"), {"username": "bob", "password": password})

    response = client.get("/admin/")
    verified = client.post(reverse("two_factor_verify"), {"token": _code(device), "next": "/admin/"})

    assert response.url.startswith(reverse("two_factor_verify"))
    assert verified.status_code == 302 and client.get("/admin/").status_code == 200


def test_caseworkers_are_not_forced_to_enrol(client, two_factor, alice, password):
    client.post(reverse("login"), {"username": "alice", "password": password})

    assert client.get(reverse("matching:case_list")).status_code == 200


def test_repeated_failed_logins_lock_the_account(client, alice, password, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "alice", "password": "wrong guess"})

    locked = client.post(reverse("login"), {"username": "alice", "password": password})

    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_production_settings_pass_check_deploy():
    from cryptography.fernet import Fernet

    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DEPLOYMENT": "production",
        "SECRET_KEY": "x" * 20 + "a-long-random-secret-for-the-deploy-check-0123456789",
        "FACE_ENCODING_KEYS": Fernet.generate_key().decode(),
        "AUDIT_LOG_KEYS": "a-long-random-audit-log-key-for-the-deploy-check",
        "ALLOWED_HOSTS": "portal.example.org",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_pages_carry_a_content_security_policy_and_strict_headers(client, alice):
    client.force_login(alice)

    response = client.get(reverse("matching:case_list"))

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY" and response["Referrer-Policy"] == "same-origin"
