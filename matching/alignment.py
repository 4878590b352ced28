"""Face crops aligned to fixed eye positions, so that a reviewer compares two faces at the same scale and tilt.

Made once, when the face is detected, and stored beside the crop (`Face.aligned`): erasure and the purge delete
it with the crop. Faces detected before it was stored are aligned at request time from the photo, as before.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

# The aligned image, and where the eyes land in it (the eye on the image's left first).
WIDTH = 480
HEIGHT = 576
LEFT_EYE = (0.38 * WIDTH, 0.40 * HEIGHT)
RIGHT_EYE = (0.62 * WIDTH, 0.40 * HEIGHT)


@dataclass(frozen=True)
class Eyes:
    left: tuple[float, float]
    right: tuple[float, float]
    # False when no landmarks were found and the eyes are guessed from the face box.
    found: bool


def _centre(points: list[tuple[int, int]]) -> tuple[float, float]:
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


def eyes_in(image, box: tuple[int, int, int, int]) -> Eyes:
    """The eye centres in `image` (a PIL RGB image) for the face in `box` (top, right, bottom, left)."""
    import face_recognition
    import numpy as np

    top, right, bottom, left = box
    # Landmarks on a region around the box only: a full-resolution photo costs several times as much.
    pad = max(right - left, bottom - top)
    region = (max(0, left - pad), max(0, top - pad), min(image.width, right + pad), min(image.height, bottom + pad))
    array = np.asarray(image.crop(region))
    location = (top - region[1], right - region[0], bottom - region[1], left - region[0])
    landmarks = face_recognition.face_landmarks(array, face_locations=[location])
    if landmarks and landmarks[0].get("left_eye") and landmarks[0].get("right_eye"):
        first = _centre(landmarks[0]["left_eye"])
        second = _centre(landmarks[0]["right_eye"])
        first, second = sorted([first, second])
        shift = (region[0], region[1])
        return Eyes(
            left=(first[0] + shift[0], first[1] + shift[1]),
            right=(second[0] + shift[0], second[1] + shift[1]),
            found=True,
        )
    width, height = right - left, bottom - top
    return Eyes(
        left=(left + 0.3 * width, top + 0.38 * height),
        right=(left + 0.7 * width, top + 0.38 * height),
        found=False,
    )


def similarity_coefficients(eyes: Eyes) -> tuple[float, float, float, float, float, float]:
    """Pillow's AFFINE data: for each output pixel, where to read in the photo (a rotation, scale and shift)."""
    dx_in, dy_in = eyes.right[0] - eyes.left[0], eyes.right[1] - eyes.left[1]
    dx_out = RIGHT_EYE[0] - LEFT_EYE[0]
    scale = math.hypot(dx_in, dy_in) / dx_out
    angle = math.atan2(dy_in, dx_in)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    ox, oy = LEFT_EYE
    ix, iy = eyes.left
    return (cos, -sin, ix - cos * ox + sin * oy, sin, cos, iy - sin * ox - cos * oy)


def aligned_face_from_image(image, box: tuple[int, int, int, int]) -> bytes:
    """The face in `box` of `image` (a PIL RGB image), turned and scaled so that its eyes sit on LEFT_EYE and
    RIGHT_EYE of a WIDTH × HEIGHT JPEG."""
    from PIL import Image

    eyes = eyes_in(image, box)
    aligned = image.transform(
        (WIDTH, HEIGHT),
        Image.Transform.AFFINE,
        similarity_coefficients(eyes),
        resample=Image.Resampling.BICUBIC,
        fillcolor=(40, 40, 40),
    )
    out = io.BytesIO()
    aligned.save(out, format="JPEG", quality=90)
    return out.getvalue()


def aligned_face_jpeg(image_file, box: tuple[int, int, int, int]) -> bytes:
    """As `aligned_face_from_image`, from a stored photo's file."""
    from PIL import Image

    with Image.open(image_file) as source:
        image = source.convert("RGB")
    return aligned_face_from_image(image, box)
