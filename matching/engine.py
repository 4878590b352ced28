"""The face engine: detection, encoding and quality figures, with face_recognition.

This is the one module that calls face_recognition. The same function serves
the Celery task and the ingestion benchmark, so the benchmark measures what
production runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import version

import numpy as np
from PIL import Image

from matching.alignment import aligned_face_from_image
from matching.imaging import downscale, jpeg_bytes, thumbnail_jpeg

ENGINE_NAME = "face_recognition"


@cache
def engine_version() -> str:
    # face_recognition's own __version__ lags its release, so ask the installed package.
    import dlib

    return f"face_recognition {version('face_recognition')}; dlib {dlib.__version__}"


@dataclass(frozen=True)
class DetectedFace:
    top: int
    right: int
    bottom: int
    left: int
    encoding: np.ndarray
    crop_jpeg: bytes
    blur: float
    # Made only when asked for (review_images=True): what a reviewer is shown, beside the crop.
    aligned_jpeg: bytes = b""
    thumbnail_jpeg: bytes = b""

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: the usual quick sharpness figure."""
    g = grey.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def _crop(array: np.ndarray, top: int, right: int, bottom: int, left: int, margin: float) -> np.ndarray:
    height, width = array.shape[:2]
    pad_y = int((bottom - top) * margin)
    pad_x = int((right - left) * margin)
    return array[max(0, top - pad_y) : min(height, bottom + pad_y), max(0, left - pad_x) : min(width, right + pad_x)]


def detect_faces(
    array: np.ndarray,
    *,
    model: str = "hog",
    upsample: int = 1,
    max_side: int = 1024,
    crop_margin: float = 0.25,
    review_images: bool = False,
) -> list[DetectedFace]:
    """Find, encode and measure every face in an RGB array.

    Detection and encoding run on a copy downscaled to `max_side`; the boxes
    are mapped back to the full array, and the crops are cut from it. With
    `review_images`, each face also gets its eye-aligned image and thumbnail,
    so that no page has to make them from the photo again.
    """
    import face_recognition

    small, _ = downscale(array, max_side)
    sy = array.shape[0] / small.shape[0]
    sx = array.shape[1] / small.shape[1]
    locations = face_recognition.face_locations(small, number_of_times_to_upsample=upsample, model=model)
    if not locations:
        return []
    encodings = face_recognition.face_encodings(small, known_face_locations=locations)
    faces = []
    whole = Image.fromarray(array) if review_images else None
    for (top, right, bottom, left), encoding in zip(locations, encodings, strict=True):
        box = (
            max(0, round(top * sy)),
            min(array.shape[1], round(right * sx)),
            min(array.shape[0], round(bottom * sy)),
            max(0, round(left * sx)),
        )
        crop = _crop(array, *box, margin=crop_margin)
        inner = array[box[0] : box[2], box[3] : box[1]]
        grey = inner.mean(axis=2) if inner.size else np.zeros((1, 1))
        crop_jpeg = jpeg_bytes(np.ascontiguousarray(crop))
        views = {}
        if whole is not None:
            views = {
                "aligned_jpeg": aligned_face_from_image(whole, box),
                "thumbnail_jpeg": thumbnail_jpeg(Image.fromarray(np.ascontiguousarray(crop))),
            }
        faces.append(
            DetectedFace(
                top=box[0],
                right=box[1],
                bottom=box[2],
                left=box[3],
                encoding=np.asarray(encoding, dtype=np.float64),
                crop_jpeg=crop_jpeg,
                blur=laplacian_variance(grey),
                **views,
            )
        )
    return faces
