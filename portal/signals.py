from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from portal.access import organisation_of
from portal.audit import audit_record


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs) -> None:
    # A signal is the only hook Django gives for logins; it records, it decides nothing.
    audit_record(action="login", actor=user, organisation=organisation_of(user))
