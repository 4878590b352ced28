"""Signing in (portal/authentication.py): a username is the same account whatever its case."""

from __future__ import annotations

from django.urls import reverse

from tests.conftest import _member


def test_a_member_signs_in_whatever_the_case_they_type_their_username_in(client, org, password):
    nina = _member("acme.nina", org, "caseworker")

    client.post(reverse("login"), {"username": "ACME.Nina", "password": password})

    assert client.session.get("_auth_user_id") == str(nina.pk)


def test_failed_logins_in_every_case_count_against_the_one_account(client, org, password, settings):
    # Given nina, and someone guessing her password under every spelling of her username
    _member("acme.nina", org, "caseworker")
    spellings = ["acme.nina", "ACME.nina", "Acme.Nina", "acme.NINA", "aCmE.nInA", "ACME.NINA"]
    for spelling in spellings[: settings.AXES_FAILURE_LIMIT]:
        client.post(reverse("login"), {"username": spelling, "password": "wrong guess"})

    # When the right password is then tried under yet another spelling
    locked = client.post(reverse("login"), {"username": spellings[-1], "password": password})

    # Then the account is locked: the failures counted against one username, not one per spelling
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_signed_in_request_reads_the_user_their_membership_and_organisation_in_one_query(
    client, org, password, django_assert_num_queries
):
    from django.contrib.auth import BACKEND_SESSION_KEY, load_backend

    from portal import access

    # Given nina, signed in through the login page, and a user who belongs to no organisation
    nina = _member("acme.nina", org, "caseworker")
    client.post(reverse("login"), {"username": "acme.nina", "password": password})
    backend = load_backend(client.session[BACKEND_SESSION_KEY])
    loner = _member("acme.loner", org, "caseworker")
    loner.membership.delete()

    # When a request loads each of them from the session and asks for their organisation and role
    with django_assert_num_queries(1):
        user = backend.get_user(nina.pk)
        organisation, role = access.organisation_of(user), access.role_of(user)
    with django_assert_num_queries(1):
        lone = backend.get_user(loner.pk)
        lone_organisation = access.organisation_of(lone)

    # Then the membership and the organisation came with the user, and no membership reads as none
    assert (organisation, role) == (org, "caseworker")
    assert lone is not None and lone_organisation is None
