"""The organisation's own writes in portal/services.py."""

from __future__ import annotations

import pytest

from portal.models import AuditEvent
from portal.services import AccessError, organisation_update


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
