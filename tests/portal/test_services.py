"""Organisations and members (portal/services.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from portal.services import AccessError, member_create

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
