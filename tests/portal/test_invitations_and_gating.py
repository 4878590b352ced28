from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from matching import services
from matching.models import PhotoStatus
from portal.models import AuditEvent, Invitation, Membership
from tests.conftest import OBAMA_2, _second_admin, wait_for
from tests.factories import OrganisationFactory


@pytest.fixture
def invite(eager_tasks, django_capture_on_commit_callbacks):
    """Invite through the admin; the mail task runs inline once the admin's transaction commits."""

    def invite(client, dana, email="nina@example.org", role="reviewer") -> str:
        client.force_login(dana)
        with django_capture_on_commit_callbacks(execute=True):
            client.post(reverse("admin:portal_invitation_add"), {"email": email, "role": role, "_save": "Save"})
        client.logout()
        (message,) = mail.outbox
        return re.search(r"/accounts/invitations/[^/\s]+/", message.body).group(0)

    return invite


def test_an_org_admin_invites_by_email_and_the_link_works_once(client, dana, org, invite):
    link = invite(client, dana)

    joined = client.post(link, {"username": "nina", "password": "a long enough passphrase"})
    client.logout()
    again = client.get(link)

    assert joined.status_code == 302
    membership = Membership.objects.get(user__username="acme.nina")
    assert (membership.organisation, membership.role, membership.user.email) == (org, "reviewer", "nina@example.org")
    assert again.status_code == 404 and "has been used" in again.content.decode()
    assert {"member.invite", "member.invite_accept"} <= set(AuditEvent.objects.values_list("action", flat=True))
    assert Invitation.objects.get().token_hash not in link  # only the hash is stored


def test_an_expired_invitation_is_refused(client, dana, invite):
    link = invite(client, dana)
    Invitation.objects.update(expires_at=timezone.now() - timedelta(minutes=1))

    response = client.post(link, {"username": "nina", "password": "a long enough passphrase"})

    assert response.status_code == 404 and not Membership.objects.filter(user__username="nina").exists()


def test_a_forged_link_is_refused(client, db):
    assert client.get(reverse("invitation_accept", args=["not-a-real-token"])).status_code == 404


def test_caseworkers_cannot_invite(client, alice):
    client.force_login(alice)

    assert client.get(reverse("admin:portal_invitation_add")).status_code == 404


def test_an_organisation_without_a_recorded_use_case_stores_uploads_but_does_not_search(alice, faces):
    # Given an organisation no superuser has approved yet
    unapproved = OrganisationFactory(slug="new", use_case_approved_at=None, permitted_purpose="", legal_basis="")
    alice.membership.organisation = unapproved
    alice.membership.save()

    case = services.case_create(
        organisation=unapproved,
        acting_user=alice,
        reference="G-1",
        title="t",
        purpose="p",
        photos=[services.uploaded_image_read(faces.upload(OBAMA_2))],
    )
    photo = case.photos.get()
    services.photo_process(photo_id=photo.pk)

    photo.refresh_from_db()
    assert photo.image and photo.status == PhotoStatus.FAILED
    assert "a superuser must first record its permitted purpose and legal basis" in photo.failure_reason
    assert not photo.faces.exists()


def test_only_a_superuser_records_the_use_case(client, dana, org, django_user_model):
    org.use_case_approved_at = None
    org.save()
    client.force_login(dana)
    page = client.get(reverse("admin:portal_organisation_change", args=[org.pk])).content.decode()
    assert 'name="permitted_purpose"' not in page

    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    client.force_login(root)
    data = {
        "name": org.name,
        "slug": org.slug,
        "distance_threshold": "0.6",
        "max_candidates": "5",
        "target_fmr": "0.001",
        "fpir_ceiling": "0.5",
        "audit_max_age_days": "180",
        "permitted_purpose": "Locating missing children",
        "legal_basis": "GDPR Art. 9(2)(g)",
        "_save": "Save",
    }
    response = client.post(reverse("admin:portal_organisation_change", args=[org.pk]), data)

    org.refresh_from_db()
    assert response.status_code == 302 and org.use_case_approved_at is not None
    assert AuditEvent.objects.filter(action="organisation.use_case", actor=root).exists()


def test_adding_a_member_reveals_no_username_of_another_organisation(client, dana, erin):
    # Given erin, a member of another organisation
    client.force_login(dana)

    # When dana adds a member and picks the name "erin"
    response = client.post(
        reverse("admin:portal_membership_add"),
        {"username": "erin", "password": "a long enough passphrase", "role": "reviewer", "_save": "Save"},
    )

    # Then nothing says the name is used elsewhere: the member gets it in dana's organisation's namespace
    assert response.status_code == 302
    assert "taken" not in response.content.decode()
    assert Membership.objects.get(user__username="acme.erin").organisation == dana.membership.organisation
    assert Membership.objects.get(user=erin).organisation != dana.membership.organisation


def test_an_invitee_learns_no_username_of_another_organisation(client, dana, erin, invite):
    link = invite(client, dana)

    joined = client.post(link, {"username": "erin", "password": "a long enough passphrase"})

    assert joined.status_code == 302
    assert Membership.objects.filter(user__username="acme.erin").exists()


def test_a_name_already_used_in_ones_own_organisation_is_refused_plainly(client, dana, org):
    client.force_login(dana)
    data = {"username": "frank", "password": "a long enough passphrase", "role": "reviewer", "_save": "Save"}
    client.post(reverse("admin:portal_membership_add"), data)

    again = client.post(reverse("admin:portal_membership_add"), data, follow=True)

    assert "The username acme.frank is already used in your organisation" in again.content.decode()
    assert Membership.objects.filter(user__username__iexact="acme.frank").count() == 1


def test_an_org_admin_withdraws_an_invitation_before_it_expires(client, dana, invite):
    link = invite(client, dana)
    invitation = Invitation.objects.get()
    client.force_login(dana)

    withdrawn = client.post(
        reverse("admin:portal_invitation_changelist"),
        {"action": "revoke", "_selected_action": [invitation.pk], "index": 0},
        follow=True,
    )
    client.logout()
    page = client.get(link)
    accept = client.post(link, {"username": "nina", "password": "a long enough passphrase"})

    assert "is withdrawn" in withdrawn.content.decode()
    assert page.status_code == 404 and accept.status_code == 404
    assert not Membership.objects.filter(user__username__endswith="nina").exists()
    assert AuditEvent.objects.filter(action="member.invite_revoke", actor=dana).exists()


# An invitation stands on its maker's authority: it is withdrawn when they lose it, and checked when it is used.

ACCEPT = {"username": "nina", "password": "a long enough passphrase"}


def _invited_by(maker, role: str = "org_admin") -> tuple[Invitation, str]:
    from portal.services import invitation_create

    return invitation_create(
        organisation=maker.membership.organisation, email="nina@example.org", role=role, acting_user=maker
    )


@pytest.mark.parametrize("change", ["demoted", "deactivated"])
def test_an_org_admin_who_loses_the_role_has_their_pending_invitations_withdrawn(dana, change):
    from portal.services import invitation_accept, member_set_active, member_set_role

    # Given dana's pending invitation of nina as an org admin
    olga = _second_admin(dana.membership.organisation)
    invitation, token = _invited_by(dana)

    # When olga demotes dana, or deactivates her
    if change == "demoted":
        member_set_role(membership=dana.membership, role="caseworker", acting_user=olga)
    else:
        member_set_active(membership=dana.membership, active=False, acting_user=olga)

    # Then the invitation is withdrawn, by olga, and the log says why; its link no longer works
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None and invitation.revoked_by == olga
    event = AuditEvent.objects.get(action="member.invite_revoke")
    assert event.actor == olga and "dana" in event.detail["reason"]
    with pytest.raises(Exception, match="This invitation was withdrawn"):
        invitation_accept(token=token, **ACCEPT)
    assert not Membership.objects.filter(user__username__iendswith="nina").exists()


def test_a_superuser_deactivating_an_inviter_withdraws_their_invitations(dana, django_user_model):
    from portal.services import user_deactivate

    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    invitation, _ = _invited_by(dana, role="reviewer")

    user_deactivate(user=dana, acting_user=root)

    invitation.refresh_from_db()
    assert invitation.revoked_at is not None and invitation.revoked_by == root


def test_the_admin_who_demotes_an_inviter_is_told_which_invitations_were_withdrawn(client, dana):
    # Given dana's pending invitation, and olga, a second org admin
    olga = _second_admin(dana.membership.organisation)
    _invited_by(dana)
    client.force_login(olga)

    # When olga makes dana a caseworker on the member's page
    response = client.post(
        reverse("admin:portal_membership_change", args=[dana.membership.pk]),
        {"role": "caseworker", "_save": "Save"},
        follow=True,
    )

    # Then the page she lands on says that dana's invitation of nina was withdrawn with it
    page = response.content.decode()
    assert "withdrawn" in page and "nina@example.org" in page


def test_an_invitation_whose_maker_can_no_longer_grant_the_role_is_refused(org, django_user_model):
    from portal.services import AccessError, invitation_accept, invitation_create

    # Given a superuser's invitation of nina as an org admin of acme
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    invitation, token = invitation_create(
        organisation=org, email="nina@example.org", role="org_admin", acting_user=root
    )

    # When root stops being a superuser (unticked on the user's page) and nina then accepts
    root.is_superuser = False
    root.save(update_fields=["is_superuser"])
    with pytest.raises(AccessError) as refused:
        invitation_accept(token=token, **ACCEPT)

    # Then she is refused, plainly, and nothing was stored
    assert "can no longer grant" in str(refused.value)
    assert not Membership.objects.filter(user__username__iendswith="nina").exists()
    invitation.refresh_from_db()
    assert invitation.accepted_at is None


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _waiting_for_a_lock(pid: int) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        return cursor.fetchone() is not None


def _in_thread(work, started: list[int], errors: list[BaseException], done=None):
    """Run `work` on a connection of its own, noting its backend pid first and what it raised."""
    import threading

    from django.db import connections

    def run() -> None:
        try:
            started.append(_backend_pid())
            work()
        except BaseException as error:  # reported by the test's own thread
            errors.append(error)
        finally:
            if done is not None:
                done.set()
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.postgresql_only("Row locks need PostgreSQL; SQLite locks the whole database.")
@pytest.mark.django_db(transaction=True)
def test_an_acceptance_that_waits_on_a_demotion_in_progress_grants_nothing(dana):
    import threading

    from django.db import transaction

    from portal.services import invitation_accept, member_set_role

    # Given dana's invitation of nina as an org admin, and olga demoting dana in a transaction not yet committed
    olga = _second_admin(dana.membership.organisation)
    invitation, token = _invited_by(dana)
    demoted, commit = threading.Event(), threading.Event()

    def demote() -> None:
        with transaction.atomic():
            member_set_role(membership=dana.membership, role="caseworker", acting_user=olga)
            demoted.set()
            assert commit.wait(30)

    demotion_errors: list[BaseException] = []
    demotion = _in_thread(demote, [], demotion_errors)
    assert demoted.wait(30)

    # When nina accepts meanwhile, and the demotion commits while her acceptance is in progress
    pids: list[int] = []
    acceptance_errors: list[BaseException] = []
    accepted = threading.Event()
    acceptance = _in_thread(lambda: invitation_accept(token=token, **ACCEPT), pids, acceptance_errors, accepted)
    wait_for(
        lambda: accepted.is_set() or (pids and _waiting_for_a_lock(pids[0])),
        timeout=30,
        message="the acceptance to finish or to wait for a lock",
    )
    commit.set()
    demotion.join(30)
    acceptance.join(30)

    # Then nina is refused: no member was granted a role by someone who no longer had it
    assert not demotion_errors, demotion_errors
    granted = Membership.objects.filter(user__username__iendswith="nina").first()
    assert granted is None, f"nina became {granted.role} on the word of dana, by then a caseworker"
    assert len(acceptance_errors) == 1 and "withdrawn" in str(acceptance_errors[0])
    invitation.refresh_from_db()
    assert invitation.accepted_at is None and invitation.revoked_by == olga


@pytest.mark.postgresql_only("Row locks need PostgreSQL; SQLite locks the whole database.")
@pytest.mark.django_db(transaction=True)
def test_a_demotion_waits_for_an_acceptance_that_has_checked_the_inviters_role(dana, monkeypatch):
    import threading

    from portal import services

    # Given nina accepting dana's invitation, paused once the acceptance has checked dana's role and before it
    # creates the member
    olga = _second_admin(dana.membership.organisation)
    _, token = _invited_by(dana)
    checked, resume = threading.Event(), threading.Event()
    create = services.member_create

    def member_create_after_a_pause(**kwargs):
        checked.set()
        assert resume.wait(30)
        return create(**kwargs)

    monkeypatch.setattr(services, "member_create", member_create_after_a_pause)
    acceptance_errors: list[BaseException] = []
    acceptance = _in_thread(lambda: services.invitation_accept(token=token, **ACCEPT), [], acceptance_errors)
    assert checked.wait(30)

    # When olga demotes dana meanwhile
    pids: list[int] = []
    demotion_errors: list[BaseException] = []
    demoted = threading.Event()
    demotion = _in_thread(
        lambda: services.member_set_role(membership=dana.membership, role="caseworker", acting_user=olga),
        pids,
        demotion_errors,
        demoted,
    )
    wait_for(
        lambda: demoted.is_set() or (pids and _waiting_for_a_lock(pids[0])),
        timeout=30,
        message="the demotion to finish or to wait for a lock",
    )

    # Then the demotion waits until nina has joined on dana's authority: it cannot commit in between
    waited = not demoted.is_set()
    resume.set()
    acceptance.join(30)
    demotion.join(30)
    assert waited, "the demotion committed while an acceptance that relied on dana's role was still open"
    assert not acceptance_errors and not demotion_errors, (acceptance_errors, demotion_errors)
    assert Membership.objects.get(user__username="acme.nina").role == "org_admin"
    assert Membership.objects.get(user=dana).role == "caseworker"
