from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from portal import access
from portal.audit import audit_record
from portal.errors import Refusal
from portal.models import SLUG_USED, Invitation, Membership, Organisation, Role
from portal.notices import notice_add


class AccessError(Refusal):
    """Refused by the access rules."""


@transaction.atomic
def organisation_create(*, name: str, slug: str, acting_user: Any) -> Organisation:
    if not access.is_superuser(acting_user):
        raise AccessError("Only a superuser may create organisations.")
    _slug_check(slug)
    organisation = Organisation(name=name, slug=slug)
    organisation.full_clean()
    organisation.save()
    audit_record(action="organisation.create", actor=acting_user, organisation=organisation, target=organisation)
    return organisation


def _slug_check(slug: str, *, organisation_id: int | None = None) -> None:
    """Refuse a slug another organisation uses in any case (the database's constraint says the same, later), or
    whose namespace still holds another organisation's accounts (a slug renamed leaves its members' names)."""
    if Organisation.objects.filter(slug__iexact=slug).exclude(pk=organisation_id).exists():
        raise AccessError(f"{slug}: {SLUG_USED}")
    others = get_user_model().objects.filter(username__istartswith=f"{slug}.")
    if others.exclude(membership__organisation_id=organisation_id).exists():
        raise AccessError(
            f"{slug}: accounts of another organisation are named {slug}.…, from before a slug was changed; "
            "choose another slug."
        )


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
    if "slug" in diff:
        _slug_check(changes["slug"], organisation_id=locked.pk)
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

    Usernames are unique across the instance whatever their case, so a refusal of a name another organisation
    uses would tell an org admin (or anyone holding an invitation link) who exists elsewhere. Within a namespace
    only one's own organisation's members can collide: slugs hold no dot and are unique whatever their case, so
    no two namespaces overlap. A name typed with the namespace already in front, in any case, keeps it once.
    """
    name = name.strip()
    prefix = f"{organisation.slug}."
    if name[: len(prefix)].lower() == prefix.lower():
        name = name[len(prefix) :]
    return f"{prefix}{name}"


def _authority_lock(*users: Any) -> dict[int, Any]:
    """These people read afresh, with the rows their authority stands on locked until the transaction ends.

    A person's role, and whether their account is active, change only under their membership's row lock
    (member_set_role, member_set_active, user_deactivate take it first), and every grant of a role takes the
    granter's lock before it checks them (member_create, invitation_create, invitation_accept). So a grant that
    starts during a demotion waits for it and sees its outcome, and a demotion waits for a grant that relied on
    the role. Rows are locked in one order (by id), so that two admins acting on each other wait instead of
    deadlocking. A superuser without a membership has their account's row locked instead. Returns users by id.
    """
    User = get_user_model()
    ids = sorted({getattr(user, "pk", user) for user in users if user is not None})
    memberships = {
        row.user_id: row
        for row in Membership.objects.select_for_update(no_key=True).filter(user_id__in=ids).order_by("pk")
    }
    others = [user_id for user_id in ids if user_id not in memberships]
    found = {user.pk: user for user in User.objects.select_for_update(no_key=True).filter(pk__in=others).order_by("pk")}
    for user in User.objects.filter(pk__in=list(memberships)):
        user.membership = memberships[user.pk]
        found[user.pk] = user
    return found


def _grant_refusal(granter: Any, organisation: Organisation | None, role: str) -> str | None:
    if role not in Role.values:
        return f"Unknown role {role}."
    if organisation is None:
        return "A role is granted in an organisation; choose one."
    if granter is None or not access.can_grant_role(granter, organisation_id=organisation.pk, role=role):
        return f"You cannot grant the role of {Role(role).label} in {organisation.name}."
    return None


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
    granter = _authority_lock(acting_user).get(getattr(acting_user, "pk", None))
    refusal = _grant_refusal(granter, organisation, role)
    if refusal:
        raise AccessError(refusal)
    if not username.strip():
        raise AccessError("Choose a username.")
    username = member_username(organisation, username)
    if User.objects.filter(username__iexact=username).exists():
        raise AccessError(f"The username {username} is already used in your organisation; choose another.")
    try:
        validate_password(password)
    except ValidationError as error:
        raise AccessError(" ".join(error.messages)) from None
    try:
        # A name taken meanwhile, in any case, meets the unique index on lower(username) (migration portal 0012).
        with transaction.atomic():
            user = User.objects.create_user(
                username=username, email=email, password=password, first_name=first_name, last_name=last_name
            )
    except IntegrityError:
        raise AccessError(f"The username {username} is already used in your organisation; choose another.") from None
    membership = Membership.objects.create(user=user, organisation=organisation, role=role)
    audit_record(
        action="member.create",
        actor=acting_user,
        organisation=organisation,
        target=membership,
        detail={"username": username, "role": role},
    )
    return membership


def _sessions_end(user: Any) -> int:
    """Sign this person out everywhere: delete their sessions. Returns how many there were.

    Called when their role or standing changes, so that no session keeps what it was granted under the old
    one (a second factor confirmed for another role, a sign-in made before a deactivation). The person signs
    in again, and the second factor is asked again if the new role needs it. Sessions live in the database
    (Django's default engine, or cached_db), which is what lets another person's sessions be found.
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import SESSION_KEY
    from django.utils import timezone

    store = import_module(settings.SESSION_ENGINE).SessionStore
    ended = 0
    for session in store.get_model_class().objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get(SESSION_KEY) == str(user.pk):
            store(session_key=session.session_key).delete()
            ended += 1
    return ended


@transaction.atomic
def member_set_role(*, membership: Membership, role: str, acting_user: Any) -> Membership:
    """Change a member's role. Their pending invitations are withdrawn with it (they were made on the old role), and
    their sessions end (they sign in again in the new one)."""
    if role not in Role.values:
        raise AccessError(f"Unknown role {role}.")
    people = _authority_lock(membership.user_id, acting_user)
    locked = people[membership.user_id].membership
    if locked.role == role:
        return locked
    refusal = _grant_refusal(people[acting_user.pk], locked.organisation, role)
    if refusal:
        raise AccessError(refusal)
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
    _invitations_withdraw(inviter=locked.user, acting_user=acting_user, because=f"was made {Role(role).label.lower()}")
    _sessions_end(locked.user)
    return locked


@transaction.atomic
def member_set_active(*, membership: Membership, active: bool, acting_user: Any) -> None:
    """Deactivate or reactivate a member. Deactivation withdraws their pending invitations and ends their sessions,
    so that a reactivation does not bring an old session back."""
    if membership.user_id == acting_user.pk:
        raise AccessError("You cannot deactivate yourself.")
    people = _authority_lock(membership.user_id, acting_user)
    user = people[membership.user_id]
    if not access.can_manage_members(people[acting_user.pk], membership.organisation_id):
        raise AccessError("Only the organisation's admins deactivate and reactivate its members.")
    if user.is_active == active:
        return
    user.is_active = membership.user.is_active = active
    user.save(update_fields=["is_active"])
    audit_record(
        action="member.activate" if active else "member.deactivate",
        actor=acting_user,
        organisation=user.membership.organisation,
        target=user.membership,
        detail={"username": user.username},
    )
    if not active:
        _invitations_withdraw(inviter=user, acting_user=acting_user, because="was deactivated")
        _sessions_end(user)


@transaction.atomic
def user_deactivate(*, user: Any, acting_user: Any) -> None:
    """Stop an account from signing in, for good or until reactivated. Users are never deleted once the activity
    log names them: its rows cover their id (see AuditEvent.actor). Their pending invitations are withdrawn and
    their sessions end."""
    if not getattr(acting_user, "is_superuser", False):
        raise AccessError("Only a superuser deactivates accounts here; org admins deactivate their members.")
    if user.pk == acting_user.pk:
        raise AccessError("You cannot deactivate yourself.")
    locked = _authority_lock(user, acting_user)[user.pk]
    if not locked.is_active:
        return
    locked.is_active = user.is_active = False
    locked.save(update_fields=["is_active"])
    membership = getattr(locked, "membership", None)
    audit_record(
        action="user.deactivate",
        actor=acting_user,
        organisation=membership.organisation if membership else None,
        target=locked,
        detail={"username": locked.username},
    )
    _invitations_withdraw(inviter=locked, acting_user=acting_user, because="was deactivated")
    _sessions_end(locked)


# Invitations and use-case gating

INVITATION_DAYS = 7


@transaction.atomic
def invitation_create(*, organisation: Organisation, email: str, role: str, acting_user: Any) -> tuple[Any, str]:
    """Invite someone by email. Returns the invitation and the one-time token (only its hash is stored)."""
    import hashlib
    import secrets
    from datetime import timedelta

    from django.utils import timezone

    granter = _authority_lock(acting_user).get(getattr(acting_user, "pk", None))
    refusal = _grant_refusal(granter, organisation, role)
    if refusal:
        raise AccessError(refusal)
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

    return (
        Invitation.objects.select_related("organisation")
        .filter(token_hash=hashlib.sha256(token.encode()).hexdigest())
        .first()
    )


@transaction.atomic
def invitation_accept(
    *, token: str, username: str, password: str, first_name: str = "", last_name: str = ""
) -> Membership:
    """Join with an invitation. It stands on its maker's authority, checked now and not only when it was made:
    their lock is taken first (see _authority_lock), so a demotion in progress either ends before the check, and
    the invitation is refused, or waits until the member has joined."""
    from django.utils import timezone

    found = invitation_find(token)
    if found is None:
        raise AccessError("This invitation link is not valid.")
    inviter = _authority_lock(found.invited_by_id).get(found.invited_by_id)
    invitation = Invitation.objects.select_for_update(no_key=True).get(pk=found.pk)
    if invitation.accepted_at is not None:
        raise AccessError("This invitation has already been used.")
    if invitation.revoked_at is not None:
        raise AccessError("This invitation was withdrawn; ask for a new one.")
    if invitation.expires_at <= timezone.now():
        raise AccessError("This invitation has expired; ask for a new one.")
    if _grant_refusal(inviter, invitation.organisation, invitation.role):
        raise AccessError(
            f"The person who invited you can no longer grant the role of {invitation.get_role_display()}, so the "
            "invitation no longer stands; ask the organisation's admins for a new one."
        )
    membership = member_create(
        organisation=invitation.organisation,
        username=username,
        email=invitation.email,
        password=password,
        role=invitation.role,
        acting_user=inviter,
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


def _invitations_withdraw(*, inviter: Any, acting_user: Any, because: str) -> list[Invitation]:
    """Withdraw the pending invitations of someone who just lost the authority they were made on, log each, and
    tell whoever made the change. The caller holds the inviter's lock (see _authority_lock)."""
    from django.utils import timezone

    now = timezone.now()
    pending = list(
        Invitation.objects.select_for_update(no_key=True)
        .filter(invited_by=inviter, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now)
        .select_related("organisation")
        .order_by("pk")
    )
    reason = f"{inviter.get_username()} {because}"
    for invitation in pending:
        invitation.revoked_at = now
        invitation.revoked_by = acting_user
        invitation.save(update_fields=["revoked_at", "revoked_by"])
        audit_record(
            action="member.invite_revoke",
            actor=acting_user,
            organisation=invitation.organisation,
            target=invitation,
            detail={"email": invitation.email, "role": invitation.role, "reason": reason},
        )
    if pending:
        listed = ", ".join(f"{i.email} ({i.get_role_display()})" for i in pending)
        notice_add(
            f"{reason}, so {'their pending invitation was' if len(pending) == 1 else 'their pending invitations were'}"
            f" withdrawn: {listed}. Invite again if they should still join."
        )
    return pending


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
