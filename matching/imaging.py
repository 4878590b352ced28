"""Checking and normalising uploaded photos before anything is stored.

Every upload passes through `image_normalise`. It either returns a clean RGB
JPEG with the EXIF orientation applied and all metadata dropped, or raises
`ImageRejected` with a message a caseworker can act on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from portal.errors import Refusal

# MPO is how Pillow names a JPEG that carries extra frames (many phone cameras
# add a preview or depth image); the first frame is the photo.
ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}
# The stored copy is a JPEG, which cannot be wider or taller than this.
MAX_SIDE = 65_500
ACCEPTED_LABEL = "JPEG, PNG or WebP"
# The HOG detector's window is 80 pixels, halved by the one upsampling the portal
# asks for: no face can be found in a photo narrower or shorter than this.
MIN_SIDE = 40


class ImageRejected(Refusal, ValueError):
    """The upload is not a photo we can use."""


@dataclass(frozen=True)
class NormalisedImage:
    content: bytes
    width: int
    height: int
    source_format: str


def human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")
    return f"{max(1, round(n / 1024))} KB"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit and 32-bit grey: scale to 8 bits instead of clipping to white.
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def image_normalise(data: bytes, *, max_bytes: int, max_pixels: int) -> NormalisedImage:
    if not data:
        raise ImageRejected("The file is empty.")
    if len(data) > max_bytes:
        raise ImageRejected(f"The file is {human_size(len(data))}; the limit is {human_size(max_bytes)}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            source_format = image.format or ""
            if source_format not in ACCEPTED_FORMATS:
                raise ImageRejected(
                    f"This is a {source_format or 'file of unknown type'}, not a {ACCEPTED_LABEL} image."
                )
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageRejected("The image has no pixels.")
            # Checked before decoding: a decompression bomb declares its size honestly.
            if width * height > max_pixels:
                raise ImageRejected(
                    f"The image is {width}×{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels."
                )
            if max(width, height) > MAX_SIDE:
                raise ImageRejected(f"The image is {width}×{height} pixels; a side may be at most {MAX_SIDE} pixels.")
            if min(width, height) < MIN_SIDE:
                raise ImageRejected(
                    f"The image is {width}×{height} pixels, too small to hold a face the detector can find; "
                    f"a photo must be at least {MIN_SIDE} pixels on each side."
                )
            # face_recognition sets this flag on import, which would let a
            # truncated photo through as a grey smear.
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            image.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("The image declares more pixels than it may safely be opened with.") from None
    except UnidentifiedImageError:
        raise ImageRejected(f"This file is not a {ACCEPTED_LABEL} image.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRejected(f"The image is damaged or truncated and cannot be read ({error}).") from None

    try:
        image = ImageOps.exif_transpose(image)
    except Exception:
        pass
    image = _to_rgb(image)

    out = io.BytesIO()
    # Re-encoding drops every metadata block, GPS included; Pillow would copy
    # a JPEG comment (COM) across unless told not to.
    image.save(out, format="JPEG", quality=92, comment=b"")
    return NormalisedImage(content=out.getvalue(), width=image.width, height=image.height, source_format=source_format)


def rgb_array(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as image:
        return np.asarray(image.convert("RGB"))


def downscale(array: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so that the longest side is at most max_side. Returns the array and the factor applied."""
    height, width = array.shape[:2]
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return array, 1.0
    scale = max_side / longest
    image = Image.fromarray(array)
    image.thumbnail((max_side, max_side))
    return np.asarray(image), scale


# A face as a list shows it: 48 px, twice that for high-density screens.
THUMBNAIL_SIDE = 96


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """A JPEG of at most THUMBNAIL_SIDE a side. Give it a JPEG opened but not yet loaded, and only what the
    thumbnail needs is decoded (libjpeg scales by 1/2, 1/4 or 1/8 while decoding)."""
    image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=85)
    return out.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=quality)
    return out.getvalue()
