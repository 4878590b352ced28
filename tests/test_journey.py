"""The whole journey, with a real `celery worker` process on a real Redis broker."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.urls import reverse

from matching.models import Candidate, Gallery, Outcome, Photo, PhotoStatus
from tests.conftest import BIDEN, OBAMA, OBAMA_2, admin_review, review_post, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def photos_finished(**filters):
    photos = list(Photo.objects.filter(**filters))
    return photos and all(p.is_finished for p in photos)


def test_upload_worker_review_and_confirmed_result(client, celery_worker_process, alice, reviewers, dana, faces):
    bob, rita = reviewers
    # Given a gallery enrolled through the org admin's page, processed by the worker
    client.force_login(dana)
    client.post(reverse("matching:gallery_list"), {"name": "Missing persons register"})
    gallery_url = reverse("matching:gallery_detail", args=[Gallery.objects.get().pk])
    for code, name in [("OBAMA-REF", OBAMA), ("BIDEN-REF", BIDEN)]:
        response = client.post(
            gallery_url,
            {"subject-code": code, "subject-display_name": code.title(), "subject-photos": [faces.upload(name)]},
        )
        assert response.status_code == 302
    wait_for(lambda: photos_finished(kind="reference"), message="reference photos")
    assert set(Photo.objects.values_list("status", flat=True)) == {PhotoStatus.DONE}

    # When alice uploads a case, the page returns before any processing
    client.force_login(alice)
    response = client.post(
        reverse("matching:case_create"),
        {
            "reference": "J-1",
            "title": "Journey",
            "purpose": "Locate a missing child",
            "photos": [faces.upload(OBAMA_2)],
        },
    )
    assert response.status_code == 302
    case_url = response.url

    # Then the worker detects, encodes and searches, leaving a pending candidate
    wait_for(lambda: photos_finished(kind="probe"), message="probe photo")
    candidate = Candidate.objects.select_related("subject").get()
    assert (candidate.subject.code, candidate.outcome, candidate.rank) == ("OBAMA-REF", Outcome.PENDING, 1)
    assert "OBAMA-REF" not in client.get(case_url).content.decode()

    # When bob and rita each confirm it through the admin form, independently
    for reviewer, reason in [(bob, "Ears, nose and jaw line agree."), (rita, "Hairline and eyebrows agree.")]:
        client.force_login(reviewer)
        # the probe's analysis and the blind comparison first, then the decision (the default policy)
        response = admin_review(client, candidate, review_post(reason=reason))
        assert response.status_code == 302

    # Then alice's case page shows the confirmed match with its reviewer and reason
    client.force_login(alice)
    page = client.get(case_url).content.decode()
    assert "OBAMA-REF" in page and "Ears, nose and jaw line agree." in page and "rita" in page


def test_a_photo_without_a_readable_file_fails_and_the_others_finish(celery_worker_process, open_case):
    # Given a case with two photos, one of whose stored file is lost before the worker sees it
    with transaction.atomic():
        case = open_case(OBAMA_2, BIDEN, reference="J-2", process=False)
        broken, good = case.photos.order_by("id")
        broken.image.storage.delete(broken.image.name)

    wait_for(lambda: photos_finished(case=case), message="both photos")

    broken.refresh_from_db()
    good.refresh_from_db()
    assert (broken.status, broken.failure_reason) == (
        PhotoStatus.FAILED,
        "The stored photo file is missing; upload the photo again.",
    )
    assert good.status == PhotoStatus.DONE
