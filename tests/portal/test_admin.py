"""The organisation's page in the admin: what it may change, and what only /settings/ changes."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.models import AuditEvent


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.org", "x")


def _change_form(org, **changes) -> dict[str, str]:
    """Everything the organisation's change form posts, as it stands, with `changes` applied."""
    data = {
        "name": org.name,
        "slug": org.slug,
        "distance_threshold": str(org.distance_threshold),
        "max_candidates": str(org.max_candidates),
        "target_fmr": str(org.target_fmr),
        "fpir_ceiling": str(org.fpir_ceiling),
        "audit_max_age_days": str(org.audit_max_age_days),
        "retention_days": "" if org.retention_days is None else str(org.retention_days),
        "permitted_purpose": org.permitted_purpose,
        "legal_basis": org.legal_basis,
        "_save": "Save",
    }
    return {**data, **changes}


@pytest.mark.parametrize("persona", ["dana", "root"])
def test_nobody_changes_the_threshold_or_max_candidates_in_the_admin(client, org, persona, request):
    # Given an organisation whose threshold an org admin confirmed at 0.6, with 5 candidates per face
    confirmed_at = org.threshold_confirmed_at
    client.force_login(request.getfixturevalue(persona))
    url = reverse("admin:portal_organisation_change", args=[org.pk])

    # When the org admin (or a superuser) posts another threshold and number of candidates in the admin
    response = client.post(url, _change_form(org, distance_threshold="0.9", max_candidates="50"))

    # Then the threshold stays what was confirmed, when it was confirmed
    assert response.status_code == 302
    org.refresh_from_db()
    assert (org.distance_threshold, org.max_candidates) == (0.6, 5)
    assert org.threshold_confirmed_at == confirmed_at
    assert not AuditEvent.objects.filter(action="organisation.update").exists()
    # and the page offers neither field, but sends the reader to /settings/, where the figures are
    page = client.get(url).content.decode()
    assert 'name="distance_threshold"' not in page and 'name="max_candidates"' not in page
    assert '<a href="/settings/">' in page


@pytest.mark.parametrize("persona", ["dana", "root"])
def test_nobody_clears_the_retention_in_the_admin(client, org, persona, request):
    # Given an organisation whose closed cases are purged 30 days after closing
    org.retention_days = 30
    org.save(update_fields=["retention_days"])
    client.force_login(request.getfixturevalue(persona))
    url = reverse("admin:portal_organisation_change", args=[org.pk])

    # When the retention is emptied (or shortened) in the admin
    cleared = client.post(url, _change_form(org, retention_days=""))
    shortened = client.post(url, _change_form(org, retention_days="1"))

    # Then nothing changes: the retention is its own step on /settings/, which says what it does to closed cases
    assert cleared.status_code == shortened.status_code == 302
    org.refresh_from_db()
    assert org.retention_days == 30
    assert not AuditEvent.objects.filter(action="organisation.update").exists()
    page = client.get(url).content.decode()
    assert 'name="retention_days"' not in page and '<a href="/settings/#retention">' in page


def test_an_org_admin_cannot_change_the_slug_in_the_admin(client, dana, org):
    # Given dana, org admin of "acme", whose members sign in as acme.<name>
    client.force_login(dana)
    url = reverse("admin:portal_organisation_change", args=[org.pk])

    # When she sets the slug to a case variant of it in the admin
    response = client.post(url, _change_form(org, slug="Acme"))

    # Then the slug stays, and is not offered
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.slug == "acme"
    assert 'name="slug"' not in client.get(url).content.decode()


def test_an_org_admin_still_renames_the_organisation_in_the_admin(client, dana, org):
    client.force_login(dana)

    response = client.post(
        reverse("admin:portal_organisation_change", args=[org.pk]), _change_form(org, name="Acme Search Team")
    )

    assert response.status_code == 302
    org.refresh_from_db()
    assert org.name == "Acme Search Team"
    event = AuditEvent.objects.get(action="organisation.update")
    assert event.actor == dana and event.detail["changes"] == {"name": ["Acme Search", "Acme Search Team"]}


def test_a_superuser_creates_an_organisation_whose_threshold_waits_for_its_org_admin(client, root):
    client.force_login(root)

    # When a superuser adds an organisation, posting a threshold and a retention too
    response = client.post(
        reverse("admin:portal_organisation_add"),
        {
            "name": "New Org",
            "slug": "new-org",
            "distance_threshold": "0.9",
            "max_candidates": "50",
            "retention_days": "1",
            "target_fmr": "0.001",
            "fpir_ceiling": "0.5",
            "audit_max_age_days": "180",
            "_save": "Save",
        },
    )

    # Then the organisation exists with the defaults, unconfirmed: its org admin confirms on /settings/
    from portal.models import Organisation

    assert response.status_code == 302
    created = Organisation.objects.get(slug="new-org")
    assert (created.distance_threshold, created.max_candidates, created.retention_days) == (0.6, 5, None)
    assert created.threshold_confirmed_at is None
