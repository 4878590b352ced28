"""The one place that decides who may act.

Every view, admin class, API view and service asks here. Nothing else reads
roles directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import Http404

from portal.models import Membership, Organisation, Role

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser


def membership_of(user: AnyUser) -> Membership | None:
    if not user.is_authenticated or not user.is_active:
        return None
    try:
        return user.membership
    except Membership.DoesNotExist:
        return None


def organisation_of(user: AnyUser) -> Organisation | None:
    membership = membership_of(user)
    return membership.organisation if membership else None


def role_of(user: AnyUser) -> str | None:
    membership = membership_of(user)
    return membership.role if membership else None


def is_superuser(user: AnyUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_superuser)


def can_work_cases(user: AnyUser) -> bool:
    """Caseworkers and org admins create cases and read confirmed results."""
    return role_of(user) in (Role.CASEWORKER, Role.ORG_ADMIN)


def can_review(user: AnyUser) -> bool:
    return role_of(user) in (Role.REVIEWER, Role.ORG_ADMIN)


def can_manage_organisation(user: AnyUser) -> bool:
    return role_of(user) == Role.ORG_ADMIN


def can_manage_galleries(user: AnyUser) -> bool:
    return role_of(user) == Role.ORG_ADMIN


def can_use_admin(user: AnyUser) -> bool:
    return is_superuser(user) or can_review(user) or can_manage_organisation(user)


def same_organisation(user: AnyUser, organisation_id: int | None) -> bool:
    organisation = organisation_of(user)
    return organisation is not None and organisation.id == organisation_id


def require_same_organisation(user: AnyUser, organisation_id: int | None) -> None:
    """404, not 403: another organisation's rows must not even be confirmed to exist."""
    if not same_organisation(user, organisation_id):
        raise Http404
