"""Ingestion benchmark: the portal's detection pipeline against the bare face_recognition loop.

The portal pipeline is what the Celery task runs for one photo, minus the
broker and the database: image_normalise, rgb_array, detect_faces. The
baseline is the three-line face_recognition loop at full size. Both run in
the same process on the same photos, interleaved photo by photo, so that
load from other users of the machine falls on every variant alike.

    .venv/bin/python bench/ingest.py                      # group photos + 40 identity photos
    .venv/bin/python bench/ingest.py --set all --sides 1024
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import platform
import random
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
LARGE_SIDE = 1024  # the portal's default policy: photos above it are the only ones a downscale changes


def django_setup() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # face_recognition_models still imports pkg_resources; the warning says nothing about speed.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import django

    django.setup()


@dataclass(frozen=True)
class Photo:
    file: str
    path: Path
    purpose: str
    expected: int | None
    hog: int | None
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def size_class(self) -> str:
        return "large" if max(self.width, self.height) > LARGE_SIDE else "small"


@dataclass
class Variant:
    name: str
    max_side: int | None  # None is the bare face_recognition loop
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    seconds_by_class: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    found: dict[str, int] = field(default_factory=dict)
    per_photo: dict[str, float] = field(default_factory=dict)

    @property
    def faces(self) -> int:
        return sum(self.found.values())


class StageClock:
    """Adds the time spent inside wrapped functions to whichever variant is running.

    detect_faces is timed from outside by wrapping the names it looks up at
    call time, so the benchmark runs the module's code unchanged.
    """

    def __init__(self) -> None:
        self.target: dict[str, float] | None = None

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if self.target is not None:
                    self.target[stage] += time.perf_counter() - start

        return timed

    def install(self) -> None:
        import face_recognition

        import matching.engine as engine

        engine.downscale = self.wrap("downscale", engine.downscale)
        engine.jpeg_bytes = self.wrap("crop jpeg", engine.jpeg_bytes)
        engine.laplacian_variance = self.wrap("blur", engine.laplacian_variance)
        face_recognition.face_locations = self.wrap("locate", face_recognition.face_locations)
        face_recognition.face_encodings = self.wrap("encode", face_recognition.face_encodings)


def optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def manifest_read(faces_dir: Path) -> list[dict[str, str]]:
    with (faces_dir / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def identity_sample(rows: list[dict[str, str]], limit: int, seed: int) -> list[dict[str, str]]:
    """One photo from every source folder, the rest at random.

    A plain random sample is nearly all 200-240 px LFW and UTKFace crops;
    the few multi-megapixel camera photos are where a size policy matters.
    """
    if limit <= 0 or limit >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    by_folder: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_folder[row["file"].split("/", 1)[0]].append(row)
    chosen: list[dict[str, str]] = []
    if limit >= len(by_folder):
        chosen = [rng.choice(group) for _, group in sorted(by_folder.items())]
    taken = {row["file"] for row in chosen}
    rest = [row for row in rows if row["file"] not in taken]
    chosen += rng.sample(rest, limit - len(chosen))
    return chosen


def photos_select(faces_dir: Path, which: str, limit: int, seed: int) -> list[Photo]:
    rows = manifest_read(faces_dir)
    detection = [r for r in rows if r["purpose"] == "detection"]
    identity = [r for r in rows if r["purpose"] == "identity"]
    if which == "detection":
        picked = detection
    elif which == "identity":
        picked = identity_sample(identity, limit, seed)
    elif which == "all":
        picked = rows
    else:
        picked = detection + identity_sample(identity, limit, seed)
    photos = []
    for row in sorted(picked, key=lambda r: r["file"]):
        path = faces_dir / row["file"]
        with Image.open(path) as image:
            width, height = image.size
        photos.append(
            Photo(
                file=row["file"],
                path=path,
                purpose=row["purpose"],
                expected=optional_int(row["expected_faces"]),
                hog=optional_int(row["faces_found_hog"]),
                width=width,
                height=height,
            )
        )
    return photos


def bare_run(photo: Photo, stages: dict[str, float]) -> int:
    import face_recognition

    start = time.perf_counter()
    image = face_recognition.load_image_file(photo.path)
    stages["load"] += time.perf_counter() - start
    locations = face_recognition.face_locations(image, number_of_times_to_upsample=1)
    encodings = face_recognition.face_encodings(image, known_face_locations=locations)
    return len(encodings)


def portal_run(photo: Photo, max_side: int, stages: dict[str, float]) -> int:
    from django.conf import settings

    from matching.engine import detect_faces
    from matching.imaging import image_normalise, rgb_array

    start = time.perf_counter()
    data = photo.path.read_bytes()
    read = time.perf_counter()
    normalised = image_normalise(data, max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.UPLOAD_MAX_PIXELS)
    normalise = time.perf_counter()
    array = rgb_array(normalised.content)
    decode = time.perf_counter()
    stages["read"] += read - start
    stages["normalise"] += normalise - read
    stages["decode"] += decode - normalise
    faces = detect_faces(array, model="hog", upsample=1, max_side=max_side, crop_margin=0.25)
    return len(faces)


def variant_run(variant: Variant, photo: Photo, clock: StageClock) -> None:
    clock.target = variant.stages
    cpu = time.process_time()
    start = time.perf_counter()
    if variant.max_side is None:
        found = bare_run(photo, variant.stages)
    else:
        found = portal_run(photo, variant.max_side, variant.stages)
    elapsed = time.perf_counter() - start
    variant.cpu_seconds += time.process_time() - cpu
    clock.target = None
    variant.seconds += elapsed
    variant.seconds_by_class[photo.size_class] += elapsed
    variant.found[photo.file] = found
    variant.per_photo[photo.file] = elapsed


def recall(variant: Variant, photos: list[Photo]) -> tuple[float, int]:
    # Count-based: a false positive can stand in for a miss, so this is an upper bound on box recall.
    rows = [p for p in photos if p.expected is not None]
    expected = sum(p.expected for p in rows)
    hit = sum(min(variant.found[p.file], p.expected) for p in rows)
    return (hit / expected if expected else float("nan")), expected


def hog_agreement(variant: Variant, photos: list[Photo]) -> tuple[int, int]:
    rows = [p for p in photos if p.hog is not None]
    return sum(variant.found[p.file] == p.hog for p in rows), len(rows)


def side_label(side: int) -> str:
    return "full size" if side <= 0 else f"max_side={side}"


def report(variants: list[Variant], photos: list[Photo], show_stages: bool) -> None:
    bare = variants[0]
    print()
    header = (
        f"{'variant':<26}{'photos':>7}{'faces':>7}{'seconds':>9}{'photos/s':>10}{'faces/s':>9}"
        f"{'vs bare':>9}{'cpu/wall':>9}{'recall':>8}{'=hog':>9}"
    )
    print(header)
    print("-" * len(header))
    for v in variants:
        rec, _ = recall(v, photos)
        same, rows = hog_agreement(v, photos)
        print(
            f"{v.name:<26}{len(photos):>7}{v.faces:>7}{v.seconds:>9.2f}{len(photos) / v.seconds:>10.2f}"
            f"{v.faces / v.seconds:>9.2f}{v.seconds / bare.seconds:>8.2f}x{v.cpu_seconds / v.seconds:>9.2f}"
            f"{rec:>8.3f}{f'{same}/{rows}':>9}"
        )
    _, expected = recall(bare, photos)
    print(
        f"\nrecall = sum min(found, expected_faces) / {expected} expected faces; "
        "=hog = photos whose count equals the manifest's faces_found_hog (recorded at max_side=1024)"
    )

    classes = sorted({p.size_class for p in photos}, reverse=True)
    counts = {c: sum(p.size_class == c for p in photos) for c in classes}
    print(f"\nseconds by photo size (small: longest side <= {LARGE_SIDE} px, which max_side=1024 leaves as is)")
    print(f"{'variant':<26}" + "".join(f"{f'{c} ({counts[c]})':>16}{'vs bare':>9}" for c in classes))
    for v in variants:
        cells = "".join(
            f"{v.seconds_by_class[c]:>16.2f}{v.seconds_by_class[c] / bare.seconds_by_class[c]:>8.2f}x" for c in classes
        )
        print(f"{v.name:<26}{cells}")

    if show_stages:
        order = ["load", "read", "normalise", "decode", "downscale", "locate", "encode", "crop jpeg", "blur"]
        print("\nstage seconds (other = box mapping, crop slicing, grey conversion, Python overhead)")
        print(f"{'variant':<26}" + "".join(f"{s:>10}" for s in [*order, "other"]))
        for v in variants:
            other = v.seconds - sum(v.stages.values())
            cells = "".join(f"{v.stages[s]:>10.2f}" if s in v.stages else f"{'-':>10}" for s in order)
            print(f"{v.name:<26}{cells}{other:>10.2f}")

    for v in variants[1:]:
        if v.max_side == 0:
            differ = [p.file for p in photos if v.found[p.file] != bare.found[p.file]]
            print(f"\n{v.name} vs bare loop, same resolution: {len(differ)} photo(s) with another face count")
            for file in differ:
                print(f"  {file}: bare {bare.found[file]}, portal {v.found[file]}")

    slowest = sorted(photos, key=lambda p: bare.per_photo[p.file], reverse=True)[:5]
    print("\nslowest photos for the bare loop (seconds per variant)")
    print(f"{'photo':<46}{'size':>12}" + "".join(f"{v.name:>24}" for v in variants))
    for p in slowest:
        size = f"{p.width}x{p.height}"
        print(f"{p.file[:45]:<46}{size:>12}" + "".join(f"{v.per_photo[p.file]:>24.2f}" for v in variants))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, help="folder holding manifest.csv (default: settings.FACES_DIR)")
    parser.add_argument(
        "--set",
        dest="which",
        choices=["mixed", "detection", "identity", "all"],
        default="mixed",
        help="mixed: every group photo plus --limit identity photos (default)",
    )
    parser.add_argument("--limit", type=int, default=40, help="identity photos sampled (0: all); default 40")
    parser.add_argument("--seed", type=int, default=1, help="seed of the identity sample")
    parser.add_argument(
        "--sides", default="0,1024,640", help="portal max_side policies to run, comma-separated; 0 is full size"
    )
    parser.add_argument("--no-stages", action="store_true", help="do not wrap the stages with timers")
    args = parser.parse_args()

    django_setup()
    from django.conf import settings

    from matching.engine import engine_version

    faces_dir = (args.faces or Path(settings.FACES_DIR)).resolve()
    photos = photos_select(faces_dir, args.which, args.limit, args.seed)
    sides = [int(s) for s in args.sides.split(",") if s.strip()]

    print(f"ingest benchmark: {engine_version()}; numpy {np.__version__}; Python {platform.python_version()}")
    print(f"cores: {os.cpu_count()}; load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    mp = [p.megapixels for p in photos]
    by_purpose = defaultdict(int)
    for p in photos:
        by_purpose[p.purpose] += 1
    print(
        f"photos: {len(photos)} from {faces_dir} ({', '.join(f'{n} {k}' for k, n in sorted(by_purpose.items()))}); "
        f"{sum(mp):.1f} MP in all, {min(mp):.2f}-{max(mp):.1f} MP each, "
        f"{sum(p.size_class == 'large' for p in photos)} with a side over {LARGE_SIDE} px"
    )

    clock = StageClock()
    if not args.no_stages:
        clock.install()
    variants = [Variant("bare loop (full size)", None)]
    variants += [Variant(f"portal {side_label(side)}", side) for side in sides]

    # The first call pays for model loading and first-touch allocations; keep it out of the figures.
    warm = min(photos, key=lambda p: p.megapixels)
    for v in variants:
        variant_run(Variant(v.name, v.max_side), warm, clock)

    started = time.perf_counter()
    for index, photo in enumerate(photos):
        # Rotate the order so that no variant always runs first, on a cold cache.
        shift = index % len(variants)
        for v in variants[shift:] + variants[:shift]:
            variant_run(v, photo, clock)
        if sys.stderr.isatty():
            print(f"\r{index + 1}/{len(photos)} photos, {time.perf_counter() - started:.0f} s", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    report(variants, photos, show_stages=not args.no_stages)
    print(f"\nwall time of the timed loop: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
