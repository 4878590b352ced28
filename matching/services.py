from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from matching import bulk
from matching.engine import ENGINE_NAME, DetectedFace, detect_faces, engine_version
from matching.imaging import ImageRejected, NormalisedImage, human_size, image_normalise, rgb_array
from matching.models import (
    BatchStatus,
    Candidate,
    Case,
    EnrolmentBatch,
    Face,
    Gallery,
    Outcome,
    Photo,
    PhotoKind,
    PhotoStatus,
    Search,
    Subject,
)
from matching.search import GalleryMatrix, gallery_cache, search_gallery
from portal.audit import audit_record
from portal.models import Organisation

logger = logging.getLogger(__name__)

# A photo left in a working state this long is taken to belong to a lost worker.
STALE_AFTER = timedelta(minutes=15)


class ServiceError(Exception):
    """A refusal with a message meant for the user."""


@dataclass(frozen=True)
class UploadedImage:
    name: str
    image: NormalisedImage


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
    return UploadedImage(name=name[:255], image=image)


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


def _photo_store(
    *, files: StoredFiles, organisation: Organisation, kind: str, upload: UploadedImage, **owner: Any
) -> Photo:
    photo = Photo(
        organisation=organisation,
        kind=kind,
        original_name=upload.name,
        width=upload.image.width,
        height=upload.image.height,
        **owner,
    )
    files.save(photo.image, f"{uuid.uuid4().hex}.jpg", upload.image.content)
    photo.save()
    return photo


def _queue_photo(photo: Photo) -> None:
    from matching.tasks import process_photo

    photo_id = photo.id
    transaction.on_commit(lambda: process_photo.delay(photo_id))


# Galleries and subjects


@transaction.atomic
def gallery_create(*, organisation: Organisation, name: str, description: str = "", acting_user: Any) -> Gallery:
    name = name.strip()
    if Gallery.objects.filter(organisation=organisation, name=name).exists():
        raise ServiceError(f"A gallery named “{name}” already exists.")
    gallery = Gallery.objects.create(
        organisation=organisation, name=name, description=description, created_by=acting_user
    )
    audit_record(action="gallery.create", actor=acting_user, organisation=organisation, target=gallery)
    return gallery


@transaction.atomic
def subject_enrol(
    *,
    gallery: Gallery,
    code: str,
    display_name: str = "",
    sex: str = "",
    age_band: str = "",
    ethnicity: str = "",
    photos: list[UploadedImage],
    acting_user: Any,
) -> Subject:
    """Create a subject, or add photos to the subject with this code. Photos are processed in the background."""
    code = code.strip()
    if not code:
        raise ServiceError("A subject needs a reference code.")
    if not photos:
        raise ServiceError("Enrol at least one reference photo.")
    subject, created = Subject.objects.get_or_create(
        gallery=gallery,
        code=code,
        defaults={"display_name": display_name, "sex": sex, "age_band": age_band, "ethnicity": ethnicity},
    )
    with StoredFiles() as files:
        for upload in photos:
            photo = _photo_store(
                files=files, organisation=gallery.organisation, kind=PhotoKind.REFERENCE, upload=upload, subject=subject
            )
            _queue_photo(photo)
    audit_record(
        action="subject.enrol",
        actor=acting_user,
        organisation=gallery.organisation,
        target=subject,
        detail={"created": created, "photos": len(photos)},
    )
    return subject


# Cases


@transaction.atomic
def case_create(
    *,
    organisation: Organisation,
    acting_user: Any,
    reference: str,
    title: str,
    purpose: str,
    description: str = "",
    probe_sex: str = "",
    probe_age_band: str = "",
    probe_ethnicity: str = "",
    photos: list[UploadedImage],
) -> Case:
    if not photos:
        raise ServiceError("Add at least one probe photo.")
    reference = reference.strip()
    if Case.objects.filter(organisation=organisation, reference=reference).exists():
        raise ServiceError(f"A case with reference “{reference}” already exists.")
    case = Case.objects.create(
        organisation=organisation,
        reference=reference,
        title=title.strip(),
        description=description,
        purpose=purpose.strip(),
        probe_sex=probe_sex,
        probe_age_band=probe_age_band,
        probe_ethnicity=probe_ethnicity,
        created_by=acting_user,
    )
    with StoredFiles() as files:
        for upload in photos:
            photo = _photo_store(files=files, organisation=organisation, kind=PhotoKind.PROBE, upload=upload, case=case)
            _queue_photo(photo)
    audit_record(
        action="case.create", actor=acting_user, organisation=organisation, target=case, detail={"photos": len(photos)}
    )
    return case


# Processing


def photo_claim(*, photo_id: int) -> bool:
    """Take a photo for processing. False when another worker has it or it is finished."""
    now = timezone.now()
    fresh = Photo.objects.filter(id=photo_id, status=PhotoStatus.QUEUED)
    updated = fresh.update(status=PhotoStatus.DETECTING, attempts=F("attempts") + 1, status_changed_at=now)
    if updated:
        return True
    stale = Photo.objects.filter(
        id=photo_id,
        status__in=[PhotoStatus.DETECTING, PhotoStatus.MATCHING],
        status_changed_at__lt=now - STALE_AFTER,
    )
    return stale.update(status=PhotoStatus.DETECTING, attempts=F("attempts") + 1, status_changed_at=now) == 1


def photo_requeue(*, photo_id: int) -> None:
    """Hand a photo back for a retry after a transient error."""
    Photo.objects.filter(id=photo_id, status__in=[PhotoStatus.DETECTING, PhotoStatus.MATCHING]).update(
        status=PhotoStatus.QUEUED, status_changed_at=timezone.now()
    )


def photo_fail(*, photo_id: int, reason: str) -> None:
    Photo.objects.filter(id=photo_id).exclude(status=PhotoStatus.DONE).update(
        status=PhotoStatus.FAILED, failure_reason=reason[:500], status_changed_at=timezone.now()
    )


def photo_detect(photo: Photo) -> list[DetectedFace]:
    try:
        with photo.image.open("rb") as handle:
            content = handle.read()
    except FileNotFoundError:
        # Not transient: retrying cannot bring the file back.
        raise ImageRejected("The stored photo file is missing; upload the photo again.") from None
    return detect_faces(
        rgb_array(content),
        model=settings.FACE_DETECTION_MODEL,
        upsample=settings.FACE_UPSAMPLE,
        max_side=settings.FACE_MAX_SIDE,
        crop_margin=settings.FACE_CROP_MARGIN,
    )


def _faces_store(photo: Photo, detected: list[DetectedFace], files: StoredFiles) -> list[Face]:
    faces = []
    for index, found in enumerate(detected):
        face = Face(
            photo=photo,
            organisation_id=photo.organisation_id,
            subject_id=photo.subject_id,
            index=index,
            top=found.top,
            right=found.right,
            bottom=found.bottom,
            left=found.left,
            encoding=found.encoding.astype(np.float64).tobytes(),
            engine=ENGINE_NAME,
            engine_version=engine_version(),
            detector=settings.FACE_DETECTION_MODEL,
            face_width=found.width,
            face_height=found.height,
            blur=found.blur,
        )
        files.save(face.crop, f"{uuid.uuid4().hex}.jpg", found.crop_jpeg)
        faces.append(face)
    return Face.objects.bulk_create(faces)


def photo_process(*, photo_id: int) -> None:
    """Detect, encode and (for probes) search one photo. Safe to run twice."""
    if not photo_claim(photo_id=photo_id):
        return
    photo = Photo.objects.select_related("organisation").get(id=photo_id)
    if not photo.faces.exists():
        detected = photo_detect(photo)
        with StoredFiles() as files, transaction.atomic():
            locked = Photo.objects.select_for_update().get(id=photo_id)
            if locked.faces.exists() or locked.is_finished:
                return
            if photo.kind == PhotoKind.REFERENCE:
                reference_faces_store(photo=locked, detected=detected, files=files)
                return
            _faces_store(locked, detected, files)
            locked.status = PhotoStatus.MATCHING
            locked.status_changed_at = timezone.now()
            locked.save(update_fields=["status", "status_changed_at"])
    elif photo.kind == PhotoKind.REFERENCE:
        Photo.objects.filter(id=photo_id).update(status=PhotoStatus.DONE, status_changed_at=timezone.now())
        return
    probe_photo_search(photo_id=photo_id)


def reference_faces_store(*, photo: Photo, detected: list[DetectedFace], files: StoredFiles) -> None:
    """A reference photo must show exactly one face; anything else fails with a reason."""
    if len(detected) != 1:
        photo.status = PhotoStatus.FAILED
        photo.failure_reason = (
            "No face was found in this photo."
            if not detected
            else f"{len(detected)} faces were found; a reference photo must show one person only."
        )
    else:
        _faces_store(photo, detected, files)
        Organisation.objects.filter(id=photo.organisation_id).update(gallery_version=F("gallery_version") + 1)
        photo.status = PhotoStatus.DONE
    photo.status_changed_at = timezone.now()
    photo.save(update_fields=["status", "failure_reason", "status_changed_at"])


def gallery_matrix_load(organisation: Organisation, version: str) -> GalleryMatrix:
    rows = list(
        Face.objects.filter(organisation=organisation, subject__isnull=False, engine_version=version).values_list(
            "id", "subject_id", "encoding"
        )
    )
    if not rows:
        return GalleryMatrix.build(np.zeros(0), np.zeros(0), np.zeros((0, 128)))
    face_ids, subject_ids, blobs = zip(*rows, strict=True)
    encodings = np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=np.float64).reshape(-1, 128)
    return GalleryMatrix.build(np.array(face_ids), np.array(subject_ids), encodings)


def organisation_gallery(organisation: Organisation) -> GalleryMatrix:
    version = engine_version()
    return gallery_cache.get(
        organisation.id,
        version,
        organisation.gallery_version,
        lambda: gallery_matrix_load(organisation, version),
    )


def probe_photo_search(*, photo_id: int) -> None:
    photo = Photo.objects.select_related("organisation").get(id=photo_id)
    organisation = Organisation.objects.get(id=photo.organisation_id)
    pending = list(photo.faces.filter(search__isnull=True).order_by("index"))
    if pending:
        gallery = organisation_gallery(organisation)
        hits = search_gallery(
            gallery,
            np.stack([face.vector for face in pending]),
            threshold=organisation.distance_threshold,
            k=organisation.max_candidates,
        )
    else:
        hits = []
    with transaction.atomic():
        locked = Photo.objects.select_for_update().get(id=photo_id)
        if locked.status == PhotoStatus.DONE:
            return
        already = set(Search.objects.filter(face__photo=locked).values_list("face_id", flat=True))
        for face, face_hits in zip(pending, hits, strict=True):
            if face.id in already:
                continue
            search = Search.objects.create(
                face=face,
                organisation=organisation,
                threshold=organisation.distance_threshold,
                max_candidates=organisation.max_candidates,
                engine_version=engine_version(),
                gallery_version=organisation.gallery_version,
                gallery_faces=gallery.size,
                candidate_count=len(face_hits),
            )
            Candidate.objects.bulk_create(
                Candidate(
                    search=search,
                    organisation=organisation,
                    case_id=photo.case_id,
                    subject_id=hit.subject_id,
                    reference_face_id=hit.face_id,
                    rank=rank,
                    distance=hit.distance,
                )
                for rank, hit in enumerate(face_hits, start=1)
            )
        locked.status = PhotoStatus.DONE
        locked.status_changed_at = timezone.now()
        locked.save(update_fields=["status", "status_changed_at"])
        audit_record(
            action="search.run",
            organisation=organisation,
            target=locked,
            detail={
                "faces": len(pending),
                "candidates": sum(len(h) for h in hits),
                "threshold": organisation.distance_threshold,
                "engine_version": engine_version(),
            },
        )


# Outcomes


class CandidateAlreadyDecided(ServiceError):
    pass


@transaction.atomic
def candidate_set_outcome(*, candidate_id: int, outcome: str, reason: str, acting_user: Any) -> Candidate:
    """Close a candidate. Only the review workflow calls this; a decided candidate stays decided."""
    if outcome not in (Outcome.CONFIRMED, Outcome.REJECTED):
        raise ServiceError("A candidate can only be confirmed or rejected.")
    if not reason.strip():
        raise ServiceError("A written reason is required.")
    candidate = Candidate.objects.select_for_update().get(id=candidate_id)
    if candidate.outcome != Outcome.PENDING:
        raise CandidateAlreadyDecided(f"This candidate was already {candidate.get_outcome_display().lower()}.")
    candidate.outcome = outcome
    candidate.outcome_by = acting_user
    candidate.outcome_reason = reason.strip()
    candidate.outcome_at = timezone.now()
    candidate.save(update_fields=["outcome", "outcome_by", "outcome_reason", "outcome_at"])
    return candidate


# Bulk enrolment


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
    from matching.tasks import process_enrolment_batch

    batch_id = batch.id
    transaction.on_commit(lambda: process_enrolment_batch.delay(batch_id))
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
                },
            )
            photo = _photo_store(
                files=files,
                organisation=batch.gallery.organisation,
                kind=PhotoKind.REFERENCE,
                upload=UploadedImage(name=row.file, image=image),
                subject=subject,
            )
            reference_faces_store(photo=photo, detected=detected, files=files)
        entry.update(status="enrolled", detail="new subject" if created else "photo added to existing subject")
    except (ImageRejected, ServiceError, bulk.BulkRejected, IntegrityError) as error:
        entry.update(status="refused", detail=str(error))
    return entry


def enrolment_batch_process(*, batch_id: int) -> None:
    """Enrol each row in its own transaction, saving the report as it goes; a rerun resumes."""
    claimed = EnrolmentBatch.objects.filter(id=batch_id, status__in=[BatchStatus.QUEUED, BatchStatus.RUNNING]).update(
        status=BatchStatus.RUNNING
    )
    if not claimed:
        return
    batch = EnrolmentBatch.objects.select_related("gallery__organisation").get(id=batch_id)
    try:
        with batch.manifest.open("rb") as handle:
            rows = bulk.manifest_parse(handle.read())
        with batch.archive.open("rb") as handle, bulk.SafeArchive(handle.read()) as archive:
            done = {entry["line"] for entry in batch.report}
            for row in rows:
                if row.line in done:
                    continue
                entry = _batch_row_enrol(batch, row, archive)
                batch.report = [*batch.report, entry]
                batch.rows_done = len(batch.report)
                batch.save(update_fields=["report", "rows_done"])
    except bulk.BulkRejected as error:
        batch.status = BatchStatus.FAILED
        batch.failure_reason = str(error)[:500]
    else:
        batch.status = BatchStatus.DONE
    batch.finished_at = timezone.now()
    batch.save(update_fields=["status", "failure_reason", "finished_at"])
    audit_record(
        action="gallery.bulk_enrol",
        actor=batch.created_by,
        organisation=batch.gallery.organisation,
        target=batch,
        detail={"enrolled": batch.enrolled_count, "refused": batch.refused_count},
    )
