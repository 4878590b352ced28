"""Galleries and their subjects: one at a time, or in bulk from a zip and a CSV manifest."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from matching import bulk
from matching.engine import detect_faces
from matching.imaging import image_normalise, rgb_array
from matching.models import (
    BatchStatus,
    EnrolmentBatch,
    Gallery,
    PhotoKind,
    Subject,
)
from matching.services.exceptions import ServiceError
from matching.services.processing import reference_faces_store
from matching.services.uploads import StoredFiles, UploadedImage, dates_check, photo_queue, photo_store
from portal.audit import audit_record
from portal.errors import Refusal
from portal.models import Organisation
from portal.outbox import outbox_enqueue


@transaction.atomic
def gallery_create(*, organisation: Organisation, name: str, description: str = "", acting_user: Any) -> Gallery:
    name = name.strip()
    try:
        # A savepoint, so that two simultaneous requests with one name end in a message, not a server error.
        with transaction.atomic():
            gallery = Gallery.objects.create(
                organisation=organisation, name=name, description=description, created_by=acting_user
            )
    except IntegrityError:
        raise ServiceError(f"A gallery named “{name}” already exists.") from None
    audit_record(action="gallery.create", actor=acting_user, organisation=organisation, target=gallery)
    return gallery


def _subject_born_on(subject: Subject, born_on: date | None) -> None:
    """Record a date of birth on a subject that has none; refuse one that contradicts the recorded one."""
    if born_on is None or subject.born_on == born_on:
        return
    if subject.born_on is not None:
        raise ServiceError(
            f"The subject “{subject.code}” is enrolled with the date of birth {subject.born_on:%Y-%m-%d}, "
            f"not {born_on:%Y-%m-%d}."
        )
    subject.born_on = born_on
    subject.save(update_fields=["born_on"])


def _subject_lock(subject: Subject) -> Subject:
    """The subject's row, locked and read again: an erasure running meanwhile has either committed, and is refused
    below, or waits until the new photos are committed, and erases them too (subject_erase takes this lock)."""
    return Subject.objects.select_for_update(no_key=True).get(pk=subject.pk)


def _refuse_erased(subject: Subject) -> None:
    # An erased subject stays as a tombstone under its code; photos added to it would bring a person the
    # organisation erased back into every search, under a name nobody sees.
    if subject.erased_at is not None:
        raise ServiceError(f"The subject “{subject.code}” was erased; enrol the person under a new code.")


@transaction.atomic
def subject_enrol(
    *,
    gallery: Gallery,
    code: str,
    display_name: str = "",
    sex: str = "",
    age_band: str = "",
    ethnicity: str = "",
    born_on: date | None = None,
    photos: list[UploadedImage],
    captured_on: date | None = None,
    acting_user: Any,
) -> Subject:
    """Create a subject, or add photos to the subject with this code. Photos are processed in the background.

    `captured_on` is the day the photos were taken, where known; `born_on` the subject's date of birth."""
    code = code.strip()
    if not code:
        raise ServiceError("A subject needs a reference code.")
    if not photos:
        raise ServiceError("Enrol at least one reference photo.")
    dates_check(captured_on=captured_on, born_on=born_on)
    subject, created = Subject.objects.get_or_create(
        gallery=gallery,
        code=code,
        defaults={
            "display_name": display_name,
            "sex": sex,
            "age_band": age_band,
            "ethnicity": ethnicity,
            "born_on": born_on,
        },
    )
    subject = _subject_lock(subject)
    _refuse_erased(subject)
    _subject_born_on(subject, born_on)
    dates_check(captured_on=captured_on, born_on=subject.born_on)
    with StoredFiles() as files:
        for upload in photos:
            photo = photo_store(
                files=files,
                organisation=gallery.organisation,
                kind=PhotoKind.REFERENCE,
                upload=upload,
                subject=subject,
                captured_on=captured_on,
            )
            photo_queue(photo)
    audit_record(
        action="subject.enrol",
        actor=acting_user,
        organisation=gallery.organisation,
        target=subject,
        detail={"created": created, "photos": len(photos)},
    )
    return subject


@transaction.atomic
def enrolment_batch_create(*, gallery: Gallery, archive: Any, manifest: Any, acting_user: Any) -> EnrolmentBatch:
    """Check the zip and CSV enough to refuse them at once, store them and queue the work."""
    archive_bytes = bulk.upload_read(archive, limit=settings.BULK_MAX_BYTES, label="The zip file")
    manifest_bytes = bulk.upload_read(manifest, limit=5 * 1024 * 1024, label="The CSV file")
    rows = bulk.manifest_parse(manifest_bytes)
    bulk.archive_check(archive_bytes, max_members=settings.BULK_MAX_MEMBERS)
    batch = EnrolmentBatch(gallery=gallery, created_by=acting_user, rows_total=len(rows))
    batch.archive.save(f"{uuid.uuid4().hex}.zip", ContentFile(archive_bytes), save=False)
    batch.manifest.save(f"{uuid.uuid4().hex}.csv", ContentFile(manifest_bytes), save=False)
    batch.save()
    audit_record(
        action="gallery.bulk_upload",
        actor=acting_user,
        organisation=gallery.organisation,
        target=batch,
        detail={"rows": len(rows)},
    )
    outbox_enqueue("matching.tasks.process_enrolment_batch", batch.id)
    return batch


def _batch_row_enrol(batch: EnrolmentBatch, row: bulk.ManifestRow, archive: bulk.SafeArchive) -> dict[str, Any]:
    entry: dict[str, Any] = {"line": row.line, "code": row.code, "file": row.file}
    try:
        data = archive.read(row.file)
        image = image_normalise(data, max_bytes=settings.UPLOAD_MAX_BYTES, max_pixels=settings.UPLOAD_MAX_PIXELS)
        detected = detect_faces(
            rgb_array(image.content),
            model=settings.FACE_DETECTION_MODEL,
            upsample=settings.FACE_UPSAMPLE,
            max_side=settings.FACE_MAX_SIDE,
            crop_margin=settings.FACE_CROP_MARGIN,
            review_images=True,
        )
        if len(detected) != 1:
            raise ServiceError(
                "no face was found" if not detected else f"{len(detected)} faces were found; one is required"
            )
        with StoredFiles() as files, transaction.atomic():
            subject, created = Subject.objects.get_or_create(
                gallery=batch.gallery,
                code=row.code,
                defaults={
                    "display_name": row.display_name,
                    "sex": row.sex,
                    "age_band": row.age_band,
                    "ethnicity": row.ethnicity,
                    "born_on": row.born_on,
                },
            )
            subject = _subject_lock(subject)
            _refuse_erased(subject)
            _subject_born_on(subject, row.born_on)
            dates_check(captured_on=row.captured_on, born_on=subject.born_on)
            photo = photo_store(
                files=files,
                organisation=batch.gallery.organisation,
                kind=PhotoKind.REFERENCE,
                upload=UploadedImage(name=row.file, image=image),
                subject=subject,
                captured_on=row.captured_on,
            )
            reference_faces_store(photo=photo, detected=detected, files=files)
        entry.update(status="enrolled", detail="new subject" if created else "photo added to existing subject")
    except (Refusal, IntegrityError) as error:  # any refusal is reported on its row
        entry.update(status="refused", detail=str(error))
    return entry


@transaction.atomic
def _batch_report_append(batch: EnrolmentBatch, entry: dict[str, Any]) -> None:
    """Append from the stored report, not this task's copy, so an erasure's redaction during the import holds."""
    current = EnrolmentBatch.objects.select_for_update(no_key=True).only("report").get(pk=batch.pk)
    if (
        entry.get("code")
        and Subject.objects.filter(gallery_id=batch.gallery_id, code=entry["code"], erased_at__isnull=False).exists()
    ):
        entry = {**entry, "code": "", "file": "", "detail": "The subject was erased."}
    batch.report = [*current.report, entry]
    batch.rows_done = len(batch.report)
    batch.save(update_fields=["report", "rows_done"])


def _batch_bytes_drop(batch: EnrolmentBatch) -> None:
    for field_file in (batch.archive, batch.manifest):
        if field_file and field_file.name:
            field_file.storage.delete(field_file.name)
    batch.archive = ""
    batch.manifest = ""


def enrolment_batch_process(*, batch_id: int) -> None:
    """Enrol each row in its own transaction, saving the report as it goes; a rerun resumes."""
    claimed = EnrolmentBatch.objects.filter(id=batch_id, status__in=[BatchStatus.QUEUED, BatchStatus.RUNNING]).update(
        status=BatchStatus.RUNNING
    )
    if not claimed:
        return
    batch = EnrolmentBatch.objects.select_related("gallery__organisation").get(id=batch_id)
    if not (batch.archive and batch.manifest):
        # A finished import's bytes were dropped; a late rerun has nothing to read and nothing left to do.
        complete = batch.rows_done >= batch.rows_total
        EnrolmentBatch.objects.filter(id=batch_id).update(
            status=BatchStatus.DONE if complete else BatchStatus.FAILED,
            failure_reason="" if complete else "The uploaded files are no longer stored.",
            finished_at=batch.finished_at or timezone.now(),
        )
        return
    try:
        with batch.manifest.open("rb") as handle:
            rows = bulk.manifest_parse(handle.read())
        with batch.archive.open("rb") as handle, bulk.SafeArchive(handle.read()) as archive:
            done = {entry["line"] for entry in batch.report}
            for row in rows:
                if row.line in done:
                    continue
                entry = _batch_row_enrol(batch, row, archive)
                _batch_report_append(batch, entry)
    except bulk.BulkRejected as error:
        batch.status = BatchStatus.FAILED
        batch.failure_reason = str(error)[:500]
    else:
        batch.status = BatchStatus.DONE
    batch.finished_at = timezone.now()
    # The archive and manifest do not outlive their import: the photos that went in are stored (cleaned) as
    # reference photos, and the per-row report says what became of each row.
    _batch_bytes_drop(batch)
    batch.save(update_fields=["status", "failure_reason", "finished_at", "archive", "manifest"])
    audit_record(
        action="gallery.bulk_enrol",
        actor=batch.created_by,
        organisation=batch.gallery.organisation,
        target=batch,
        detail={"enrolled": batch.accepted_count, "refused": batch.refused_count},
    )
