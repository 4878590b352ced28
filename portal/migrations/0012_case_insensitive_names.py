"""Organisations' slugs and users' names become unique whatever their case.

Members sign in as `<slug>.<name>`, and the portal compares names whatever their case. Two slugs or two usernames
that differ only in case would be one name to a reader and two to the database: one organisation's refusals
would reveal another's members, and look-alike accounts could be made. This migration first looks for such
pairs in existing data and, if it finds any, stops and lists them, changing nothing: rename all but one of each
(slugs in the admin, usernames in the admin's Users page) and migrate again.
"""

from __future__ import annotations

from collections import defaultdict

import django.db.models.functions.text
from django.db import migrations, models

USERNAME_INDEX = "portal_auth_user_username_unique_any_case"


def case_collisions(rows) -> list[list[tuple[int, str]]]:
    """Groups of (id, value) whose values differ only in case."""
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for pk, value in rows:
        groups[value.lower()].append((pk, value))
    return [sorted(group) for _, group in sorted(groups.items()) if len(group) > 1]


def _described(groups: list[list[tuple[int, str]]]) -> str:
    return "; ".join(" and ".join(f"{value!r} (id {pk})" for pk, value in group) for group in groups)


def refuse_case_collisions(apps, schema_editor) -> None:
    Organisation = apps.get_model("portal", "Organisation")
    User = apps.get_model("auth", "User")
    problems = []
    slugs = case_collisions(Organisation.objects.values_list("pk", "slug"))
    if slugs:
        problems.append(f"organisations' slugs that differ only in case: {_described(slugs)}")
    usernames = case_collisions(User.objects.values_list("pk", "username"))
    if usernames:
        problems.append(f"usernames that differ only in case: {_described(usernames)}")
    if problems:
        raise RuntimeError(
            "Slugs and usernames must now be unique whatever their case, and this database has "
            + ", and ".join(problems)
            + ". Nothing was changed. Rename all but one of each (slugs in the admin's Organisations, usernames in "
            "its Users) and run migrate again."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("portal", "0011_organisation_fpir_ceiling"),
    ]

    operations = [
        migrations.RunPython(refuse_case_collisions, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="organisation",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("slug"),
                name="organisation_slug_unique_any_case",
                violation_error_message="This slug is already used by another organisation (slugs are the same "
                "whatever their case); choose another.",
            ),
        ),
        # auth.User is Django's model, so its index is made here, by hand; lower() is the same function on SQLite
        # and PostgreSQL, and both index an expression.
        migrations.RunSQL(
            f"CREATE UNIQUE INDEX {USERNAME_INDEX} ON auth_user (lower(username))",
            f"DROP INDEX {USERNAME_INDEX}",
        ),
    ]
