from __future__ import annotations

import pytest
from django.urls import reverse

from matching.models import Gallery
from portal.keys import api_key_create
from portal.models import AuditEvent, Membership
from tests.conftest import OBAMA, OBAMA_2, decide


@pytest.fixture
def acme_world(enrol, open_case, reviewers):
    """One organisation's full set of rows: a gallery, a case, faces and a candidate."""
    from matching.models import EnrolmentBatch

    subject = enrol("OBAMA-REF", OBAMA)
    case = open_case(OBAMA_2)
    candidate = case.candidates.get()
    for reviewer in reviewers:
        decide(candidate, reviewer, reason="Same ears and nose.")
    gallery = Gallery.objects.get()
    batch = EnrolmentBatch.objects.create(gallery=gallery, archive="x.zip", manifest="x.csv")
    probe_face = candidate.search.face
    return {
        "case": case,
        "candidate": candidate,
        "gallery": gallery,
        "subject": subject,
        "batch": batch,
        "probe_face": probe_face,
    }


def acme_urls(world) -> list[str]:
    case, candidate = world["case"], world["candidate"]
    return [
        reverse("matching:case_detail", args=[case.pk]),
        reverse("matching:case_status", args=[case.pk]),
        reverse("matching:photo_image", args=[world["probe_face"].photo_id]),
        reverse("matching:face_crop", args=[world["probe_face"].pk]),
        reverse("matching:photo_image", args=[candidate.reference_face.photo_id]),
        reverse("matching:face_crop", args=[candidate.reference_face_id]),
        reverse("matching:gallery_detail", args=[world["gallery"].pk]),
        reverse("matching:batch_detail", args=[world["batch"].pk]),
        reverse("case-detail", args=[case.pk]),
        reverse("admin:reviews_reviewitem_change", args=[candidate.pk]),
        reverse("admin:reviews_reviewdecision_change", args=[candidate.decisions.first().pk]),
        reverse("admin:matching_case_change", args=[case.pk]),
        reverse("admin:matching_gallery_change", args=[world["gallery"].pk]),
        reverse("admin:matching_subject_change", args=[world["subject"].pk]),
        reverse("admin:portal_membership_change", args=[Membership.objects.get(user__username="bob").pk]),
        reverse("admin:portal_organisation_change", args=[case.organisation_id]),
    ]


@pytest.mark.parametrize("persona", ["charlie", "erin"])
def test_another_organisation_gets_404_for_everything(client, acme_world, persona, request):
    client.force_login(request.getfixturevalue(persona))

    statuses = {url: client.get(url).status_code for url in acme_urls(acme_world)}

    assert {url: code for url, code in statuses.items() if code != 404} == {}


def test_another_organisation_sees_nothing_in_lists(client, acme_world, alice, bob, dana, erin):
    from tests.factories import candidate_with

    # given: Acme's rows, with a candidate still open so that it is in Acme's review queue
    waiting = candidate_with(organisation=acme_world["case"].organisation, created_by=alice)
    lists = [
        ("reviews_reviewitem", waiting.case.reference, bob),
        ("matching_case", "C-1", dana),
        ("matching_subject", "OBAMA-REF", dana),
        ("portal_membership", "bob", dana),
        ("portal_auditevent", "bob", dana),
    ]
    for name, marker, insider in lists:
        url = reverse(f"admin:{name}_changelist")
        # when: Acme's own member opens the list, and then erin of the other organisation does
        client.force_login(insider)
        own = client.get(url)
        client.force_login(erin)
        theirs = client.get(url)

        # then: the same list page (no redirect for a bad lookup) shows Acme's row to Acme alone
        assert (name, own.status_code, theirs.status_code) == (name, 200, 200)
        assert marker in own.content.decode(), name
        assert marker not in theirs.content.decode(), name


def test_caseworker_cannot_open_the_review_admin(client, acme_world, alice):
    client.force_login(alice)

    queue = client.get(reverse("admin:reviews_reviewitem_changelist"))
    item = client.get(reverse("admin:reviews_reviewitem_change", args=[acme_world["candidate"].pk]))

    assert (queue.status_code, item.status_code) == (404, 404)


def test_api_lists_only_own_cases_and_only_confirmed_matches(client, acme_world, alice, charlie):
    client.force_login(charlie)
    assert client.get(reverse("case-list")).json()["count"] == 0

    client.force_login(alice)
    detail = client.get(reverse("case-detail", args=[acme_world["case"].pk])).json()
    assert [m["subject_code"] for m in detail["confirmed_matches"]] == ["OBAMA-REF"]
    assert detail["candidates"] == {"pending": 0, "confirmed": 1, "rejected": 0, "not_comparable": 0}


def test_org_admin_adds_a_member_only_to_their_organisation(client, dana, other_org):
    client.force_login(dana)

    response = client.post(
        reverse("admin:portal_membership_add"),
        {
            "username": "frank",
            "email": "frank@example.org",
            "password": "a long enough passphrase",
            "role": "reviewer",
            "organisation": other_org.pk,  # ignored: org admins cannot choose
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    membership = Membership.objects.get(user__username="acme.frank")
    assert (membership.organisation, membership.role) == (dana.membership.organisation, "reviewer")
    assert AuditEvent.objects.filter(action="member.create", actor=dana).exists()


def test_org_admin_changes_a_role_and_it_is_recorded(client, dana, alice):
    client.force_login(dana)
    membership = alice.membership

    client.post(reverse("admin:portal_membership_change", args=[membership.pk]), {"role": "reviewer", "_save": "Save"})

    membership.refresh_from_db()
    assert membership.role == "reviewer"
    event = AuditEvent.objects.get(action="member.role")
    assert event.detail == {"username": "alice", "from": "caseworker", "to": "reviewer"}


def test_the_member_list_shows_people_but_not_api_key_service_users(client, dana, alice):
    # Given an organisation API key, which acts through a service user with a membership
    key, _ = api_key_create(
        organisation=dana.membership.organisation, name="Intake", role="caseworker", acting_user=dana
    )
    client.force_login(dana)

    # When the org admin opens the member list, and the service user's change page
    listed = client.get(reverse("admin:portal_membership_changelist")).context["cl"].result_list
    service_page = client.get(reverse("admin:portal_membership_change", args=[key.user.membership.pk]))

    # Then only people are listed, and the key is managed as a key
    assert {m.user.username for m in listed} == {"dana", "alice"}
    assert service_page.status_code == 404
    assert client.get(reverse("admin:portal_apikey_changelist")).context["cl"].result_list[0] == key


def test_reviewer_cannot_manage_members(client, bob):
    client.force_login(bob)

    assert client.get(reverse("admin:portal_membership_changelist")).status_code == 403
    assert client.get(reverse("admin:portal_membership_change", args=[bob.membership.pk])).status_code == 403


def test_only_superusers_create_organisations(client, dana, django_user_model):
    client.force_login(dana)
    assert client.get(reverse("admin:portal_organisation_add")).status_code == 403

    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    client.force_login(root)
    response = client.post(
        reverse("admin:portal_organisation_add"),
        {
            "name": "New Org",
            "slug": "new-org",
            "distance_threshold": "0.55",
            "max_candidates": "3",
            "target_fmr": "0.001",
            "fpir_ceiling": "0.5",
            "audit_max_age_days": "180",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="organisation.create").exists()


def test_login_is_recorded(client, alice, password):
    client.post(reverse("login"), {"username": "alice", "password": password})

    assert AuditEvent.objects.filter(action="login", actor=alice).exists()
