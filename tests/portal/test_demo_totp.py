"""`demo_totp`: the demo's stand-in for a phone, for the demo's accounts only and never in production."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.factories import MembershipFactory, OrganisationFactory, UserFactory


@pytest.fixture
def demo_reviewer(db):
    organisation = OrganisationFactory(slug="demo", name="Demo organisation")
    user = MembershipFactory(user=UserFactory(username="bob"), organisation=organisation, role="reviewer").user
    return user


def _code(username: str) -> str:
    out = io.StringIO()
    call_command("demo_totp", username, stdout=out)
    return out.getvalue().split()[0]


def test_the_printed_code_is_the_one_the_enrolment_accepts(demo_reviewer):
    # Given the unconfirmed device the enrolment page makes
    device = TOTPDevice.objects.create(user=demo_reviewer, confirmed=False, name="Authenticator")

    # Then the printed code verifies, as a phone's would
    assert device.verify_token(_code("bob"))


def test_a_member_of_a_real_organisation_gets_no_code(db, bob):
    # bob of the "acme" organisation (tests/conftest.py) is a real member
    TOTPDevice.objects.create(user=bob, confirmed=True, name="Authenticator")
    with pytest.raises(CommandError, match="not an account of the demo organisation"):
        _code("bob")


def test_no_code_in_production_even_for_the_demo(demo_reviewer, settings):
    TOTPDevice.objects.create(user=demo_reviewer, confirmed=True, name="Authenticator")
    settings.DEPLOYMENT = "production"
    with pytest.raises(CommandError, match="refuses DEPLOYMENT=production"):
        _code("bob")


def test_before_enrolment_it_says_what_to_do(demo_reviewer):
    with pytest.raises(CommandError, match="log in as bob first"):
        _code("bob")


def test_it_says_how_long_the_code_has_left(demo_reviewer):
    from portal.management.commands.demo_totp import demo_totp_code

    TOTPDevice.objects.create(user=demo_reviewer, confirmed=True, name="Authenticator")

    # 20 s into a 30 s step: 10 s left; on the step's first second, all 30
    assert demo_totp_code(demo_reviewer, now=1_000_000_010).seconds_left == 10
    assert demo_totp_code(demo_reviewer, now=1_000_000_020).seconds_left == 30
    out = io.StringIO()
    call_command("demo_totp", "bob", stdout=out)
    shown = re.search(r"\(code for bob; (\d+) seconds? left before the next code\)", out.getvalue())
    assert shown and 1 <= int(shown.group(1)) <= 30, out.getvalue()


def test_a_code_already_used_to_sign_in_is_called_so(demo_reviewer):
    from portal.management.commands.demo_totp import demo_totp_code

    # Given bob signed in at 1_000_000_010 with the code his phone showed (django-otp keeps that step, last_t)
    device = TOTPDevice.objects.create(user=demo_reviewer, confirmed=True, name="Authenticator")
    device.last_t = 1_000_000_010 // device.step
    device.save(update_fields=["last_t"])

    # Then the same code, asked for again in that step, is called used; the next step's is not
    assert demo_totp_code(demo_reviewer, now=1_000_000_015).used
    assert not demo_totp_code(demo_reviewer, now=1_000_000_020).used


def test_the_command_says_when_the_next_code_comes_after_a_used_one(demo_reviewer):
    # Given bob signed in with this step's code and (at the step's edge) the next one too
    device = TOTPDevice.objects.create(user=demo_reviewer, confirmed=True, name="Authenticator")
    assert device.verify_token(_code("bob"))
    device.refresh_from_db()
    device.last_t += 1
    device.save(update_fields=["last_t"])

    # When he asks for a code again
    out = io.StringIO()
    call_command("demo_totp", "bob", stdout=out)

    # Then he is told it will be refused and when the next one comes
    assert "already used to sign in, so it will be refused; the next code comes in" in out.getvalue()
