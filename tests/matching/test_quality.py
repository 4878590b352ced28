"""The measures of a stored probe face: read from its photo once per process, and never from a purged photo."""

from __future__ import annotations

import io
import shutil
from types import SimpleNamespace

from django.utils import timezone

from matching.models import Face, Photo
from matching.quality import _measured, face_quality_of
from tests.conftest import OBAMA, OBAMA_2


def _probe_face(open_case) -> Face:
    return Face.objects.select_related("photo").get(photo__case=open_case(OBAMA_2))


def test_a_faces_measures_are_read_from_its_photo_once(open_case):
    # Given a real probe face, measured once
    face = _probe_face(open_case)
    first = face_quality_of(face)
    assert first.landmarks_found and first.eye_distance.value > 0

    # When the page asks again
    misses = _measured.cache_info().misses
    again = face_quality_of(Face.objects.select_related("photo").get(pk=face.pk))

    # Then the same measures come without reading the photo
    assert again == first
    assert _measured.cache_info().misses == misses


def test_a_photo_replaced_under_its_name_is_measured_again(open_case, faces):
    # Given a face measured from its photo
    face = _probe_face(open_case)
    first = face_quality_of(face)

    # When another image is written under the same file name
    shutil.copyfile(faces.path(OBAMA), face.photo.image.path)

    # Then it is measured from the new file
    misses = _measured.cache_info().misses
    again = face_quality_of(face)
    assert _measured.cache_info().misses == misses + 1
    assert again.eye_distance.value != first.eye_distance.value


def test_a_purged_photo_reads_not_measured_though_its_measures_were_kept(open_case):
    # Given a face whose measures this process has kept
    face = _probe_face(open_case)
    assert face_quality_of(face).landmarks_found

    # When its photo is purged
    Photo.objects.filter(pk=face.photo_id).update(purged_at=timezone.now())
    face = Face.objects.select_related("photo").get(pk=face.pk)

    # Then nothing is measured, save the sharpness stored at detection
    quality = face_quality_of(face)
    assert not quality.landmarks_found
    assert quality.eye_distance.value is None and quality.yaw.value is None
    assert quality.sharpness.value == face.blur


def test_a_photo_whose_file_is_gone_reads_not_measured(open_case):
    # Given a face whose photo file has been removed from the disk
    face = _probe_face(open_case)
    face.photo.image.storage.delete(face.photo.image.name)

    # Then it reads "not measured" rather than failing the page
    quality = face_quality_of(face)
    assert not quality.landmarks_found and quality.eye_distance.value is None


class _BucketFile:
    """A stored file in a storage without local paths: `path` is not implemented, as for a bucket."""

    def __init__(self, content: bytes | None) -> None:
        self.content = content

    def __bool__(self) -> bool:
        return True

    @property
    def path(self) -> str:
        raise NotImplementedError("This backend doesn't support absolute paths.")

    def open(self, mode: str = "rb"):
        if self.content is None:
            raise FileNotFoundError("gone from the bucket")
        return io.BytesIO(self.content)


def test_a_photo_in_a_bucket_is_measured_and_one_gone_from_it_reads_not_measured(open_case):
    # Given a real face whose photo is read from a storage without local paths
    face = _probe_face(open_case)
    on_disk = face_quality_of(face)
    content = face.photo.image.read()

    def in_bucket(content):
        photo = SimpleNamespace(image=_BucketFile(content), purged_at=None)
        return SimpleNamespace(
            photo=photo, top=face.top, right=face.right, bottom=face.bottom, left=face.left, blur=face.blur
        )

    # Then it is measured as from the disk, and a photo gone from the bucket reads "not measured"
    assert face_quality_of(in_bucket(content)) == on_disk
    gone = face_quality_of(in_bucket(None))
    assert not gone.landmarks_found and gone.eye_distance.value is None
