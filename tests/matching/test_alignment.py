from __future__ import annotations

import io

import face_recognition
import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from matching import alignment
from portal.models import AuditEvent
from tests.conftest import OBAMA, OBAMA_2


def _eyes_of(jpeg: bytes) -> tuple[tuple[float, float], tuple[float, float]]:
    array = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    landmarks = face_recognition.face_landmarks(array)
    assert landmarks, "no face in the aligned image"
    centres = sorted(tuple(np.mean(landmarks[0][eye], axis=0)) for eye in ("left_eye", "right_eye"))
    return centres[0], centres[1]


@pytest.mark.parametrize("name", [OBAMA, OBAMA_2])
def test_the_eyes_land_on_the_fixed_positions(faces, name):
    # Given a real photo and the face box the engine found in it
    image = Image.open(faces.path(name)).convert("RGB")
    top, right, bottom, left = face_recognition.face_locations(np.asarray(image))[0]

    # When it is aligned
    jpeg = alignment.aligned_face_jpeg(faces.path(name), (top, right, bottom, left))

    # Then the eyes found in the result sit within a few pixels of the fixed positions
    assert Image.open(io.BytesIO(jpeg)).size == (alignment.WIDTH, alignment.HEIGHT)
    found_left, found_right = _eyes_of(jpeg)
    for found, wanted in [(found_left, alignment.LEFT_EYE), (found_right, alignment.RIGHT_EYE)]:
        assert abs(found[0] - wanted[0]) <= 4 and abs(found[1] - wanted[1]) <= 4, (found, wanted)


def test_a_box_without_landmarks_falls_back_to_the_box_itself():
    # A flat grey image has no eyes: the eyes are placed from the box, and nothing fails
    image = io.BytesIO()
    Image.new("RGB", (300, 300), (128, 128, 128)).save(image, format="JPEG")
    image.seek(0)

    jpeg = alignment.aligned_face_jpeg(image, (50, 250, 250, 50))

    assert Image.open(io.BytesIO(jpeg)).size == (alignment.WIDTH, alignment.HEIGHT)


@pytest.fixture
def candidate(enrol, open_case):
    enrol("OBAMA-REF", OBAMA)
    return open_case(OBAMA_2).candidates.get()


def aligned_url(face_id: int) -> str:
    return reverse("matching:face_aligned", args=[face_id])


def test_a_reviewer_gets_both_aligned_faces_and_each_view_is_logged(client, reviewers, candidate):
    client.force_login(reviewers[0])

    responses = [client.get(aligned_url(f)) for f in (candidate.search.face_id, candidate.reference_face_id)]

    assert [r.status_code for r in responses] == [200, 200]
    assert all(r["Content-Type"] == "image/jpeg" and r["Cache-Control"] == "private, no-store" for r in responses)
    assert AuditEvent.objects.filter(action="media.face", actor=reviewers[0]).count() == 2


def test_another_organisation_gets_404_for_an_aligned_face(client, charlie, candidate):
    client.force_login(charlie)

    assert client.get(aligned_url(candidate.search.face_id)).status_code == 404
    assert client.get(aligned_url(candidate.reference_face_id)).status_code == 404
    assert not AuditEvent.objects.filter(action="media.face", actor=charlie).exists()


def test_the_caseworker_gets_404_for_the_gallery_face_before_confirmation(client, alice, candidate):
    client.force_login(alice)

    assert client.get(aligned_url(candidate.reference_face_id)).status_code == 404
    # her own probe face she may see
    assert client.get(aligned_url(candidate.search.face_id)).status_code == 200


def test_an_erased_photo_gives_410_for_its_aligned_face(client, reviewers, candidate):
    from django.utils import timezone

    photo = candidate.reference_face.photo
    photo.image.delete(save=False)
    photo.purged_at = timezone.now()
    photo.save(update_fields=["image", "purged_at"])
    client.force_login(reviewers[0])

    assert client.get(aligned_url(candidate.reference_face_id)).status_code == 410


def test_detection_stores_each_faces_aligned_image_and_the_page_serves_it(client, reviewers, candidate):
    # Given a candidate whose two faces were detected by the worker
    probe, reference = candidate.search.face, candidate.reference_face
    client.force_login(reviewers[0])

    for face in (probe, reference):
        # Then each face has its aligned image stored beside the crop, with the eyes on the fixed positions
        assert face.aligned and face.thumbnail
        with face.aligned.open("rb") as handle:
            stored = handle.read()
        found_left, found_right = _eyes_of(stored)
        assert abs(found_left[0] - alignment.LEFT_EYE[0]) <= 4 and abs(found_right[0] - alignment.RIGHT_EYE[0]) <= 4

        # And the comparison page's image is that file, not one made again from the photo
        response = client.get(aligned_url(face.pk))
        assert response.status_code == 200 and b"".join(response.streaming_content) == stored


def test_a_face_detected_before_aligned_images_were_stored_is_aligned_from_its_photo(client, reviewers, candidate):
    # Given a face with no stored aligned image, as faces detected by an earlier version have
    face = candidate.reference_face
    face.aligned.delete(save=False)
    face.save(update_fields=["aligned"])
    client.force_login(reviewers[0])

    # When the reviewer asks for it
    response = client.get(aligned_url(face.pk))

    # Then it is made from the photo, with the eyes in place
    assert response.status_code == 200
    found_left, _ = _eyes_of(response.content)
    assert abs(found_left[0] - alignment.LEFT_EYE[0]) <= 4


def test_the_backfill_makes_the_images_of_older_faces_once_and_skips_erased_ones(dana, candidate):
    from django.core.management import call_command

    from matching.models import Face
    from matching.services import subject_erase

    # Given two faces detected before aligned images were stored, one of whose subjects is then erased
    probe, reference = candidate.search.face, candidate.reference_face
    for face in (probe, reference):
        face.aligned.delete(save=False)
        face.thumbnail.delete(save=False)
        face.save(update_fields=["aligned", "thumbnail"])
    subject_erase(subject=candidate.subject, acting_user=dana)

    # When the backfill runs, twice
    out = io.StringIO()
    call_command("faces_review_images", stdout=out)
    call_command("faces_review_images", stdout=out)

    # Then the probe face has both images (the eyes in place), once; the erased face has none
    probe.refresh_from_db()
    with probe.aligned.open("rb") as handle:
        found_left, _ = _eyes_of(handle.read())
    assert abs(found_left[0] - alignment.LEFT_EYE[0]) <= 4 and probe.thumbnail
    assert out.getvalue().splitlines() == [
        "Made the aligned image and thumbnail of 1 face(s).",
        "Made the aligned image and thumbnail of 0 face(s).",
    ]
    erased = Face.objects.get(pk=reference.pk)
    assert not erased.aligned and not erased.thumbnail


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_the_backfill_refuses_a_limit_that_is_not_a_positive_count_and_makes_nothing(candidate, limit):
    from django.core.management import CommandError, call_command

    # Given a face with no stored aligned image
    face = candidate.reference_face
    face.aligned.delete(save=False)
    face.save(update_fields=["aligned"])

    # When the backfill is asked for a limit of none, fewer than none, or a word
    # Then it refuses with a message that says what it takes, and the face is as it was
    with pytest.raises(CommandError, match="limit"):
        call_command("faces_review_images", "--limit", limit)
    face.refresh_from_db()
    assert not face.aligned
