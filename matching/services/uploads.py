"""Reading uploaded photos, and storing them so that a failed write leaves no file behind."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile

from matching.imaging import ImageRejected, NormalisedImage, human_size, image_normalise
from matching.models import (
    Photo,
    date_problem,
)
from matching.services.exceptions import ServiceError
from portal.models import Organisation
from portal.outbox import outbox_enqueue


@dataclass(frozen=True)
class UploadedImage:
    name: str
    image: NormalisedImage
    raw: bytes = b""


def uploaded_image_read(upload: Any) -> UploadedImage:
    """Read and normalise one uploaded file, or raise ImageRejected naming it."""
    name = getattr(upload, "name", "") or "upload"
    if upload.size is not None and upload.size > settings.UPLOAD_MAX_BYTES:
        raise ImageRejected(
            f"{name}: the file is {human_size(upload.size)}; the limit is {human_size(settings.UPLOAD_MAX_BYTES)}."
        )
    data = upload.read(settings.UPLOAD_MAX_BYTES + 1)
    try:
        image = image_normalise(data, max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.UPLOAD_MAX_PIXELS)
    except ImageRejected as error:
        raise ImageRejected(f"{name}: {error}") from None
    return UploadedImage(name=name[:255], image=image, raw=data)


class StoredFiles:
    """Deletes the files written inside the block if the block fails, so a refused write leaves no orphans."""

    def __init__(self) -> None:
        self.files: list[Any] = []

    def __enter__(self) -> StoredFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for field_file in self.files:
                field_file.storage.delete(field_file.name)

    def save(self, field_file: Any, name: str, content: bytes) -> None:
        field_file.save(name, ContentFile(content), save=False)
        self.files.append(field_file)


def dates_check(*, captured_on: date | None = None, born_on: date | None = None) -> None:
    """Refuse a capture date or date of birth in the future, before 1900, or a photo taken before the birth."""
    for value, what in ((born_on, "date of birth"), (captured_on, "date the photo was taken")):
        problem = date_problem(value, what)
        if problem:
            raise ServiceError(problem)
    if born_on and captured_on and captured_on < born_on:
        raise ServiceError(
            f"The photo cannot be taken ({captured_on:%Y-%m-%d}) before the date of birth ({born_on:%Y-%m-%d})."
        )


def photo_store(
    *,
    files: StoredFiles,
    organisation: Organisation,
    kind: str,
    upload: UploadedImage,
    captured_on: date | None = None,
    **owner: Any,
) -> Photo:
    photo = Photo(
        organisation=organisation,
        kind=kind,
        captured_on=captured_on,
        original_name=upload.name,
        width=upload.image.width,
        height=upload.image.height,
        **owner,
    )
    files.save(photo.image, f"{uuid.uuid4().hex}.jpg", upload.image.content)
    if organisation.keep_originals and upload.raw:
        # The cleaned copy is what the portal uses; the original is evidence, kept only by choice.
        files.save(photo.original, f"{uuid.uuid4().hex}.{upload.image.source_format.lower()}", upload.raw)
    photo.save()
    return photo


def photo_queue(photo: Photo) -> None:
    # In the caller's transaction: the task is sent if and only if the photo is committed,
    # and a broker outage delays it rather than failing the upload.
    outbox_enqueue("matching.tasks.process_photo", photo.id)
