"""The one place that decides who may act.

Every view, admin class, API view and service asks here. Nothing else reads
roles directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import Http404

from portal.models import ApiKey, ApiKeyKind, Membership, Organisation, Role

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


REVIEW_ROLES = (Role.REVIEWER, Role.ORG_ADMIN)


def can_close_case(user: AnyUser) -> bool:
    """Caseworkers and org admins close a case, which starts its retention period."""
    return can_work_cases(user)


def can_reopen_case(user: AnyUser) -> bool:
    """Only org admins reopen a closed case, which stops its retention clock."""
    return role_of(user) == Role.ORG_ADMIN


def can_review(user: AnyUser) -> bool:
    """Reviewers and org admins decide candidates (each decision then has its own blockers)."""
    return role_of(user) in REVIEW_ROLES


def is_senior(user: AnyUser, *, senior_reviewer_id: int | None) -> bool:
    """Org admins, and the reviewer the review policy names as senior."""
    if not can_review(user):
        return False
    return role_of(user) == Role.ORG_ADMIN or (senior_reviewer_id is not None and senior_reviewer_id == user.pk)


def can_settle_escalations(user: AnyUser, *, senior_reviewer_id: int | None) -> bool:
    """Who decides a candidate on which reviewers disagreed (if they took no part in it)."""
    return is_senior(user, senior_reviewer_id=senior_reviewer_id)


def can_request_disclosure(user: AnyUser, *, senior_reviewer_id: int | None) -> bool:
    """Org admins and the senior reviewer; the report's content then depends on the case's open candidates."""
    return is_senior(user, senior_reviewer_id=senior_reviewer_id)


def can_attest_training(user: AnyUser, reviewer: AnyUser) -> bool:
    """An org admin attests someone else's training, never their own."""
    return can_manage_organisation(user) and getattr(reviewer, "pk", None) != getattr(user, "pk", None)


def is_service_user(user: AnyUser) -> bool:
    """The user an organisation API key acts through."""
    return ApiKey.objects.filter(user_id=getattr(user, "pk", None), kind=ApiKeyKind.ORGANISATION).exists()


def accountable_human(user: AnyUser) -> AnyUser | None:
    """The person answerable for what this user does: an organisation key's maker, else the user."""
    if not getattr(user, "is_authenticated", False):
        return None
    key = ApiKey.objects.select_related("created_by").filter(user=user, kind=ApiKeyKind.ORGANISATION).first()
    return key.created_by if key is not None else user


def can_manage_organisation(user: AnyUser) -> bool:
    return role_of(user) == Role.ORG_ADMIN


def can_manage_members(user: AnyUser, organisation_id: int | None) -> bool:
    """Who adds, invites, deactivates and reactivates an organisation's members: a superuser, or its org admins."""
    return is_superuser(user) or (can_manage_organisation(user) and same_organisation(user, organisation_id))


def can_grant_role(user: AnyUser, *, organisation_id: int | None, role: str) -> bool:
    """Who may make someone a member with a role, or change a member's role: whoever manages the organisation's
    members, for every role, org admin included. Services ask it of a user read afresh under the lock their
    authority stands on (portal.services), so that a grant and a demotion never cross."""
    return role in Role.values and can_manage_members(user, organisation_id)


def can_read_audits(user: AnyUser) -> bool:
    """Bias audits: reviewers weigh them, org admins also upload evaluation sets."""
    return can_review(user) or can_manage_organisation(user)


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


# The permission matrix: who may use each route, by URL name. The route middleware
# (portal.middleware) enforces it for every request; a route missing here is refused
# to everyone. Views still check rows: "may use the case list" here, "this case
# belongs to your organisation" in the view. The README's permission matrix is this table.

ANONYMOUS = "anonymous"  # anyone, signed in or not
SIGNED_IN = "signed_in"  # any signed-in user, member or not
MEMBER = "member"  # any member of an organisation, whatever the role
SUPERUSER = "superuser"
CASEWORKER, REVIEWER, ORG_ADMIN = Role.CASEWORKER.value, Role.REVIEWER.value, Role.ORG_ADMIN.value

_CASES = frozenset({CASEWORKER, ORG_ADMIN})
_REVIEW = frozenset({REVIEWER, ORG_ADMIN})
_ORG_ADMIN = frozenset({ORG_ADMIN})

ROUTE_ROLES: dict[str, frozenset[str]] = {
    # Signing in and out, and the load balancer's health check
    "login": frozenset({ANONYMOUS}),
    "logout": frozenset({ANONYMOUS}),
    "healthz": frozenset({ANONYMOUS}),
    "home": frozenset({SIGNED_IN}),
    # A single-use invitation link: whoever holds it may accept it
    "invitation_accept": frozenset({ANONYMOUS}),
    # The second factor: any signed-in user may enrol or confirm one (portal.twofactor decides who must)
    "two_factor_setup": frozenset({SIGNED_IN}),
    "two_factor_verify": frozenset({SIGNED_IN}),
    "no_role": frozenset({SIGNED_IN}),
    # A member's own API token (mint and revoke), as `auth-token` in the API
    "api_token": frozenset({MEMBER}),
    # Caseworkers' pages
    "matching:case_list": _CASES,
    "matching:case_create": _CASES,
    "matching:case_detail": _CASES,
    "matching:case_status": _CASES,
    # Closing a case starts its retention; reopening (org admins only, the view checks) stops it
    "matching:case_close": _CASES,
    "matching:case_reopen": _CASES,
    # Photos and crops: the view decides per photo (a caseworker sees a gallery photo only once confirmed)
    "matching:photo_image": frozenset({MEMBER}),
    "matching:face_crop": frozenset({MEMBER}),
    "matching:face_aligned": frozenset({MEMBER}),
    # Galleries, enrolment and settings
    "matching:gallery_list": _ORG_ADMIN,
    "matching:gallery_detail": _ORG_ADMIN,
    "matching:batch_detail": _ORG_ADMIN,
    "matching:organisation_settings": _ORG_ADMIN,
    # Bias audits: reviewers read them, org admins also upload (the view refuses a reviewer's POST)
    "matching:audit_list": _REVIEW,
    "matching:audit_dataset": _REVIEW,
    "matching:audit_report": _REVIEW,
    "matching:audit_report_download": _REVIEW,
    "reviews:disclosure_download": _REVIEW,
    "reviews:disclosure_view": _REVIEW,
    # The admin, as a whole; each ModelAdmin then answers per model through portal.admin_mixins
    "admin:*": frozenset({REVIEWER, ORG_ADMIN, SUPERUSER}),
    "admin:login": frozenset({ANONYMOUS}),
    # The REST API
    "api-schema": frozenset({ANONYMOUS}),
    "api-docs": frozenset({ANONYMOUS}),
    "api-root": frozenset({MEMBER}),
    "auth-token": frozenset({MEMBER}),
    "case-list": _CASES,
    "case-detail": _CASES,
    "case-photos": _CASES,
    "case-photo": _CASES,
    "case-matches": _CASES,
    "case-close": _CASES,
    "case-reopen": _ORG_ADMIN,
    "match-list": _CASES,
    "gallery-list": _ORG_ADMIN,
    "gallery-detail": _ORG_ADMIN,
    "gallery-subjects": _ORG_ADMIN,
    "gallery-imports": _ORG_ADMIN,
    "subject-detail": _ORG_ADMIN,
    "import-detail": _ORG_ADMIN,
    "audit-run-list": _REVIEW,
    "audit-run-detail": _REVIEW,
}


def route_roles(view_name: str | None) -> frozenset[str] | None:
    """The matrix entry for a route: its own, else its namespace's `ns:*`; None when it has neither."""
    if not view_name:
        return None
    if view_name in ROUTE_ROLES:
        return ROUTE_ROLES[view_name]
    namespace, _, _ = view_name.rpartition(":")
    return ROUTE_ROLES.get(f"{namespace}:*") if namespace else None


def route_allows(view_name: str | None, user: AnyUser) -> bool:
    """Whether the matrix lets this user use this route. Unknown routes are refused to everyone."""
    roles = route_roles(view_name)
    if not roles:
        return False
    if ANONYMOUS in roles:
        return True
    if not user.is_authenticated or not user.is_active:
        return False
    if SIGNED_IN in roles or (SUPERUSER in roles and is_superuser(user)):
        return True
    role = role_of(user)
    return role is not None and (MEMBER in roles or role in roles)
