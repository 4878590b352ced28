"""`demo_totp`: the demo's stand-in for a phone, for the demo's accounts only and never in production."""

from __future__ import annotations

import io

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
