"""Migration `reviews 0006`: blind review becomes the default without changing any existing organisation's review."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("reviews", "0005_disclosure_pdf_failure_reason"), ("matching", "0010_audit_run_people")]
AFTER = [("reviews", "0006_probe_analysis_and_blind_by_default")]


def test_an_organisation_that_never_saved_its_policy_keeps_its_scores_shown_and_new_ones_start_blind():
    # Given the schema before blind review was the default, and an organisation with no saved policy
    from tests.factories import OrganisationFactory

    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    existing = OrganisationFactory(name="Older", slug="older")  # portal's tables are not rolled back

    # When the migration runs
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)

    # Then that organisation's policy is written down as it was (scores shown), and a new one starts blind
    from portal.models import Organisation as Current
    from reviews.selectors import review_policy_for

    assert review_policy_for(Current.objects.get(pk=existing.pk)).hide_scores_until_compared is False
    newcomer = Current.objects.create(name="Newer", slug="newer")
    assert review_policy_for(newcomer).hide_scores_until_compared is True
    assert review_policy_for(newcomer).analysis_scope == "each"

    # and the rest of the schema is brought back to the newest
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
