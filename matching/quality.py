"""What the portal can measure of a probe face, shown beside the reviewer's analysis of its value.

Four figures, each with a plain verdict against the limits below (the README lists them):

- the distance between the eye centres, in pixels of the stored photo (face_recognition's 68 landmarks);
- sharpness: the variance of the Laplacian of the face box, stored when the face was detected (`Face.blur`);
- yaw (turned left or right) and roll (tilted), estimated from the landmarks.

No library that computes the ISO/IEC 29794-5 (OFIQ) measures can run here: python-ofiq (bindings to BSI's
OFIQ) and ofiqpy both install from PyPI, but both need OFIQ's 400-odd MB of model files, which are downloaded
from outside any package registry; the portal must run air-gapped. These are simple geometric and pixel
figures, not a quality score: the reviewer makes the call.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

# (good from, limited from): at or above the first it is "good", at or above the second "limited", else "poor".
# ISO/IEC 19794-5 asks at least 90 px between the eye centres of a full-frontal image; under 30 px the fine
# detail a morphological comparison rests on (marks, the shape of the ears and the nostrils) is gone.
EYE_DISTANCE_PX = (90.0, 30.0)
# Variance of the Laplacian of the face box (8-bit grey). The shared test photos measure from about 25 (small,
# soft JPEGs) to 3,000 as taken; a Gaussian blur of 2 px brings every one of them under 12.
SHARPNESS = (60.0, 15.0)
# Degrees from frontal, at most: the first is "good", the second "limited", beyond it "poor". A frontal
# comparison of a face turned past 30 degrees compares one side of the face with both.
YAW_DEGREES = (15.0, 30.0)
ROLL_DEGREES = (10.0, 25.0)

VERDICTS = {"good": "Good", "limited": "Limited", "poor": "Poor", "unknown": "Not measured"}


@dataclass(frozen=True)
class Measure:
    name: str
    value: float | None
    unit: str
    verdict: str  # good / limited / poor / unknown
    limit: str  # the documented limit, in words

    @property
    def verdict_label(self) -> str:
        return VERDICTS[self.verdict]

    @property
    def value_text(self) -> str:
        if self.value is None:
            return "—"
        return f"{self.value:.0f}{self.unit}"


@dataclass(frozen=True)
class FaceQuality:
    eye_distance: Measure
    sharpness: Measure
    yaw: Measure
    roll: Measure
    landmarks_found: bool

    @property
    def measures(self) -> list[Measure]:
        return [self.eye_distance, self.sharpness, self.yaw, self.roll]

    def as_dict(self) -> dict[str, Any]:
        """For storing with the analysis, as it was shown."""
        return {m.name: {**asdict(m)} for m in self.measures} | {"landmarks_found": self.landmarks_found}


def _at_least(value: float | None, limits: tuple[float, float]) -> str:
    if value is None:
        return "unknown"
    good, limited = limits
    return "good" if value >= good else "limited" if value >= limited else "poor"


def _at_most(value: float | None, limits: tuple[float, float]) -> str:
    if value is None:
        return "unknown"
    good, limited = limits
    return "good" if abs(value) <= good else "limited" if abs(value) <= limited else "poor"


def _centre(points: list[tuple[float, float]]) -> tuple[float, float]:
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


@dataclass(frozen=True)
class Pose:
    eye_distance: float
    yaw: float
    roll: float


def pose_from_landmarks(landmarks: dict[str, list[tuple[float, float]]]) -> Pose | None:
    """Eye distance, yaw and roll from face_recognition's 68-point landmarks (in one image's pixels).

    Roll is the angle of the line through the eye centres. Yaw comes from where the nose tip sits between the
    two ends of the jaw line, once the roll is undone: on a frontal face it is half way; a face turned by θ
    moves it to (1 + sin θ) / 2 of the way, taking the head for a cylinder. Signs: positive yaw means the
    nose is nearer the image's right edge, positive roll that the eye on the image's right is lower.
    """
    needed = ("left_eye", "right_eye", "chin", "nose_tip")
    if not all(landmarks.get(part) for part in needed) or len(landmarks["chin"]) < 17:
        return None
    first, second = sorted([_centre(landmarks["left_eye"]), _centre(landmarks["right_eye"])])
    dx, dy = second[0] - first[0], second[1] - first[1]
    eye_distance = math.hypot(dx, dy)
    if eye_distance == 0:
        return None
    roll = math.atan2(dy, dx)
    cos, sin = math.cos(-roll), math.sin(-roll)

    def level(point: tuple[float, float]) -> float:
        return point[0] * cos - point[1] * sin

    jaw_left, jaw_right = sorted([level(landmarks["chin"][0]), level(landmarks["chin"][16])])
    nose = level(_centre(landmarks["nose_tip"]))
    span = jaw_right - jaw_left
    if span <= 0:
        return None
    share = min(1.0, max(0.0, (nose - jaw_left) / span))
    yaw = math.degrees(math.asin(2 * share - 1))
    return Pose(eye_distance=eye_distance, yaw=yaw, roll=math.degrees(roll))


def landmarks_in(image, box: tuple[int, int, int, int]) -> dict[str, list[tuple[float, float]]] | None:
    """The 68 landmarks of the face in `box` (top, right, bottom, left) of `image` (PIL RGB), in its pixels."""
    import face_recognition
    import numpy as np

    top, right, bottom, left = box
    # On a region around the box only, as matching.alignment does: the whole photo costs several times as much.
    pad = max(right - left, bottom - top)
    region = (max(0, left - pad), max(0, top - pad), min(image.width, right + pad), min(image.height, bottom + pad))
    array = np.asarray(image.crop(region))
    location = (top - region[1], right - region[0], bottom - region[1], left - region[0])
    found = face_recognition.face_landmarks(array, face_locations=[location])
    if not found:
        return None
    return {part: [(x + region[0], y + region[1]) for x, y in points] for part, points in found[0].items()}


def face_quality(*, image, box: tuple[int, int, int, int], sharpness: float | None) -> FaceQuality:
    """The measures of one face of a photo (a PIL RGB image), with their verdicts."""
    landmarks = landmarks_in(image, box)
    pose = pose_from_landmarks(landmarks) if landmarks else None
    eye = pose.eye_distance if pose else None
    yaw = pose.yaw if pose else None
    roll = pose.roll if pose else None
    return FaceQuality(
        eye_distance=Measure(
            "eye_distance",
            eye,
            " px",
            _at_least(eye, EYE_DISTANCE_PX),
            f"good from {EYE_DISTANCE_PX[0]:.0f} px (ISO/IEC 19794-5's full-frontal minimum), "
            f"poor under {EYE_DISTANCE_PX[1]:.0f} px",
        ),
        sharpness=Measure(
            "sharpness",
            sharpness,
            "",
            _at_least(sharpness, SHARPNESS),
            f"good from {SHARPNESS[0]:.0f}, poor under {SHARPNESS[1]:.0f} (variance of the Laplacian)",
        ),
        yaw=Measure(
            "yaw",
            yaw,
            "°",
            _at_most(yaw, YAW_DEGREES),
            f"good within ±{YAW_DEGREES[0]:.0f}°, poor beyond ±{YAW_DEGREES[1]:.0f}° (turned left or right)",
        ),
        roll=Measure(
            "roll",
            roll,
            "°",
            _at_most(roll, ROLL_DEGREES),
            f"good within ±{ROLL_DEGREES[0]:.0f}°, poor beyond ±{ROLL_DEGREES[1]:.0f}° (head tilted)",
        ),
        landmarks_found=landmarks is not None,
    )


def face_quality_of(face) -> FaceQuality:
    """The measures of a stored face, read from its photo; every figure "not measured" when the photo is gone.

    The landmarks cost about 20 ms a face and the analysis page shows them on every load, so each process keeps
    the measures of the last faces it read, keyed by the file (its path, size and modification time) and the face
    box: a file replaced under the same name is measured again. The purge is checked before the memo is."""
    photo = face.photo
    if not photo.image or photo.purged_at is not None:
        return _unmeasured(face.blur)
    box = (face.top, face.right, face.bottom, face.left)
    try:
        path = photo.image.path
    except NotImplementedError:  # a storage without local paths (a bucket): measured on every read
        path = None
    try:
        if path is None:
            return _measure(photo.image.open("rb"), box, face.blur)
        stat = os.stat(path)
        return _measured(path, stat.st_size, stat.st_mtime_ns, box, face.blur)
    except FileNotFoundError:  # gone from the storage, or purged while being read
        return _unmeasured(face.blur)


@functools.lru_cache(maxsize=1024)
def _measured(path: str, size: int, mtime_ns: int, box: tuple[int, ...], sharpness: float | None) -> FaceQuality:
    # lru_cache keeps no exception: a file missing now is looked for again next time.
    return _measure(open(path, "rb"), box, sharpness)


def _measure(handle, box: tuple[int, ...], sharpness: float | None) -> FaceQuality:
    from PIL import Image

    with handle, Image.open(handle) as source:
        image = source.convert("RGB")
    return face_quality(image=image, box=box, sharpness=sharpness)


def _unmeasured(sharpness: float | None) -> FaceQuality:
    def measure(name: str, unit: str) -> Measure:
        return Measure(name, None, unit, "unknown", "the photo is no longer stored")

    return FaceQuality(
        eye_distance=measure("eye_distance", " px"),
        sharpness=Measure("sharpness", sharpness, "", _at_least(sharpness, SHARPNESS), "variance of the Laplacian"),
        yaw=measure("yaw", "°"),
        roll=measure("roll", "°"),
        landmarks_found=False,
    )
