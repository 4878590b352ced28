from __future__ import annotations

import numpy as np
import pytest

from matching.engine import detect_faces, engine_version, laplacian_variance
from matching.imaging import image_normalise, rgb_array


def _array(faces, name: str) -> np.ndarray:
    normalised = image_normalise(faces.read(name), max_bytes=50 * 2**20, max_pixels=100_000_000)
    return rgb_array(normalised.content)


def test_group_photo_face_counts_match_the_manifest(faces):
    # Given every group photo whose HOG count the manifest records (same policy: EXIF
    # orientation, longest side 1024 px, one upsample)
    rows = [r for r in faces.where(purpose="detection") if r["faces_found_hog"]]
    assert len(rows) >= 20

    # When the portal's engine runs on each
    found = {r["file"]: len(detect_faces(_array(faces, r["file"]), max_side=1024, upsample=1)) for r in rows}

    # Then it finds exactly what the manifest says
    expected = {r["file"]: int(r["faces_found_hog"]) for r in rows}
    assert found == expected


def test_each_face_carries_box_crop_encoding_and_quality(faces):
    detected = detect_faces(_array(faces, "face_recognition/multi__two_people.jpg"))

    assert len(detected) == 2
    for face in detected:
        assert face.encoding.shape == (128,)
        assert face.right > face.left and face.bottom > face.top
        assert face.crop_jpeg[:2] == b"\xff\xd8"
        assert face.width >= 40
        assert face.blur > 0


def test_a_blurred_face_scores_lower_sharpness():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (64, 64)).astype(np.float32)
    blurred = (sharp[:-1, :-1] + sharp[1:, :-1] + sharp[:-1, 1:] + sharp[1:, 1:]) / 4

    assert laplacian_variance(blurred) < laplacian_variance(sharp) / 4


def test_engine_version_names_both_libraries():
    assert engine_version().startswith("face_recognition 1.3.0; dlib ")


@pytest.mark.parametrize("max_side", [0, 512])
def test_boxes_are_in_full_size_coordinates_whatever_the_downscale(faces, max_side):
    array = _array(faces, "face_recognition/obama__tests_test_images_obama.jpg")
    (face,) = detect_faces(array, max_side=max_side)
    (reference,) = detect_faces(array, max_side=1024)

    # The same face, found at another scale, lands within a few pixels of the same place.
    tolerance = max(array.shape) / 100
    assert abs(face.top - reference.top) < 4 * tolerance
    assert abs(face.left - reference.left) < 4 * tolerance
