from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from django.contrib.auth.signals import user_logged_in
from django.db.backends.signals import connection_created
from django.dispatch import receiver

from portal.access import organisation_of
from portal.audit import audit_record


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs) -> None:
    # A signal is the only hook Django gives for logins; it records, it decides nothing.
    audit_record(action="login", actor=user, organisation=organisation_of(user))


@receiver(connection_created)
def sqlite_file_private(sender, connection, **kwargs) -> None:
    """Make the SQLite file (faces' encodings, names, the log) readable by this user only: SQLite creates it
    with the umask's mode, usually 0644, and its journals copy the file's mode."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or name.startswith("file:"):
        return
    with suppress(FileNotFoundError):
        path = Path(name)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
