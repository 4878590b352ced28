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
from django.db.models import Count, F, Q
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
from matching.sealing import encoding_seal, encodings_open
from matching.search import GalleryMatrix, Hit, Shard, gallery_cache, hits_merge, search_gallery, shards_plan
from portal.audit import audit_record
from portal.models import Organisation
from portal.outbox import outbox_enqueue, queue_depth

logger = logging.getLogger(__name__)

WORKING = (PhotoStatus.DETECTING, PhotoStatus.MATCHING)


def _stale_before(now):
    """A photo left in a working state since before this is taken to belong to a lost worker."""
    return now - timedelta(seconds=settings.PHOTO_STALE_AFTER_SECONDS)


class ServiceError(Exception):
    """A refusal with a message meant for the user."""


USE_CASE_REFUSAL = (
    "Matching is not enabled for this organisation yet: a superuser must first record its permitted purpose "
    "and legal basis. The photo is stored and can be searched once that is done."
)


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
    if organisation.keep_originals and upload.raw:
        # The cleaned copy is what the portal uses; the original is evidence, kept only by choice.
        files.save(photo.original, f"{uuid.uuid4().hex}.{upload.image.source_format.lower()}", upload.raw)
    photo.save()
    return photo


def _queue_photo(photo: Photo) -> None:
    # In the caller's transaction: the task is sent if and only if the photo is committed,
    # and a broker outage delays it rather than failing the upload.
    outbox_enqueue("matching.tasks.process_photo", photo.id)


# Galleries and subjects


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
    try:
        # A savepoint, so that two simultaneous uploads with one reference end in a message, not a server error.
        with transaction.atomic():
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
    except IntegrityError:
        raise ServiceError(f"A case with reference “{reference}” already exists.") from None
    with StoredFiles() as files:
        for upload in photos:
            photo = _photo_store(files=files, organisation=organisation, kind=PhotoKind.PROBE, upload=upload, case=case)
            _queue_photo(photo)
    audit_record(
        action="case.create", actor=acting_user, organisation=organisation, target=case, detail={"photos": len(photos)}
    )
    return case


@transaction.atomic
def case_add_photos(*, case: Case, photos: list[UploadedImage], acting_user: Any) -> list[Photo]:
    """Add probe photos to an existing case; each is processed in the background like the first ones."""
    if not photos:
        raise ServiceError("Add at least one probe photo.")
    # Concurrent uploads to one case run one after another, so that each audit
    # row's running total is exact.
    case = Case.objects.select_for_update().select_related("organisation").get(pk=case.pk)
    added = []
    with StoredFiles() as files:
        for upload in photos:
            photo = _photo_store(
                files=files, organisation=case.organisation, kind=PhotoKind.PROBE, upload=upload, case=case
            )
            _queue_photo(photo)
            added.append(photo)
    audit_record(
        action="case.add_photos",
        actor=acting_user,
        organisation=case.organisation,
        target=case,
        detail={"photos": len(photos), "photos_total": case.photos.count()},
    )
    return added


# Processing


def photo_claim(*, photo_id: int) -> bool:
    """Take a photo for processing. False when another worker has it, it is finished, or it has used its attempts.

    A photo left working by a lost worker is taken again once stale. Each claim
    counts an attempt, so a photo that kills its worker every time ends failed.
    """
    now = timezone.now()
    claimable = Photo.objects.filter(
        Q(status=PhotoStatus.QUEUED) | Q(status__in=WORKING, status_changed_at__lt=_stale_before(now)),
        id=photo_id,
        attempts__lt=settings.PHOTO_MAX_ATTEMPTS,
    )
    if claimable.update(status=PhotoStatus.DETECTING, attempts=F("attempts") + 1, status_changed_at=now):
        return True
    photos_give_up(photo_ids=[photo_id], now=now)
    return False


def photos_give_up(*, photo_ids: list[int] | None = None, now: Any = None) -> int:
    """Fail the photos that were claimed PHOTO_MAX_ATTEMPTS times and never finished."""
    now = now or timezone.now()
    limit = settings.PHOTO_MAX_ATTEMPTS
    exhausted = Photo.objects.filter(
        Q(status=PhotoStatus.QUEUED) | Q(status__in=WORKING, status_changed_at__lt=_stale_before(now)),
        attempts__gte=limit,
    )
    if photo_ids is not None:
        exhausted = exhausted.filter(id__in=photo_ids)
    # Read first: usually there is nothing to fail, and an UPDATE would take SQLite's one write lock anyway.
    if not exhausted.exists():
        return 0
    return exhausted.update(
        status=PhotoStatus.FAILED,
        failure_reason=f"Processing was interrupted {limit} times; giving up.",
        status_changed_at=now,
    )


def photo_requeue(*, photo_id: int) -> bool:
    """Hand a photo back for a retry after a transient error. False when it has no attempt left."""
    Photo.objects.filter(id=photo_id, status__in=WORKING).update(
        status=PhotoStatus.QUEUED, status_changed_at=timezone.now()
    )
    return Photo.objects.filter(
        id=photo_id, status=PhotoStatus.QUEUED, attempts__lt=settings.PHOTO_MAX_ATTEMPTS
    ).exists()


@dataclass(frozen=True)
class SweepResult:
    requeued: int
    resent: int
    given_up: int


def photos_requeue_stale(*, limit: int = 500) -> SweepResult:
    """Send again the photos whose task was lost; fail those that used every attempt.

    A photo still working after PHOTO_STALE_AFTER_SECONDS lost its worker: it is
    queued again. A photo queued for PHOTO_QUEUED_RESEND_SECONDS lost its
    message (a prefetched task dies with its worker and comes back only after
    the broker's visibility timeout); with Redis it is resent only once the
    photo queue is empty, so that a long backlog is not sent twice. Duplicates
    are harmless: only one claim succeeds.
    """
    now = timezone.now()
    given_up = photos_give_up(now=now)
    stale_photos = Photo.objects.filter(status__in=WORKING, status_changed_at__lt=_stale_before(now))
    lost_photos = Photo.objects.filter(
        status=PhotoStatus.QUEUED,
        status_changed_at__lt=now - timedelta(seconds=settings.PHOTO_QUEUED_RESEND_SECONDS),
    )
    resend_lost = lost_photos.exists() and not queue_depth()
    # Most sweeps find nothing to do, and then they only read.
    if not resend_lost and not stale_photos.exists():
        return SweepResult(requeued=0, resent=0, given_up=given_up)
    with transaction.atomic():
        stale = list(stale_photos.select_for_update(skip_locked=True).values_list("id", flat=True)[:limit])
        Photo.objects.filter(id__in=stale, status__in=WORKING).update(status=PhotoStatus.QUEUED, status_changed_at=now)
        lost: list[int] = []
        if resend_lost:
            lost = list(lost_photos.select_for_update(skip_locked=True).values_list("id", flat=True)[:limit])
            Photo.objects.filter(id__in=lost).update(status_changed_at=now)
        for photo_id in [*stale, *lost]:
            outbox_enqueue("matching.tasks.process_photo", photo_id)
    if stale or lost or given_up:
        logger.warning("photo sweep: %s stale requeued, %s lost resent, %s given up", len(stale), len(lost), given_up)
    return SweepResult(requeued=len(stale), resent=len(lost), given_up=given_up)


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
            encoding=encoding_seal(found.encoding),
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
    if photo.kind == PhotoKind.PROBE and photo.organisation.use_case_approved_at is None:
        photo_fail(photo_id=photo_id, reason=USE_CASE_REFUSAL)
        return
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


def gallery_matrix_load(
    organisation: Organisation, version: str, *, subject_from: int | None = None, subject_to: int | None = None
) -> GalleryMatrix:
    """The organisation's reference faces as a matrix; with a subject-id range, only that shard's rows."""
    faces = Face.objects.filter(
        organisation=organisation, subject__isnull=False, engine_version=version, purged_at__isnull=True
    )
    if subject_from:
        faces = faces.filter(subject_id__gte=subject_from)
    if subject_to is not None:
        faces = faces.filter(subject_id__lt=subject_to)
    rows = list(faces.values_list("id", "subject_id", "encoding"))
    if not rows:
        return GalleryMatrix.build(np.zeros(0), np.zeros(0), np.zeros((0, 128)))
    face_ids, subject_ids, blobs = zip(*rows, strict=True)
    encodings = encodings_open(blobs)
    return GalleryMatrix.build(np.array(face_ids), np.array(subject_ids), encodings)


def gallery_shards(organisation: Organisation, version: str) -> list[Shard]:
    """How the organisation's gallery is cut for search: one shard when it fits one worker's budget.

    Cached per process with the gallery version, like the matrix, so a warm search costs no query here.
    """
    max_faces = settings.SEARCH_SHARD_MAX_FACES

    def plan() -> list[Shard]:
        faces = Face.objects.filter(
            organisation=organisation, subject__isnull=False, engine_version=version, purged_at__isnull=True
        )
        total = faces.count()
        if total <= max_faces:
            return [Shard(index=0, subject_from=0, subject_to=None, faces=total)]
        counts = list(faces.values_list("subject_id").annotate(n=Count("id")).order_by("subject_id"))
        subject_ids, face_counts = zip(*counts, strict=True)
        return shards_plan(np.array(subject_ids), np.array(face_counts), max_faces)

    return gallery_cache.plan(organisation.id, version, organisation.gallery_version, max_faces, plan)


def organisation_gallery(organisation: Organisation, shard: Shard | None = None) -> GalleryMatrix:
    """The cached matrix of the whole gallery, or of one shard; rebuilt whenever gallery_version moves."""
    version = engine_version()
    if shard is None:
        return gallery_cache.get(
            organisation.id,
            version,
            organisation.gallery_version,
            lambda: gallery_matrix_load(organisation, version),
        )
    return gallery_cache.get(
        organisation.id,
        version,
        organisation.gallery_version,
        lambda: gallery_matrix_load(
            organisation, version, subject_from=shard.subject_from, subject_to=shard.subject_to
        ),
        shard=(shard.subject_from, shard.subject_to),
        max_faces=settings.SEARCH_SHARD_MAX_FACES,
    )


def probe_photo_search(*, photo_id: int) -> None:
    """Search the photo's new faces against the gallery and store the results (or fan out, see below).

    A gallery within one worker's budget (SEARCH_SHARD_MAX_FACES) is searched here, in this task. A larger
    one is searched as a chord of shard tasks on the "search" queue whose callback stores the results; this
    task returns at once rather than waiting on the group, so a single worker never blocks on work that
    only it could run. Until the callback runs, the photo stays "matching" (and the stale-photo sweeper
    sends it again if the chord is lost).
    """
    photo = Photo.objects.select_related("organisation").get(id=photo_id)
    organisation = Organisation.objects.get(id=photo.organisation_id)
    pending = list(photo.faces.filter(search__isnull=True).order_by("index"))
    threshold, k = organisation.distance_threshold, organisation.max_candidates
    if not pending:
        search_results_store(
            photo_id=photo_id,
            face_hits={},
            threshold=threshold,
            max_candidates=k,
            gallery_version=organisation.gallery_version,
            gallery_faces=0,
        )
        return
    shards = gallery_shards(organisation, engine_version())
    if len(shards) > 1:
        _search_fan_out(photo_id, [face.id for face in pending], shards, organisation, threshold, k)
        return
    gallery = organisation_gallery(organisation)
    hits = search_gallery(gallery, np.stack([face.vector for face in pending]), threshold=threshold, k=k)
    search_results_store(
        photo_id=photo_id,
        face_hits={face.id: face_hits for face, face_hits in zip(pending, hits, strict=True)},
        threshold=threshold,
        max_candidates=k,
        gallery_version=organisation.gallery_version,
        gallery_faces=gallery.size,
    )


def _search_fan_out(
    photo_id: int, face_ids: list[int], shards: list[Shard], organisation: Organisation, threshold: float, k: int
) -> None:
    # Sent straight from the worker, not through the outbox: this runs in a task, not in a request's
    # transaction, and if the broker refuses the chord the task fails and the photo is retried.
    from celery import chord

    from matching.tasks import search_shard, store_search_results

    header = [
        search_shard.s(organisation.id, face_ids, shard.subject_from, shard.subject_to, threshold, k)
        for shard in shards
    ]
    chord(header)(store_search_results.s(photo_id, threshold, k, organisation.gallery_version))


def gallery_shard_search(
    *,
    organisation_id: int,
    face_ids: list[int],
    subject_from: int,
    subject_to: int | None,
    threshold: float,
    k: int,
) -> dict[str, Any]:
    """One shard's hits for the given probe faces, as JSON for the chord's callback."""
    organisation = Organisation.objects.get(id=organisation_id)  # fresh: an erasure counts at once
    faces = {face.id: face for face in Face.objects.filter(id__in=face_ids)}
    probes = [faces[i] for i in face_ids if i in faces]
    shard = Shard(index=-1, subject_from=subject_from, subject_to=subject_to, faces=0)
    gallery = organisation_gallery(organisation, shard)
    hits = search_gallery(gallery, np.stack([f.vector for f in probes]), threshold=threshold, k=k) if probes else []
    return {
        "faces": gallery.size,
        "hits": [
            [face.id, [[h.subject_id, h.face_id, h.distance] for h in face_hits]]
            for face, face_hits in zip(probes, hits, strict=True)
        ],
    }


def shard_results_store(
    *, photo_id: int, shard_results: list[dict[str, Any]], threshold: float, k: int, gallery_version: int
) -> None:
    """Merge the shards' top k per face (subjects never straddle shards, so this is exact) and store them."""
    per_face: dict[int, list[list[Hit]]] = {}
    for result in shard_results:
        for face_id, hits in result["hits"]:
            per_face.setdefault(face_id, []).append([Hit(int(s), int(f), float(d)) for s, f, d in hits])
    search_results_store(
        photo_id=photo_id,
        face_hits={face_id: hits_merge(parts, k) for face_id, parts in per_face.items()},
        threshold=threshold,
        max_candidates=k,
        gallery_version=gallery_version,
        gallery_faces=sum(result["faces"] for result in shard_results),
        shards=len(shard_results),
    )


def search_results_store(
    *,
    photo_id: int,
    face_hits: dict[int, list[Hit]],
    threshold: float,
    max_candidates: int,
    gallery_version: int,
    gallery_faces: int,
    shards: int = 1,
) -> None:
    """Store a Search per face and its Candidates, and finish the photo. Safe to run twice."""
    with transaction.atomic():
        locked = Photo.objects.select_for_update().get(id=photo_id)
        if locked.status == PhotoStatus.DONE:
            return
        organisation = Organisation.objects.get(id=locked.organisation_id)
        already = set(Search.objects.filter(face__photo=locked).values_list("face_id", flat=True))
        faces = Face.objects.filter(id__in=list(face_hits)).order_by("index")
        for face in faces:
            if face.id in already:
                continue
            hits = face_hits[face.id]
            search = Search.objects.create(
                face=face,
                organisation=organisation,
                threshold=threshold,
                max_candidates=max_candidates,
                engine_version=engine_version(),
                gallery_version=gallery_version,
                gallery_faces=gallery_faces,
                candidate_count=len(hits),
            )
            Candidate.objects.bulk_create(
                Candidate(
                    search=search,
                    organisation=organisation,
                    case_id=locked.case_id,
                    subject_id=hit.subject_id,
                    reference_face_id=hit.face_id,
                    rank=rank,
                    distance=hit.distance,
                )
                for rank, hit in enumerate(hits, start=1)
            )
        locked.status = PhotoStatus.DONE
        locked.status_changed_at = timezone.now()
        locked.save(update_fields=["status", "status_changed_at"])
        detail = {
            "faces": len(face_hits),
            "candidates": sum(len(h) for h in face_hits.values()),
            "threshold": threshold,
            "engine_version": engine_version(),
        }
        if shards > 1:
            detail["shards"] = shards
        audit_record(action="search.run", organisation=organisation, target=locked, detail=detail)


# Outcomes


class CandidateAlreadyDecided(ServiceError):
    pass


OPEN_OUTCOMES = (Outcome.PENDING, Outcome.ESCALATED)


@transaction.atomic
def candidate_set_outcome(*, candidate_id: int, outcome: str, reason: str, acting_user: Any) -> Candidate:
    """Move a candidate on. Only the review workflow calls this; a confirmed or rejected candidate stays so."""
    if outcome not in (Outcome.CONFIRMED, Outcome.REJECTED, Outcome.ESCALATED):
        raise ServiceError("A candidate can only be confirmed, rejected or escalated.")
    if not reason.strip():
        raise ServiceError("A written reason is required.")
    candidate = Candidate.objects.select_for_update().get(id=candidate_id)
    if candidate.outcome not in OPEN_OUTCOMES or (
        outcome == Outcome.ESCALATED and candidate.outcome == Outcome.ESCALATED
    ):
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


# Biometric data: erasure, retention, closing cases


def _face_purge(face: Face, now) -> None:
    if face.crop:
        face.crop.storage.delete(face.crop.name)
    Face.objects.filter(pk=face.pk).update(encoding=b"", crop="", purged_at=now)


def _photo_purge(photo: Photo, now) -> None:
    for field_file in (photo.image, photo.original):
        if field_file:
            field_file.storage.delete(field_file.name)
    for face in photo.faces.all():
        _face_purge(face, now)
    Photo.objects.filter(pk=photo.pk).update(image="", original="", purged_at=now)


@transaction.atomic
def subject_erase(*, subject: Subject, acting_user: Any) -> None:
    """Delete a subject's reference photos, crops and encodings everywhere, keeping a tombstone for history.

    Open candidates that point at the subject are closed, since nobody can compare against a photo that is
    gone; decided ones keep their record without the biometrics.
    """
    subject = Subject.objects.select_for_update().select_related("gallery__organisation").get(pk=subject.pk)
    if subject.erased_at is not None:
        return
    organisation = subject.gallery.organisation
    now = timezone.now()
    photos = list(subject.photos.all())
    for photo in photos:
        _photo_purge(photo, now)
    Face.objects.filter(subject=subject).exclude(purged_at__isnull=False).update(encoding=b"", crop="", purged_at=now)
    for candidate in Candidate.objects.filter(subject=subject, outcome__in=OPEN_OUTCOMES):
        candidate_set_outcome(
            candidate_id=candidate.pk,
            outcome=Outcome.REJECTED,
            reason="The subject was erased from the gallery before review finished.",
            acting_user=acting_user,
        )
    subject.erased_at = now
    subject.display_name = ""
    subject.save(update_fields=["erased_at", "display_name"])
    # Every worker's cached gallery matrix is keyed by this counter, so the next search reloads without them.
    Organisation.objects.filter(pk=organisation.pk).update(gallery_version=F("gallery_version") + 1)
    audit_record(
        action="subject.erase",
        actor=acting_user,
        organisation=organisation,
        target=subject,
        detail={"code": subject.code, "photos": len(photos)},
    )


@transaction.atomic
def case_close(*, case: Case, acting_user: Any) -> Case:
    case = Case.objects.select_for_update().get(pk=case.pk)
    if case.closed_at is None:
        case.closed_at = timezone.now()
        case.save(update_fields=["closed_at"])
        audit_record(action="case.close", actor=acting_user, organisation_id=case.organisation_id, target=case)
    return case


def cases_purge_expired(*, now=None) -> int:
    """Purge probe photos, crops and encodings of cases closed longer than their organisation's retention.

    Searches, candidates, decisions and the audit log stay, without biometrics. Each case is purged in its
    own transaction, so a failure leaves the others done and itself untouched.
    """
    now = now or timezone.now()
    purged = 0
    due = Case.objects.filter(
        closed_at__isnull=False, purged_at__isnull=True, organisation__retention_days__isnull=False
    ).select_related("organisation")
    for case in due:
        if case.closed_at + timedelta(days=case.organisation.retention_days) > now:
            continue
        with transaction.atomic():
            locked = Case.objects.select_for_update().get(pk=case.pk)
            if locked.purged_at is not None:
                continue
            photos = list(locked.photos.all())
            for photo in photos:
                _photo_purge(photo, now)
            locked.purged_at = now
            locked.save(update_fields=["purged_at"])
            audit_record(
                action="case.purge",
                organisation=case.organisation,
                target=locked,
                detail={"photos": len(photos), "retention_days": case.organisation.retention_days},
            )
        purged += 1
    return purged
