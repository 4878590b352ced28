"""Migration `portal 0012`: slugs and usernames become unique whatever their case, or it stops and says why."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from portal.models import Organisation

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("portal", "0011_organisation_fpir_ceiling")]
AFTER = ("portal", "0012_case_insensitive_names")


def _migrate(targets=None) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets or executor.loader.graph.leaf_nodes())


def test_existing_names_that_differ_only_in_case_stop_the_migration_with_a_list_of_them():
    User = get_user_model()
    # Given a database from before, with two slugs and two usernames that differ only in case
    _migrate(BEFORE)
    try:
        acme = Organisation.objects.create(name="Acme", slug="acme")
        look_alike = Organisation.objects.create(name="Acme look-alike", slug="Acme")
        nina = User.objects.create_user(username="acme.nina", password="x")
        other_nina = User.objects.create_user(username="Acme.nina", password="x")

        # When it is migrated
        with pytest.raises(RuntimeError) as stopped:
            _migrate([AFTER])

        # Then the migration stops, naming both pairs and what to do, and changes nothing
        message = str(stopped.value)
        assert f"'acme' (id {acme.pk}) and 'Acme' (id {look_alike.pk})" in message
        assert f"'acme.nina' (id {nina.pk}) and 'Acme.nina' (id {other_nina.pk})" in message
        assert "Nothing was changed. Rename all but one of each" in message
        assert AFTER not in MigrationExecutor(connection).loader.applied_migrations
    finally:
        # (renamed, as the message asks, so that the schema can be brought back to the newest either way)
        Organisation.objects.filter(slug="Acme").update(slug="acme-2")
        User.objects.filter(username="Acme.nina").update(username="acme-2.nina")
        _migrate()

    # and once the look-alikes are renamed it went through, and the database now refuses them itself
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create_user(username="ACME.NINA", password="x")
