from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from portal import access
from portal.audit import audit_record
from portal.errors import Refusal
from portal.models import Membership, Organisation, Role


class AccessError(Refusal):
    """Refused by the access rules."""


@transaction.atomic
def organisation_create(*, name: str, slug: str, acting_user: Any) -> Organisation:
    if not access.is_superuser(acting_user):
        raise AccessError("Only a superuser may create organisations.")
    organisation = Organisation.objects.create(name=name, slug=slug)
    audit_record(action="organisation.create", actor=acting_user, organisation=organisation, target=organisation)
    return organisation


@transaction.atomic
def organisation_update(*, organisation: Organisation, acting_user: Any, **changes: Any) -> Organisation:
    """Change an organisation's matching settings, recording old and new values.

    Not the threshold, the candidates per face or the retention: each changes only in its own step on /settings/
    (matching.services.organisation_threshold_confirm, organisation_retention_set), after the page has said what
    it does, so that no other door (admin, API, script) changes them unseen.
    """
    own_step = {"distance_threshold", "max_candidates", "retention_days"} & set(changes)
    if own_step:
        raise AccessError(
            f"{', '.join(sorted(own_step))}: changed only on the settings page (/settings/), which shows first "
            "what the change does, and records it."
        )
    allowed = {
        "name",
        "slug",
        "target_fmr",
        "fpir_ceiling",
        "audit_max_age_days",
        "require_valid_audit",
        "keep_originals",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise AccessError(f"Cannot change {', '.join(sorted(unknown))}.")
    locked = Organisation.objects.select_for_update(no_key=True).get(pk=organisation.pk)
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


def member_username(organisation: Organisation, name: str) -> str:
    """A member's username lives in their organisation's namespace, `<slug>.<name>`.

    Usernames are unique across the instance, so a refusal of a name another organisation uses would tell an
    org admin (or anyone holding an invitation link) who exists elsewhere. Within a namespace only one's own
    organisation's members can collide: slugs hold no dot, so no two namespaces overlap.
    """
    name = name.strip()
    prefix = f"{organisation.slug}."
    return name if name.lower().startswith(prefix) else f"{prefix}{name}"


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
    if not username.strip():
        raise AccessError("Choose a username.")
    username = member_username(organisation, username)
    if User.objects.filter(username__iexact=username).exists():
        raise AccessError(f"The username {username} is already used in your organisation; choose another.")
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
    locked = Membership.objects.select_for_update(no_key=True).get(pk=membership.pk)
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


@transaction.atomic
def user_deactivate(*, user: Any, acting_user: Any) -> None:
    """Stop an account from signing in, for good or until reactivated. Users are never deleted once the activity
    log names them: its rows cover their id (see AuditEvent.actor)."""
    if not getattr(acting_user, "is_superuser", False):
        raise AccessError("Only a superuser deactivates accounts here; org admins deactivate their members.")
    if user.pk == acting_user.pk:
        raise AccessError("You cannot deactivate yourself.")
    if not user.is_active:
        return
    user.is_active = False
    user.save(update_fields=["is_active"])
    membership = Membership.objects.filter(user=user).select_related("organisation").first()
    audit_record(
        action="user.deactivate",
        actor=acting_user,
        organisation=membership.organisation if membership else None,
        target=user,
        detail={"username": user.username},
    )


# Invitations and use-case gating

INVITATION_DAYS = 7


@transaction.atomic
def invitation_create(*, organisation: Organisation, email: str, role: str, acting_user: Any) -> tuple[Any, str]:
    """Invite someone by email. Returns the invitation and the one-time token (only its hash is stored)."""
    import hashlib
    import secrets
    from datetime import timedelta

    from django.utils import timezone

    from portal.models import Invitation

    if role not in Role.values:
        raise AccessError(f"Unknown role {role}.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organisation=organisation,
        email=email.strip().lower(),
        role=role,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        invited_by=acting_user,
        expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    audit_record(
        action="member.invite",
        actor=acting_user,
        organisation=organisation,
        target=invitation,
        detail={"email": invitation.email, "role": role},
    )
    # The mail goes through the outbox: an SMTP outage delays it and never undoes the invitation. The token
    # travels encrypted, so that neither the outbox row nor the broker message holds a usable link.
    from portal.mail import secret_seal
    from portal.outbox import outbox_enqueue

    outbox_enqueue("portal.tasks.send_invitation_mail", invitation.pk, secret_seal(token))
    return invitation, token


def invitation_link(token: str) -> str:
    from django.conf import settings
    from django.urls import reverse

    return f"{settings.PORTAL_BASE_URL}{reverse('invitation_accept', args=[token])}"


def invitation_mail_send(*, invitation_id: int, sealed_token: str) -> bool:
    """Send the invitation's mail, unless it was accepted or expired meanwhile. Returns whether it was sent.

    Sending twice (a task that ran twice) only sends a second copy of the same link.
    """
    from django.core.mail import send_mail
    from django.utils import timezone

    from portal.mail import secret_open
    from portal.models import Invitation

    invitation = Invitation.objects.select_related("organisation").filter(pk=invitation_id).first()
    if invitation is None or not invitation.usable:
        return False
    organisation = invitation.organisation
    send_mail(
        subject=f"[Face search portal] Invitation to {organisation.name}",
        message=f"You are invited to join {organisation.name} as {invitation.get_role_display()}.\n\n"
        f"{invitation_link(secret_open(sealed_token))}\n\n"
        f"The link works once and expires on {timezone.localtime(invitation.expires_at):%Y-%m-%d %H:%M %Z}.",
        from_email=None,
        recipient_list=[invitation.email],
    )
    return True


def invitation_find(token: str):
    import hashlib

    from portal.models import Invitation

    return (
        Invitation.objects.select_related("organisation")
        .filter(token_hash=hashlib.sha256(token.encode()).hexdigest())
        .first()
    )


@transaction.atomic
def invitation_accept(
    *, token: str, username: str, password: str, first_name: str = "", last_name: str = ""
) -> Membership:
    from django.utils import timezone

    from portal.models import Invitation

    found = invitation_find(token)
    if found is None:
        raise AccessError("This invitation link is not valid.")
    invitation = Invitation.objects.select_for_update(no_key=True).get(pk=found.pk)
    if invitation.accepted_at is not None:
        raise AccessError("This invitation has already been used.")
    if invitation.revoked_at is not None:
        raise AccessError("This invitation was withdrawn; ask for a new one.")
    if invitation.expires_at <= timezone.now():
        raise AccessError("This invitation has expired; ask for a new one.")
    membership = member_create(
        organisation=invitation.organisation,
        username=username,
        email=invitation.email,
        password=password,
        role=invitation.role,
        acting_user=invitation.invited_by,
        first_name=first_name,
        last_name=last_name,
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = membership.user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        action="member.invite_accept", actor=membership.user, organisation=invitation.organisation, target=invitation
    )
    return membership


@transaction.atomic
def organisation_use_case_approve(
    *, organisation: Organisation, permitted_purpose: str, legal_basis: str, acting_user: Any
) -> Organisation:
    from django.utils import timezone

    if not access.is_superuser(acting_user):
        raise AccessError("Only a superuser may record an organisation's permitted use.")
    if not permitted_purpose.strip() or not legal_basis.strip():
        raise AccessError("Record both the permitted purpose and the legal basis.")
    locked = Organisation.objects.select_for_update(no_key=True).get(pk=organisation.pk)
    locked.permitted_purpose = permitted_purpose.strip()
    locked.legal_basis = legal_basis.strip()
    locked.use_case_approved_at = timezone.now()
    locked.save(update_fields=["permitted_purpose", "legal_basis", "use_case_approved_at"])
    audit_record(
        action="organisation.use_case",
        actor=acting_user,
        organisation=locked,
        target=locked,
        detail={"purpose": locked.permitted_purpose, "legal_basis": locked.legal_basis},
    )
    return locked


@transaction.atomic
def invitation_revoke(*, invitation: Any, acting_user: Any) -> Any:
    """Withdraw an invitation before it is used or expires; its link stops working at once."""
    from django.utils import timezone

    from portal.models import Invitation

    locked = Invitation.objects.select_for_update(no_key=True).get(pk=invitation.pk)
    if not (
        access.is_superuser(acting_user)
        or (
            access.can_manage_organisation(acting_user)
            and access.same_organisation(acting_user, locked.organisation_id)
        )
    ):
        raise AccessError("Only the organisation's admins withdraw its invitations.")
    if locked.accepted_at is not None:
        raise AccessError(f"The invitation of {locked.email} was already accepted; deactivate the member instead.")
    if locked.revoked_at is not None:
        return locked
    locked.revoked_at = timezone.now()
    locked.revoked_by = acting_user
    locked.save(update_fields=["revoked_at", "revoked_by"])
    audit_record(
        action="member.invite_revoke",
        actor=acting_user,
        organisation=locked.organisation,
        target=locked,
        detail={"email": locked.email, "role": locked.role},
    )
    return locked
