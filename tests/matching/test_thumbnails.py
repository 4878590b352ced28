"""Thumbnails embedded in a page: the stored thumbnail, one log row per face shown, nothing for faces not shown."""

from __future__ import annotations

import base64
import io

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from matching.imaging import THUMBNAIL_SIDE
from matching.models import Face
from matching.thumbnails import face_thumbnails
from portal.models import AuditEvent
from tests.conftest import OBAMA, OBAMA_2


@pytest.fixture
def candidate(enrol, open_case):
    enrol("OBAMA-REF", OBAMA)
    return open_case(OBAMA_2).candidates.get()


def _decoded(data_uri: str) -> bytes:
    prefix = "data:image/jpeg;base64,"
    assert data_uri.startswith(prefix)
    return base64.b64decode(data_uri[len(prefix) :])


def _face_views() -> list[str]:
    return sorted(AuditEvent.objects.filter(action="media.face").values_list("target_id", flat=True))


def test_each_face_is_its_stored_thumbnail_and_each_view_is_logged_once(reviewers, candidate):
    # Given a reviewer and a candidate's two faces, detected by the worker
    bob, _ = reviewers
    probe, reference = candidate.search.face, candidate.reference_face

    # When the thumbnails are made for a page that shows the probe twice
    thumbnails = face_thumbnails(bob, [probe, reference, probe])

    # Then each is the thumbnail stored with the crop, at its shape, and the log holds one view per face, by bob
    for face in (probe, reference):
        with face.thumbnail.open("rb") as handle:
            assert _decoded(thumbnails[face.pk]) == handle.read()
        with face.crop.open("rb") as handle, Image.open(handle) as crop:
            crop_ratio = crop.width / crop.height
        with Image.open(io.BytesIO(_decoded(thumbnails[face.pk]))) as thumbnail:
            assert thumbnail.format == "JPEG" and max(thumbnail.size) == THUMBNAIL_SIDE
            assert thumbnail.width / thumbnail.height == pytest.approx(crop_ratio, rel=0.05)
    assert _face_views() == sorted([str(probe.pk), str(reference.pk)])
    assert set(AuditEvent.objects.filter(action="media.face").values_list("actor", flat=True)) == {bob.pk}


def test_a_face_without_a_stored_thumbnail_is_shrunk_from_its_crop(reviewers, candidate):
    # Given a face detected before thumbnails were stored, whose crop is a large photo
    bob, _ = reviewers
    face = candidate.reference_face
    face.thumbnail.delete(save=False)
    big = io.BytesIO()
    Image.effect_noise((1600, 1600), 60).convert("RGB").save(big, format="JPEG", quality=95)
    face.crop.storage.delete(face.crop.name)
    face.crop.save("big.jpg", ContentFile(big.getvalue()))

    # When its thumbnail is made
    thumbnail = _decoded(face_thumbnails(bob, [face])[face.pk])

    # Then it is a JPEG of the thumbnail's side
    with Image.open(io.BytesIO(thumbnail)) as image:
        assert image.format == "JPEG" and max(image.size) == THUMBNAIL_SIDE


def test_an_unreadable_or_missing_crop_shows_nothing_and_logs_nothing(reviewers, candidate):
    # Given one face whose thumbnail and crop files are corrupt, and another whose files are gone from storage
    bob, _ = reviewers
    probe, reference = candidate.search.face, candidate.reference_face
    for name in (probe.thumbnail.name, reference.thumbnail.name):
        probe.crop.storage.delete(name)
    probe.crop.storage.save(probe.thumbnail.name, ContentFile(b"not a jpeg"))
    probe.crop.storage.delete(probe.crop.name)
    probe.crop.storage.save(probe.crop.name, ContentFile(b"\xff\xd8 not a jpeg" * 5000))
    reference.crop.storage.delete(reference.crop.name)

    # When the thumbnails are made
    thumbnails = face_thumbnails(bob, [probe, reference])

    # Then neither is shown, and no view is recorded
    assert thumbnails == {probe.pk: None, reference.pk: None}
    assert _face_views() == []


def test_another_organisations_member_gets_no_thumbnail_and_no_view_is_logged(charlie, candidate):
    # Given a member of another organisation
    # When they ask for the candidate's faces
    thumbnails = face_thumbnails(charlie, [candidate.search.face, candidate.reference_face])

    # Then nothing is shown
    assert set(thumbnails.values()) == {None}
    assert _face_views() == []


@pytest.mark.parametrize("gone", ["subject erased", "photo purged"])
@pytest.mark.parametrize("given_as", ["faces read", "a queryset"])
def test_a_face_whose_subject_or_photo_is_gone_shows_no_thumbnail_even_if_its_own_row_was_left_live(
    reviewers, candidate, given_as, gone
):
    # Given a gallery face whose subject was erased, or whose photo was purged, while its own row was left live
    # (what a worker storing faces during an erasure or a purge used to leave behind)
    bob, _ = reviewers
    probe, reference = candidate.search.face, candidate.reference_face
    if gone == "subject erased":
        type(reference.subject).objects.filter(pk=reference.subject_id).update(erased_at=timezone.now())
    else:
        type(reference.photo).objects.filter(pk=reference.photo_id).update(purged_at=timezone.now())

    # When a page embeds the candidate's faces, read already or as a queryset (the queue's way)
    faces = [probe, reference] if given_as == "faces read" else Face.objects.filter(pk__in=[probe.pk, reference.pk])
    thumbnails = face_thumbnails(bob, faces)

    # Then the gone face is not shown, and only the probe's view is recorded
    assert thumbnails[reference.pk] is None and thumbnails[probe.pk] is not None
    assert _face_views() == [str(probe.pk)]
