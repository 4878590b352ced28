from __future__ import annotations

import pytest
from django.urls import reverse

from matching import services
from matching.accuracy.gallery_risk import operating_point_for, threshold_consequences
from matching.models import Photo, PhotoStatus
from portal.models import AuditEvent, TaskOutbox
from tests.conftest import OBAMA, OBAMA_2
from tests.factories import OrganisationFactory


@pytest.fixture
def unconfirmed(org):
    org.threshold_confirmed_at = None
    org.save(update_fields=["threshold_confirmed_at"])
    return org


def test_probe_photos_wait_for_the_threshold_and_are_searched_once_an_org_admin_confirms_it(
    client, unconfirmed, alice, dana, enrol, open_case
):
    # Given a new organisation whose threshold nobody has confirmed, with Obama in its gallery
    enrol("OBAMA-REF", OBAMA)
    case = open_case(OBAMA_2)
    photo = case.photos.get()

    # Then the upload is kept, but nothing is detected or searched
    photo.refresh_from_db()
    assert photo.status == PhotoStatus.HELD and photo.image
    assert not photo.faces.exists() and not case.candidates.exists()

    # When the org admin confirms 0.55 on the settings page
    client.force_login(dana)
    response = client.post(
        reverse("matching:organisation_settings"), {"action": "confirm", "threshold": "0.55", "understood": "on"}
    )

    # Then the photo goes back to the worker through the outbox, and is searched at 0.55
    assert response.status_code == 302
    unconfirmed.refresh_from_db()
    assert unconfirmed.threshold_confirmed_at is not None and unconfirmed.threshold_confirmed_by == dana
    assert unconfirmed.distance_threshold == 0.55
    photo.refresh_from_db()
    assert photo.status == PhotoStatus.QUEUED and photo.attempts == 0
    assert TaskOutbox.objects.filter(task_name="matching.tasks.process_photo", args=[photo.pk]).exists()
    event = AuditEvent.objects.get(action="organisation.threshold_confirm")
    assert event.actor == dana and event.detail["released_photos"] == 1
    services.photo_process(photo_id=photo.pk)
    photo.refresh_from_db()
    assert photo.status == PhotoStatus.DONE
    assert case.candidates.get().search.threshold == 0.55


def test_confirming_needs_the_acknowledgement(client, unconfirmed, dana):
    client.force_login(dana)

    response = client.post(reverse("matching:organisation_settings"), {"action": "confirm", "threshold": "0.5"})

    assert response.status_code == 400
    unconfirmed.refresh_from_db()
    assert unconfirmed.threshold_confirmed_at is None


def test_caseworkers_reviewers_and_other_org_admins_cannot_confirm(client, unconfirmed, alice, bob, erin):
    # Given the insiders most likely to try: the caseworker waiting for results, a reviewer, another org's admin
    for user in (alice, bob):
        client.force_login(user)
        response = client.post(
            reverse("matching:organisation_settings"), {"action": "confirm", "threshold": "0.9", "understood": "on"}
        )
        assert response.status_code == 404
    with pytest.raises(services.ServiceError):
        services.organisation_threshold_confirm(organisation=unconfirmed, threshold=0.9, acting_user=erin)

    unconfirmed.refresh_from_db()
    assert unconfirmed.threshold_confirmed_at is None and unconfirmed.distance_threshold == 0.6


def test_a_new_organisation_is_offered_the_shared_audits_advice_not_the_librarys_0_6(client, audit_run, db):
    # Given a shared audit (run for another organisation) and a brand-new organisation with its own admin
    from tests.conftest import _member

    fresh = OrganisationFactory(slug="fresh", threshold_confirmed_at=None)
    admin = _member("frida", fresh, "org_admin")
    client.force_login(admin)

    page = client.get(reverse("matching:organisation_settings")).content.decode()

    # Nothing is enrolled yet: the proposal is for a gallery like the audit's own people, and the page says so
    point = operating_point_for(threshold_consequences(fresh))
    assert "Matching is on hold until you confirm the threshold" in page
    assert "No subject is enrolled yet" in page
    assert point.proposed is not None and point.proposed != 0.6
    assert f'name="threshold" value="{point.proposed}"' in page


def test_held_photos_are_not_resent_by_the_stale_photo_sweeper(unconfirmed, open_case):
    case = open_case(OBAMA_2)
    photo = case.photos.get()
    Photo.objects.filter(pk=photo.pk).update(status_changed_at=photo.created_at.replace(year=2020))

    services.photos_requeue_stale()

    photo.refresh_from_db()
    assert photo.status == PhotoStatus.HELD


def test_confirming_sets_the_number_of_candidates_with_the_threshold_or_refuses_both(dana, org):
    with pytest.raises(services.ServiceError, match="candidates"):
        services.organisation_threshold_confirm(organisation=org, threshold=0.5, max_candidates=0, acting_user=dana)
    org.refresh_from_db()
    assert (org.distance_threshold, org.max_candidates) == (0.6, 5)

    confirmed = services.organisation_threshold_confirm(
        organisation=org, threshold=0.5, max_candidates=10, acting_user=dana
    )

    assert (confirmed.distance_threshold, confirmed.max_candidates) == (0.5, 10)
    event = AuditEvent.objects.get(action="organisation.threshold_confirm")
    assert event.detail["threshold"] == [0.6, 0.5] and event.detail["max_candidates"] == [5, 10]


def test_the_threshold_in_use_is_the_one_last_confirmed_whatever_door_is_tried(client, dana, org, django_user_model):
    from portal.services import AccessError, organisation_update

    # Given a threshold dana confirmed at 0.55, with 5 candidates per face
    services.organisation_threshold_confirm(organisation=org, threshold=0.55, acting_user=dana)
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    change = {
        "name": org.name,
        "slug": org.slug,
        "distance_threshold": "0.9",
        "max_candidates": "50",
        "target_fmr": "0.001",
        "fpir_ceiling": "0.5",
        "audit_max_age_days": "180",
        "permitted_purpose": org.permitted_purpose,
        "legal_basis": org.legal_basis,
        "_save": "Save",
    }

    # When every other door is tried: the admin as org admin and as superuser, the policy form, the service
    for user in (dana, root):
        client.force_login(user)
        client.post(reverse("admin:portal_organisation_change", args=[org.pk]), change)
    client.force_login(dana)
    client.post(reverse("matching:organisation_settings"), change)
    try:
        organisation_update(organisation=org, acting_user=dana, distance_threshold=0.9, max_candidates=50)
    except AccessError:
        pass

    # Then what is in use is what was last confirmed, by whom and when it says
    org.refresh_from_db()
    last = AuditEvent.objects.filter(action="organisation.threshold_confirm").latest("id")
    assert (org.distance_threshold, org.max_candidates) == (last.detail["threshold"][1], 5) == (0.55, 5)
    assert org.threshold_confirmed_by == dana == last.actor
