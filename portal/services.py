from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from portal.audit import audit_record
from portal.models import Membership, Organisation, Role


class AccessError(Exception):
    """A refusal with a message meant for the user."""


@transaction.atomic
def organisation_create(*, name: str, slug: str, acting_user: Any) -> Organisation:
    if not acting_user.is_superuser:
        raise AccessError("Only a superuser may create organisations.")
    organisation = Organisation.objects.create(name=name, slug=slug)
    audit_record(action="organisation.create", actor=acting_user, organisation=organisation, target=organisation)
    return organisation


@transaction.atomic
def organisation_update(*, organisation: Organisation, acting_user: Any, **changes: Any) -> Organisation:
    """Change an organisation's matching settings, recording old and new values."""
    allowed = {"name", "slug", "distance_threshold", "max_candidates"}
    unknown = set(changes) - allowed
    if unknown:
        raise AccessError(f"Cannot change {', '.join(sorted(unknown))}.")
    locked = Organisation.objects.select_for_update().get(pk=organisation.pk)
    diff = {k: [getattr(locked, k), v] for k, v in changes.items() if getattr(locked, k) != v}
    if not diff:
        return locked
    for field, (_, new) in diff.items():
        setattr(locked, field, new)
    locked.full_clean()
    locked.save(update_fields=list(diff))
    audit_record(
        action="organisation.update", actor=acting_user, organisation=locked, target=locked, detail={"changes": diff}
    )
    return locked


@transaction.atomic
def member_create(
    *,
    organisation: Organisation,
    username: str,
    email: str,
    password: str,
    role: str,
    acting_user: Any,
    first_name: str = "",
    last_name: str = "",
) -> Membership:
    User = get_user_model()
    if role not in Role.values:
        raise AccessError(f"Unknown role {role}.")
    if User.objects.filter(username__iexact=username).exists():
        raise AccessError(f"The username {username} is taken.")
    try:
        validate_password(password)
    except ValidationError as error:
        raise AccessError(" ".join(error.messages)) from None
    user = User.objects.create_user(
        username=username, email=email, password=password, first_name=first_name, last_name=last_name
    )
    membership = Membership.objects.create(user=user, organisation=organisation, role=role)
    audit_record(
        action="member.create",
        actor=acting_user,
        organisation=organisation,
        target=membership,
        detail={"username": username, "role": role},
    )
    return membership


@transaction.atomic
def member_set_role(*, membership: Membership, role: str, acting_user: Any) -> Membership:
    if role not in Role.values:
        raise AccessError(f"Unknown role {role}.")
    locked = Membership.objects.select_for_update().get(pk=membership.pk)
    if locked.role == role:
        return locked
    if locked.user_id == acting_user.pk and locked.role == Role.ORG_ADMIN:
        raise AccessError("You cannot change your own admin role; ask another org admin.")
    old = locked.role
    locked.role = role
    locked.save(update_fields=["role"])
    audit_record(
        action="member.role",
        actor=acting_user,
        organisation=locked.organisation,
        target=locked,
        detail={"username": locked.user.username, "from": old, "to": role},
    )
    return locked


@transaction.atomic
def member_set_active(*, membership: Membership, active: bool, acting_user: Any) -> None:
    user = membership.user
    if user.pk == acting_user.pk:
        raise AccessError("You cannot deactivate yourself.")
    if user.is_active == active:
        return
    user.is_active = active
    user.save(update_fields=["is_active"])
    audit_record(
        action="member.activate" if active else "member.deactivate",
        actor=acting_user,
        organisation=membership.organisation,
        target=membership,
        detail={"username": user.username},
    )
