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
from tests.conftest import OBAMA_2
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
