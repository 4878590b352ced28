from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from matching.imaging import ImageRejected, image_normalise

LIMITS = {"max_bytes": 5 * 1024 * 1024, "max_pixels": 40_000_000}


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge canvas: the shape of a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, this is text", "not a JPEG, PNG or WebP"),
        (encode(Image.new("RGB", (20, 20)), "GIF"), "GIF"),
        (encode(Image.new("RGB", (20, 20)), "BMP"), "BMP"),
        (png_declaring(60_000, 60_000), "pixels"),
        (png_declaring(8_000, 8_000), "limit is 40 megapixels"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "not a JPEG"),
    ],
    ids=["zero-bytes", "text", "gif", "bmp", "bomb", "over-pixel-limit", "svg"],
)
def test_unusable_files_are_refused_with_a_reason(data, message):
    with pytest.raises(ImageRejected, match=message):
        image_normalise(data, **LIMITS)


def test_truncated_jpeg_is_refused_even_after_face_recognition_is_imported():
    import face_recognition  # noqa: F401  (it turns on Pillow's LOAD_TRUNCATED_IMAGES)

    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG")

    with pytest.raises(ImageRejected, match="damaged or truncated"):
        image_normalise(data[: len(data) // 2], **LIMITS)


def test_file_over_the_size_limit_is_refused():
    with pytest.raises(ImageRejected, match="limit is 1 MB"):
        image_normalise(b"\xff\xd8" + b"\0" * (2 * 1024 * 1024), max_bytes=1024 * 1024, max_pixels=10**7)


def test_exif_orientation_is_applied_and_metadata_dropped():
    # Given an 80x40 JPEG tagged "rotate 90°"
    image = Image.new("RGB", (80, 40), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera maker"
    data = encode(image, "JPEG", exif=exif.tobytes())

    normalised = image_normalise(data, **LIMITS)

    # Then it is stored upright, with no EXIF left
    assert (normalised.width, normalised.height) == (40, 80)
    assert not Image.open(io.BytesIO(normalised.content)).getexif()


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.new("CMYK", (48, 48), (0, 100, 100, 0)), "JPEG"),
        (Image.new("I;16", (48, 48), 40_000), "PNG"),
        (Image.new("L", (48, 48), 128), "PNG"),
        (Image.new("P", (48, 48), 3), "PNG"),
        (Image.new("RGBA", (48, 48), (0, 0, 0, 0)), "WEBP"),
    ],
    ids=["cmyk-jpeg", "16-bit-png", "grey", "palette", "webp-alpha"],
)
def test_odd_but_valid_modes_become_rgb_jpeg(image, fmt):
    if image.mode == "P":
        image.info["transparency"] = 3

    normalised = image_normalise(encode(image, fmt), **LIMITS)

    stored = Image.open(io.BytesIO(normalised.content))
    assert (stored.format, stored.mode, stored.size) == ("JPEG", "RGB", (48, 48))


@pytest.mark.parametrize("size", [(1, 1), (39, 400), (400, 39)])
def test_a_photo_too_small_to_hold_a_face_is_refused(size):
    with pytest.raises(ImageRejected, match=f"{size[0]}×{size[1]} pixels, too small"):
        image_normalise(encode(Image.new("RGB", size), "PNG"), **LIMITS)


def test_the_smallest_photo_that_can_hold_a_face_is_accepted():
    assert image_normalise(encode(Image.new("RGB", (40, 40)), "PNG"), **LIMITS).width == 40
