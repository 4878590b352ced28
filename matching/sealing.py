"""Encodings are biometric data: they are stored encrypted (Fernet: AES-128-CBC with HMAC-SHA256).

Keys come from FACE_ENCODING_KEYS (comma-separated Fernet keys, newest first). Every stored encoding is
readable with any listed key and written with the first, so a key is rotated by putting a new key first,
running `manage.py rotate_encoding_key`, then dropping the old key.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

import numpy as np
from django.conf import settings


class SealError(ValueError):
    """An encoding could not be decrypted with any configured key."""


@cache
def _fernet(keys: tuple[str, ...]):
    from cryptography.fernet import Fernet, MultiFernet

    return MultiFernet([Fernet(key) for key in keys])


def encoding_keys() -> tuple[str, ...]:
    configured = tuple(k.strip() for k in settings.FACE_ENCODING_KEYS if k.strip())
    if configured:
        return configured
    # A local default so that `make run` works with no configuration; production sets its own keys.
    digest = hashlib.sha256(f"face-encodings:{settings.SECRET_KEY}".encode()).digest()
    return (base64.urlsafe_b64encode(digest).decode(),)


def encoding_seal(vector: np.ndarray) -> bytes:
    return _fernet(encoding_keys()).encrypt(np.asarray(vector, dtype=np.float64).tobytes())


def encoding_open(blob: bytes | memoryview) -> np.ndarray:
    from cryptography.fernet import InvalidToken

    try:
        raw = _fernet(encoding_keys()).decrypt(bytes(blob))
    except InvalidToken:
        raise SealError("An encoding cannot be decrypted with the configured FACE_ENCODING_KEYS.") from None
    return np.frombuffer(raw, dtype=np.float64)


def encoding_reseal(blob: bytes | memoryview) -> bytes:
    """Re-encrypt with the newest key (a no-op in meaning, a new token in bytes)."""
    return _fernet(encoding_keys()).rotate(bytes(blob))


def encodings_open(blobs) -> np.ndarray:
    return np.stack([encoding_open(b) for b in blobs]) if blobs else np.zeros((0, 128))
