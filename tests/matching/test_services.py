from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from matching import services
from matching.imaging import ImageRejected
from matching.models import Candidate, Face, Photo, PhotoStatus, Search
from tests.conftest import BIDEN, OBAMA, OBAMA_2

NOT_ENROLLED = "lfw/Abdullah_Gul_0001.jpg"


@pytest.fixture
def obama_and_biden(enrol):
    return enrol("OBAMA", OBAMA, display_name="Barack Obama"), enrol("BIDEN", BIDEN, display_name="Joe Biden")


def test_another_obama_photo_finds_obama_first_and_not_biden(obama_and_biden, open_case):
    obama, biden = obama_and_biden

    case = open_case(OBAMA_2)

    candidates = list(case.candidates.order_by("rank"))
    assert candidates[0].subject == obama
    assert candidates[0].distance < 0.6
    assert biden not in [c.subject for c in candidates]


def test_a_person_not_enrolled_gets_no_candidate_and_that_is_stored(obama_and_biden, open_case):
    case = open_case(NOT_ENROLLED)

    # "No candidate" is a stored result: a search row with zero candidates.
    (search,) = Search.objects.filter(face__photo__case=case)
    assert search.candidate_count == 0
    assert search.gallery_faces == 2
    assert not case.candidates.exists()


def test_processing_twice_adds_no_duplicate_faces_or_candidates(obama_and_biden, open_case):
    case = open_case(OBAMA_2)
    photo = case.photos.get()
    before = (Face.objects.count(), Search.objects.count(), Candidate.objects.count())

    # When the task runs again, as after a redelivery, even with the claim reset
    Photo.objects.filter(pk=photo.pk).update(status=PhotoStatus.QUEUED)
    services.photo_process(photo_id=photo.pk)

    assert (Face.objects.count(), Search.objects.count(), Candidate.objects.count()) == before
    assert Photo.objects.get(pk=photo.pk).status == PhotoStatus.DONE


def test_a_photo_with_faces_but_no_search_is_searched_on_rerun(obama_and_biden, open_case):
    # Given a probe photo whose worker died after storing faces, before searching
    case = open_case(OBAMA_2)
    photo = case.photos.get()
    Search.objects.filter(face__photo=photo).delete()
    Photo.objects.filter(pk=photo.pk).update(status=PhotoStatus.QUEUED)

    services.photo_process(photo_id=photo.pk)

    assert Search.objects.filter(face__photo=photo).count() == 1
    assert case.candidates.count() == 1


def test_a_reference_photo_with_two_faces_fails_with_a_reason(enrol):
    subject = enrol("TWO", "face_recognition/multi__two_people.jpg")

    photo = subject.photos.get()
    assert photo.status == PhotoStatus.FAILED
    assert "2 faces were found" in photo.failure_reason
    assert not Face.objects.filter(subject=subject).exists()


def test_a_probe_photo_without_a_face_is_done_with_no_faces(obama_and_biden, open_case):
    case = open_case("compreface/017_0.jpg")

    photo = case.photos.get()
    assert photo.status == PhotoStatus.DONE
    assert photo.faces.count() == 0


def test_search_uses_the_organisation_threshold_and_limit(obama_and_biden, open_case, org):
    org.distance_threshold = 0.2
    org.save()

    case = open_case(OBAMA_2)

    search = Search.objects.get(face__photo__case=case)
    assert search.threshold == 0.2
    assert search.candidate_count == 0


def test_a_rejected_upload_is_refused_by_name_before_anything_is_stored(faces, media_root):
    # given: a case's photos as a caseworker sends them, the second one empty
    uploads = [faces.upload(OBAMA), SimpleUploadedFile("second.jpg", b"")]
    before = sorted(str(path) for path in Path(media_root).rglob("*"))

    # when: they are read, as every upload path reads them all before it stores anything
    with pytest.raises(ImageRejected) as refusal:
        [services.uploaded_image_read(upload) for upload in uploads]

    # then: the refusal names the file and says why, and nothing was written
    assert str(refusal.value) == "second.jpg: The file is empty."
    assert sorted(str(path) for path in Path(media_root).rglob("*")) == before


def test_a_photo_whose_processing_fails_leaves_other_photos_alone(obama_and_biden, open_case):
    case = open_case(OBAMA_2, "lfw/Abdullah_Gul_0002.jpg", process=False)
    first, second = case.photos.order_by("id")

    services.photo_fail(photo_id=first.pk, reason="The stored file is unreadable.")
    services.photo_process(photo_id=second.pk)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (PhotoStatus.FAILED, PhotoStatus.DONE)
    assert first.failure_reason == "The stored file is unreadable."


def test_a_cached_gallery_is_never_served_to_another_organisation_holding_the_same_id(dana, org, enrol):
    from datetime import timedelta

    from matching.models import Face
    from matching.services.searching import organisation_gallery
    from portal.models import Organisation

    # Given a worker that has cached an organisation's gallery of one face
    enrol("OBAMA-REF", OBAMA)
    org.refresh_from_db()
    assert organisation_gallery(org).size == 1

    # When the row is replaced by another organisation that SQLite gives the same id, at the same gallery version
    # (simulated: the faces go without a version bump, and the row's creation time is another's)
    Face.objects.filter(organisation=org).delete()
    Organisation.objects.filter(pk=org.pk).update(created_at=org.created_at + timedelta(days=1))
    org.refresh_from_db()

    # Then the cache does not hand it the old organisation's faces
    assert organisation_gallery(org).size == 0


def test_case_create_refuses_a_reference_outside_the_safe_characters(alice, faces):
    # Whatever the caller (the form, the API, a script): the service holds the rule too
    with pytest.raises(services.ServiceError, match="A reference may hold only letters"):
        services.case_create(
            organisation=alice.membership.organisation,
            acting_user=alice,
            reference="a/../../b.exe;",
            title="Missing child",
            purpose="Locate a missing child",
            photos=[services.uploaded_image_read(faces.upload(OBAMA))],
        )

    assert not Photo.objects.exists()
