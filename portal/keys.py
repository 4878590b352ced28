"""API keys and personal tokens: creating, revoking, and authenticating with them.

A secret looks like `fsp_<prefix>_<random>`. Only its SHA-256 is stored; the prefix finds the row and lets a
person tell keys apart. This module imports no DRF views, because DRF imports it while loading its settings.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from portal import access
from portal.audit import audit_record
from portal.models import ApiKey, ApiKeyKind, Membership, Organisation, Role
from portal.services import AccessError

SECRET_START = "fsp_"
# Recording every use would write a row per request; a coarse "last used" is all a person needs.
LAST_USED_RESOLUTION = timedelta(minutes=5)


def _digest(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return prefix, f"{SECRET_START}{prefix}_{secrets.token_urlsafe(32)}"


@transaction.atomic
def api_key_create(*, organisation: Organisation, name: str, role: str, acting_user: Any) -> tuple[ApiKey, str]:
    """An organisation key with a role, acting through a service user of its own. Returns the secret, once."""
    if not (
        access.is_superuser(acting_user)
        or (access.can_manage_organisation(acting_user) and access.same_organisation(acting_user, organisation.pk))
    ):
        raise AccessError("Only the organisation's admins create its API keys.")
    if role not in Role.values:
        raise AccessError(f"Unknown role {role}.")
    name = name.strip()
    if not name:
        raise AccessError("Give the key a name, so that it can be told apart later.")
    prefix, secret = _new_secret()
    # No password: the service user can only ever act through its key.
    user = get_user_model().objects.create_user(username=f"apikey-{prefix}", password=None, first_name=name[:150])
    Membership.objects.create(user=user, organisation=organisation, role=role)
    key = ApiKey.objects.create(
        organisation=organisation,
        user=user,
        kind=ApiKeyKind.ORGANISATION,
        name=name,
        role=role,
        prefix=prefix,
        secret_sha256=_digest(secret),
        created_by=acting_user if getattr(acting_user, "is_authenticated", False) else None,
    )
    audit_record(
        action="api_key.create",
        actor=acting_user,
        organisation=organisation,
        target=key,
        detail={"name": name, "role": role, "prefix": prefix, "kind": key.kind},
    )
    return key, secret


def _may_revoke(user: Any, key: ApiKey) -> bool:
    if access.is_superuser(user):
        return True
    if key.kind == ApiKeyKind.PERSONAL and key.user_id == user.pk:
        return True
    return access.can_manage_organisation(user) and access.same_organisation(user, key.organisation_id)


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, acting_user: Any) -> ApiKey:
    """Stop a key from working, for good. An organisation key's service user is deactivated with it."""
    key = ApiKey.objects.select_for_update(no_key=True).select_related("user").get(pk=api_key.pk)
    if not _may_revoke(acting_user, key):
        raise AccessError("Only the organisation's admins revoke its API keys.")
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key.revoked_by = acting_user if getattr(acting_user, "is_authenticated", False) else None
    key.save(update_fields=["revoked_at", "revoked_by"])
    if key.kind == ApiKeyKind.ORGANISATION:
        key.user.is_active = False
        key.user.save(update_fields=["is_active"])
    audit_record(
        action="api_key.revoke",
        actor=acting_user,
        organisation_id=key.organisation_id,
        target=key,
        detail={"name": key.name, "prefix": key.prefix, "kind": key.kind},
    )
    return key


@transaction.atomic
def personal_token_create(*, user: Any, name: str = "") -> tuple[ApiKey, str]:
    """A member's own token, acting with their current role. Creating one revokes the one before."""
    membership = access.membership_of(user)
    if membership is None:
        raise AccessError("Only members of an organisation may have an API token.")
    for old in ApiKey.objects.filter(user=user, kind=ApiKeyKind.PERSONAL, revoked_at__isnull=True):
        api_key_revoke(api_key=old, acting_user=user)
    prefix, secret = _new_secret()
    key = ApiKey.objects.create(
        organisation=membership.organisation,
        user=user,
        kind=ApiKeyKind.PERSONAL,
        name=name.strip() or f"Personal token of {user.get_username()}",
        prefix=prefix,
        secret_sha256=_digest(secret),
        created_by=user,
    )
    audit_record(
        action="api_key.create",
        actor=user,
        organisation=membership.organisation,
        target=key,
        detail={"name": key.name, "prefix": prefix, "kind": key.kind},
    )
    return key, secret


def personal_token_active(user: Any) -> ApiKey | None:
    """The member's working personal token, if any (creating one revokes the one before, so at most one)."""
    return ApiKey.objects.filter(user=user, kind=ApiKeyKind.PERSONAL, revoked_at__isnull=True).order_by("-id").first()


@transaction.atomic
def personal_token_revoke(*, user: Any) -> int:
    """Revoke the member's own personal token(s); how many were working. Each revocation is in the activity log."""
    revoked = 0
    for key in ApiKey.objects.filter(user=user, kind=ApiKeyKind.PERSONAL, revoked_at__isnull=True):
        api_key_revoke(api_key=key, acting_user=user)
        revoked += 1
    return revoked


def api_key_check(secret: str) -> ApiKey | None:
    """The active key this secret belongs to, or None. Constant-time on the secret itself."""
    if not secret.startswith(SECRET_START) or len(secret) > 200:
        return None
    prefix = secret[len(SECRET_START) :].split("_", 1)[0]
    key = (
        ApiKey.objects.select_related("user", "user__membership").filter(prefix=prefix, revoked_at__isnull=True).first()
    )
    if key is None or not hmac.compare_digest(key.secret_sha256, _digest(secret)):
        return None
    if not key.user.is_active or access.membership_of(key.user) is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer <secret>`, for organisation keys and personal tokens alike."""

    keyword = "bearer"

    def authenticate(self, request: Any) -> tuple[Any, ApiKey] | None:
        http_request = getattr(request, "_request", request)
        # The route matrix middleware has already checked this header for this request.
        cached = getattr(http_request, "_portal_api_key", None)
        if cached is not None:
            return cached.user, cached
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send the key as `Authorization: Bearer <key>`.")
        key = api_key_check(parts[1].decode("latin-1"))
        if key is None:
            raise exceptions.AuthenticationFailed("This API key is not valid, or was revoked.")
        http_request._portal_api_key = key
        return key.user, key

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'
