"""Organisations and members (portal/services.py): who may grant a role, names compared whatever their case, and
what only the settings page changes."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from portal.models import AuditEvent, Membership, Organisation
from portal.services import AccessError, member_create, member_username, organisation_create, organisation_update

NEW_MEMBER = {"email": "nina@example.org", "password": "a long enough passphrase"}


# Granting a role


@pytest.mark.parametrize(("persona", "role"), [("alice", "org_admin"), ("bob", "reviewer"), ("erin", "caseworker")])
def test_only_someone_who_may_grant_a_role_creates_a_member_with_it(org, persona, role, request):
    # Given alice (a caseworker), bob (a reviewer) or erin (another organisation's admin)
    acting = request.getfixturevalue(persona)

    # When they call the service directly to add nina to acme
    with pytest.raises(AccessError, match="cannot grant"):
        member_create(organisation=org, username="nina", role=role, acting_user=acting, **NEW_MEMBER)

    # Then nothing is stored
    assert not get_user_model().objects.filter(username__iendswith="nina").exists()


def test_an_org_admin_and_a_superuser_create_members(org, dana, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")

    by_dana = member_create(organisation=org, username="nina", role="org_admin", acting_user=dana, **NEW_MEMBER)
    by_root = member_create(organisation=org, username="olaf", role="reviewer", acting_user=root, **NEW_MEMBER)

    assert (by_dana.role, by_root.role) == ("org_admin", "reviewer")


# Organisation slugs, whatever their case


def test_a_slug_differing_only_in_case_is_refused(org, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")

    with pytest.raises(AccessError, match="already used by another organisation"):
        organisation_create(name="Acme Look-alike", slug="ACME", acting_user=root)

    assert not Organisation.objects.filter(name="Acme Look-alike").exists()


def test_an_organisation_cannot_rename_its_slug_to_a_case_variant_of_another(org, other_org, erin):
    with pytest.raises(AccessError, match="already used by another organisation"):
        organisation_update(organisation=other_org, acting_user=erin, slug="Acme")

    other_org.refresh_from_db()
    assert other_org.slug == "other"


def test_a_slug_whose_namespace_holds_another_organisations_accounts_is_refused(org, dana, other_org, erin):
    # Given acme's member acme.nina, and acme renamed to acme-search (its members keep their names)
    member_create(organisation=org, username="nina", role="reviewer", acting_user=dana, **NEW_MEMBER)
    organisation_update(organisation=org, acting_user=dana, slug="acme-search")

    # When another organisation takes the freed slug acme, in any case
    with pytest.raises(AccessError, match="accounts of another organisation are named"):
        organisation_update(organisation=other_org, acting_user=erin, slug="ACME")

    # Then it is refused: its namespace would hold acme-search's acme.nina
    other_org.refresh_from_db()
    assert other_org.slug == "other"


def test_the_database_refuses_a_case_variant_slug_written_past_the_services(org):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        Organisation.objects.create(name="Look-alike", slug="Acme")


def test_the_organisation_form_says_the_slug_is_used_whatever_its_case(client, org, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    client.force_login(root)

    response = client.post(
        reverse("admin:portal_organisation_add"),
        {
            "name": "Look-alike",
            "slug": "ACME",
            "distance_threshold": "0.6",
            "max_candidates": "5",
            "target_fmr": "0.001",
            "fpir_ceiling": "0.5",
            "audit_max_age_days": "180",
            "_save": "Save",
        },
    )

    assert response.status_code == 200
    assert "already used by another organisation" in response.content.decode()
    assert not Organisation.objects.filter(name="Look-alike").exists()


# Usernames, whatever their case


def test_a_name_typed_with_the_namespace_in_another_case_stays_in_it(org):
    assert member_username(org, "ACME.nina") == "acme.nina"
    assert member_username(org, "nina") == "acme.nina"


def test_a_case_variant_of_a_members_name_is_refused_as_already_used(org, dana):
    member_create(organisation=org, username="nina", role="reviewer", acting_user=dana, **NEW_MEMBER)

    with pytest.raises(AccessError, match=r"acme\.Nina is already used in your organisation"):
        member_create(organisation=org, username="Nina", role="reviewer", acting_user=dana, **NEW_MEMBER)

    assert Membership.objects.filter(user__username__iexact="acme.nina").count() == 1


def test_the_database_refuses_a_case_variant_username_written_past_the_services(org, dana):
    from django.db import IntegrityError

    member_create(organisation=org, username="nina", role="reviewer", acting_user=dana, **NEW_MEMBER)

    with pytest.raises(IntegrityError):
        get_user_model().objects.create_user(username="ACME.NINA", password="x")


# A change of role or of standing ends the member's sessions


def _signed_in(user, password):
    from django.test import Client

    browser = Client()
    browser.post(reverse("login"), {"username": user.username, "password": password})
    assert browser.session.get("_auth_user_id") == str(user.pk)
    return browser


def test_a_role_change_ends_the_members_sessions(dana, bob, password):
    from portal.services import member_set_role

    # Given bob signed in as a reviewer
    browser = _signed_in(bob, password)

    # When dana makes him a caseworker
    member_set_role(membership=bob.membership, role="caseworker", acting_user=dana)

    # Then his session ends: he signs in again to act in his new role
    response = browser.get(reverse("matching:case_list"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_a_reactivated_member_does_not_get_their_old_session_back(dana, alice, password):
    from portal.services import member_set_active

    # Given alice signed in, then deactivated
    browser = _signed_in(alice, password)
    member_set_active(membership=alice.membership, active=False, acting_user=dana)

    # When dana reactivates her
    alice.refresh_from_db()
    member_set_active(membership=alice.membership, active=True, acting_user=dana)

    # Then the session she had before is over
    response = browser.get(reverse("matching:case_list"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


# What only /settings/ changes, each in its own step


@pytest.mark.parametrize(
    "change",
    [{"distance_threshold": 0.9}, {"max_candidates": 50}, {"retention_days": None}, {"retention_days": 1}],
    ids=["threshold", "max_candidates", "retention cleared", "retention shortened"],
)
def test_organisation_update_leaves_what_settings_confirms_to_its_own_step(dana, org, change):
    # Given an organisation with a confirmed threshold and a 30-day retention
    org.retention_days = 30
    org.save(update_fields=["retention_days"])

    # When any caller (the admin, the API, a script) asks the general update to change one of them
    with pytest.raises(AccessError, match="settings page"):
        organisation_update(organisation=org, acting_user=dana, **change)

    # Then nothing is stored, nothing is logged
    org.refresh_from_db()
    assert (org.distance_threshold, org.max_candidates, org.retention_days) == (0.6, 5, 30)
    assert not AuditEvent.objects.filter(action="organisation.update").exists()


def test_organisation_update_changes_the_policy_and_logs_old_and_new(dana, org):
    updated = organisation_update(organisation=org, acting_user=dana, fpir_ceiling=0.3, audit_max_age_days=90)

    assert (updated.fpir_ceiling, updated.audit_max_age_days) == (0.3, 90)
    event = AuditEvent.objects.get(action="organisation.update")
    assert event.detail["changes"] == {"fpir_ceiling": [0.5, 0.3], "audit_max_age_days": [180, 90]}
