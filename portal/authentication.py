"""Signing in with a username in any case: `ACME.Nina` is `acme.nina`, as everywhere else the portal compares names.

A unique index on lower(username) (migration portal 0012) keeps one account per name whatever its case, so the
lookup finds at most one. django-axes counts failures by the same lowercased name, so that spelling a username in
other cases does not buy more guesses.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest


class CaseInsensitiveModelBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if username is not None:
            # The stored spelling, then Django's own check (which also hashes a password for unknown names).
            stored = get_user_model().objects.filter(username__iexact=username).values_list("username", flat=True)
            username = stored.first() or username
        return super().authenticate(request, username=username, password=password, **kwargs)

    def get_user(self, user_id: Any) -> Any:
        # Every signed-in request asks for the user's membership and organisation (portal.access): read with the
        # user, they cost one query instead of three.
        try:
            user = get_user_model()._default_manager.select_related("membership__organisation").get(pk=user_id)
        except get_user_model().DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None


def axes_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str | None:
    """The name django-axes counts failed logins against (AXES_USERNAME_CALLABLE): the username, lowercased."""
    if credentials:
        username = credentials.get("username")
    else:
        username = getattr(request, "data", request.POST).get("username")
    return username.lower() if isinstance(username, str) else username
