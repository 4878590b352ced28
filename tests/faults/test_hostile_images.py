"""Hostile and odd images, posted through the caseworker's case form: each is processed or refused cleanly.

The corpus is generated here, in code: no image file is committed. An item is
either accepted, stored and processed to done (or failed, with a reason), or
refused on the form with a message, leaving no case, photo or file behind.
Nothing may answer 500 or crash the processing.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from matching import services
from matching.models import Case, Photo, PhotoStatus
from tests.conftest import OBAMA, Faces
from tests.faults.conftest import FIGURES

pytestmark = pytest.mark.django_db

ACCEPT, REFUSE, EITHER = "accepted", "refused", "either"


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes, colour_type: int = 2, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def grey_png(width: int, height: int) -> bytes:
    """A real, decodable single-colour PNG: rows of equal bytes compress about 1000:1, so a huge canvas is tiny."""
    packer = zlib.compressobj(9)
    row = b"\0" + b"\x80" * width
    return png(width, height, b"".join(packer.compress(row) for _ in range(height)) + packer.flush(), colour_type=0)


def truncated_jpeg() -> bytes:
    data = encode(noise(300, 300), "JPEG")
    return data[: len(data) // 2]


def png_declaring_huge_size() -> bytes:
    return png(100_000, 100_000, zlib.compress(b"\0" * 64))


def jpeg_declaring_huge_size() -> bytes:
    data = bytearray(encode(noise(16, 16), "JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", 65_000, 65_000)
    return bytes(data)


def ztxt_bomb() -> bytes:
    """A small valid PNG with a text chunk that inflates to 64 MB."""
    base = encode(Image.new("RGB", (64, 64), (90, 120, 150)), "PNG")
    bomb = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (64 * 1024 * 1024), 9))
    return base[:33] + bomb + base[33:]


def jpeg_with_segment(marker: bytes, payload: bytes, image: Image.Image) -> bytes:
    data = encode(image, "JPEG")
    return data[:2] + marker + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def corrupt_exif_jpeg() -> bytes:
    # A big-endian TIFF header whose first directory claims 65535 entries and then stops.
    return jpeg_with_segment(b"\xff\xe1", b"Exif\0\0MM\0\x2a\0\0\0\x08\xff\xff" + b"\x13" * 40, noise(120, 160, 3))


def html_in_jpeg_comment() -> bytes:
    return jpeg_with_segment(b"\xff\xfe", b"<html><script>alert(document.cookie)</script></html>", noise(80, 80, 4))


def broken_png_crc() -> bytes:
    data = bytearray(encode(noise(50, 50), "PNG"))
    data[-20:-16] = b"\0\0\0\0"  # the IDAT checksum
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 40), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), "PNG")


def palette_png_with_transparency() -> bytes:
    image = Image.new("P", (40, 40), 3)
    image.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200] * 64)
    return encode(image, "PNG", transparency=3)


def multi_picture_jpeg() -> bytes:
    return encode(noise(60, 40, 1), "MPO", save_all=True, append_images=[noise(60, 40, 2)])


def exif_rotated_photo(faces: Faces) -> bytes:
    """A real one-face photo stored lying on its side, with the EXIF tag that stands it up again."""
    upright = Image.open(io.BytesIO(faces.read(OBAMA))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": undoes the counter-clockwise turn below
    return encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes(), quality=95)


@dataclass(frozen=True)
class Item:
    name: str
    filename: str
    make: Callable[[Faces], bytes]
    expect: str
    # For refusals, words the message must contain; for accepted items, a check of the processed photo.
    message: str = ""
    check: Callable[[Photo], None] | None = None


def upright_with_one_face(photo: Photo) -> None:
    assert photo.height > photo.width  # stored standing up, as the EXIF tag said
    assert photo.faces.count() == 1


def no_face(photo: Photo) -> None:
    assert photo.faces.count() == 0


CORPUS = [
    Item("truncated-jpeg", "half.jpg", lambda f: truncated_jpeg(), REFUSE, "damaged or truncated"),
    Item("png-declaring-huge-size", "huge.png", lambda f: png_declaring_huge_size(), REFUSE, "pixels"),
    Item("jpeg-declaring-huge-size", "huge.jpg", lambda f: jpeg_declaring_huge_size(), REFUSE, "pixels"),
    Item("decompression-bomb-9000px", "bomb.png", lambda f: grey_png(9_000, 9_000), REFUSE, "megapixels"),
    Item("text-chunk-bomb", "ztxt.png", lambda f: ztxt_bomb(), REFUSE, "damaged"),
    Item("zero-bytes", "empty.jpg", lambda f: b"", REFUSE, "empty"),
    Item("text-named-jpg", "notes.jpg", lambda f: b"Meeting notes, 3 March.\n" * 40, REFUSE, "not a JPEG"),
    Item(
        "html-named-jpg",
        "page.jpg",
        lambda f: b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
        REFUSE,
        "not a JPEG",
    ),
    Item(
        "svg-named-jpg",
        "drawing.jpg",
        lambda f: b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'><rect width='9' height='9'/></svg>",
        REFUSE,
        "not a JPEG",
    ),
    Item("html-in-jpeg-comment", "polyglot.jpg", lambda f: html_in_jpeg_comment(), ACCEPT, check=no_face),
    Item("broken-png-checksum", "crc.png", lambda f: broken_png_crc(), REFUSE, "damaged"),
    Item("tiff", "scan.tif", lambda f: encode(noise(20, 20), "TIFF"), REFUSE, "TIFF"),
    Item("animated-gif", "loop.gif", lambda f: animated("GIF"), REFUSE, "GIF"),
    Item("animated-png", "loop.png", lambda f: animated("PNG"), ACCEPT, check=no_face),
    Item("animated-webp", "loop.webp", lambda f: animated("WEBP"), ACCEPT, check=no_face),
    Item("multi-picture-jpeg", "phone.jpg", lambda f: multi_picture_jpeg(), ACCEPT, check=no_face),
    Item("cmyk-jpeg", "print.jpg", lambda f: encode(Image.new("CMYK", (60, 60), (0, 90, 90, 0)), "JPEG"), ACCEPT),
    Item("16-bit-png", "deep.png", lambda f: sixteen_bit_png(), ACCEPT, check=no_face),
    Item("greyscale", "grey.png", lambda f: encode(noise(60, 60).convert("L"), "PNG"), ACCEPT, check=no_face),
    Item("palette-png-transparency", "pal.png", lambda f: palette_png_with_transparency(), ACCEPT),
    Item("exif-rotated-photo", "sideways.jpg", exif_rotated_photo, ACCEPT, check=upright_with_one_face),
    Item("1x1", "dot.png", lambda f: encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), REFUSE, "too small"),
    Item("4000x12", "sliver.png", lambda f: grey_png(4_000, 12), REFUSE, "at least 40 pixels on each side"),
    Item("20000x20000", "vast.png", lambda f: grey_png(20_000, 20_000), REFUSE, "pixels"),
    Item("70000x10", "strip.png", lambda f: grey_png(70_000, 10), REFUSE, "at most 65500 pixels"),
    Item("corrupt-exif", "exif.jpg", lambda f: corrupt_exif_jpeg(), EITHER),
]


def _stored_files(root) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def _tally(outcome: str) -> None:
    figures = FIGURES.setdefault("hostile images", {"tried": 0, "handled": 0, "accepted": 0, "refused": 0})
    figures["handled"] += 1
    figures[outcome] += 1


@pytest.mark.parametrize("item", CORPUS, ids=[item.name for item in CORPUS])
def test_a_hostile_image_is_processed_or_refused_cleanly(item, client, alice, faces, media_root):
    FIGURES.setdefault("hostile images", {"tried": 0, "handled": 0, "accepted": 0, "refused": 0})["tried"] += 1
    # Given a caseworker, and one generated file
    client.force_login(alice)
    data = item.make(faces)
    before = _stored_files(media_root)
    reference = f"H-{item.name}"

    # When it is posted as a new case's photo
    response = client.post(
        reverse("matching:case_create"),
        {
            "reference": reference,
            "title": "Hostile input",
            "purpose": "Check upload handling",
            "photos": [SimpleUploadedFile(item.filename, data, content_type="image/jpeg")],
        },
    )

    # Then it is refused with a message, leaving nothing behind...
    assert response.status_code in (302, 400), response.status_code
    if response.status_code == 400:
        assert item.expect in (REFUSE, EITHER), response.content.decode()[:2000]
        page = response.content.decode()
        assert f"{item.filename}: " in page
        assert item.message in page
        assert not Case.objects.filter(reference=reference).exists()
        assert not Photo.objects.exists()
        assert _stored_files(media_root) == before
        _tally("refused")
        return

    # ...or accepted, stored as a clean JPEG, and processed to done or failed-with-a-reason
    assert item.expect in (ACCEPT, EITHER)
    photo = Photo.objects.get(case__reference=reference)
    with photo.image.open("rb") as handle:
        stored = handle.read()
    assert Image.open(io.BytesIO(stored)).format == "JPEG"
    assert b"<script" not in stored and not Image.open(io.BytesIO(stored)).getexif()
    services.photo_process(photo_id=photo.id)
    photo.refresh_from_db()
    assert photo.status == PhotoStatus.DONE or (photo.status == PhotoStatus.FAILED and photo.failure_reason)
    if item.check:
        item.check(photo)
    _tally("accepted")
