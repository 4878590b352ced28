from __future__ import annotations

import os

from django.db import connection
from django.db.utils import ConnectionHandler


def test_a_new_sqlite_database_file_is_readable_by_its_owner_only(db, tmp_path):
    # given: a umask that would leave a new file world-readable, as on most machines
    path = tmp_path / "portal.sqlite3"
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}})
    previous = os.umask(0o022)
    try:
        # when: the portal first connects, which creates the file
        handler["default"].ensure_connection()
    finally:
        os.umask(previous)
        handler.close_all()

    # then
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_database_this_suite_runs_on_is_private_when_it_is_a_file(db):
    # On SQLite (a newcomer's `make test`), the test database itself; PostgreSQL keeps its own files.
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        assert oct(os.stat(connection.settings_dict["NAME"]).st_mode & 0o777) == "0o600"
    else:
        assert connection.vendor == "postgresql"
