"""Processing one photo: claimed by one worker at a time, detected, encoded, then searched.

Every step is safe to run twice; lost and stuck photos are found by the sweeper here."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from matching.engine import ENGINE_NAME, DetectedFace, detect_faces, engine_version
from matching.imaging import ImageRejected, rgb_array
from matching.models import (
    Case,
    Face,
    Photo,
    PhotoKind,
    PhotoStatus,
    Subject,
)
from matching.sealing import encoding_seal
from matching.services.retention import photo_purge
from matching.services.searching import gallery_change_record, probe_photo_search
from matching.services.thresholds import photo_hold_for_threshold
from matching.services.uploads import StoredFiles
from portal.outbox import outbox_enqueue, queue_depth

logger = logging.getLogger(__name__)


WORKING = (PhotoStatus.DETECTING, PhotoStatus.MATCHING)


def _stale_before(now):
    """A photo left in a working state since before this is taken to belong to a lost worker."""
    return now - timedelta(seconds=settings.PHOTO_STALE_AFTER_SECONDS)


USE_CASE_REFUSAL = (
    "Matching is not enabled for this organisation yet: a superuser must first record its permitted purpose "
    "and legal basis. The photo is stored and can be searched once that is done."
)


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
        stale = list(stale_photos.select_for_update(skip_locked=True, no_key=True).values_list("id", flat=True)[:limit])
        Photo.objects.filter(id__in=stale, status__in=WORKING).update(status=PhotoStatus.QUEUED, status_changed_at=now)
        lost: list[int] = []
        if resend_lost:
            lost = list(
                lost_photos.select_for_update(skip_locked=True, no_key=True).values_list("id", flat=True)[:limit]
            )
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
        review_images=True,
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
        if found.aligned_jpeg:
            files.save(face.aligned, f"{uuid.uuid4().hex}.jpg", found.aligned_jpeg)
        if found.thumbnail_jpeg:
            files.save(face.thumbnail, f"{uuid.uuid4().hex}.jpg", found.thumbnail_jpeg)
        faces.append(face)
    return Face.objects.bulk_create(faces)


def photo_process(*, photo_id: int) -> None:
    """Detect, encode and (for probes) search one photo. Safe to run twice.

    Two steps, with no lock held between them: detection, which takes seconds, and storing, which decides
    again under locks whether the photo, its subject or its case was erased or purged meanwhile."""
    detected = photo_process_detect(photo_id=photo_id)
    if detected is not None:
        photo_process_store(photo_id=photo_id, detected=detected)


def photo_process_detect(*, photo_id: int) -> list[DetectedFace] | None:
    """The first step: claim the photo and detect its faces, outside any transaction.

    None when there is nothing to store: another worker has the photo, it was refused or held, it is gone, or an
    earlier attempt stored its faces (then this finishes the photo: a reference is done, a probe is searched)."""
    if not photo_claim(photo_id=photo_id):
        return None
    photo = Photo.objects.select_related("organisation", "subject", "case").get(id=photo_id)
    if _gone_reason(photo):
        # Not worth detecting; the storing step says so under its locks.
        return []
    if photo.kind == PhotoKind.PROBE and photo.organisation.use_case_approved_at is None:
        photo_fail(photo_id=photo_id, reason=USE_CASE_REFUSAL)
        return None
    if photo.kind == PhotoKind.PROBE and photo.organisation.threshold_confirmed_at is None:
        if photo_hold_for_threshold(photo_id=photo_id, organisation_id=photo.organisation_id):
            return None
    if not photo.faces.exists():
        return photo_detect(photo)
    if photo.kind == PhotoKind.REFERENCE:
        Photo.objects.filter(id=photo_id).update(status=PhotoStatus.DONE, status_changed_at=timezone.now())
    else:
        probe_photo_search(photo_id=photo_id)
    return None


ERASED_IN_FLIGHT = "The subject was erased while this photo was being processed; nothing was stored."
PURGED_IN_FLIGHT = "The case's photos were purged while this photo was being processed; nothing was stored."


def _gone_reason(photo: Photo) -> str | None:
    """Why nothing may be stored for this photo (its subject erased, its case or itself purged), or None."""
    if photo.subject_id is not None and (photo.subject.erased_at is not None or photo.purged_at is not None):
        return ERASED_IN_FLIGHT
    if photo.case_id is not None and (photo.case.purged_at is not None or photo.purged_at is not None):
        return PURGED_IN_FLIGHT
    return None


def _photo_lock(photo_id: int) -> Photo:
    """Lock the photo's owner (its subject or case), then the photo, and read all three fresh.

    The owner first, as subject_erase and the case purge take it: an erasure or purge and a worker storing
    faces then run one after the other, never interleaved, and never deadlock on each other."""
    owner = Photo.objects.values("subject_id", "case_id").get(id=photo_id)
    if owner["subject_id"] is not None:
        list(Subject.objects.select_for_update(no_key=True).filter(pk=owner["subject_id"]).values_list("pk"))
    else:
        list(Case.objects.select_for_update(no_key=True).filter(pk=owner["case_id"]).values_list("pk"))
    # A statement of its own, after the owner's lock: it sees what an erasure or purge committed meanwhile.
    return Photo.objects.select_for_update(no_key=True, of=("self",)).select_related("subject", "case").get(id=photo_id)


def photo_process_store(*, photo_id: int, detected: list[DetectedFace]) -> None:
    """The second step: store the detected faces (a probe's are then searched), unless the photo, its subject or
    its case was erased or purged since the photo was claimed; then nothing is stored and the photo fails with
    the reason. Safe to run twice: a photo whose faces are stored, or which is finished, is left alone."""
    with StoredFiles() as files, transaction.atomic():
        locked = _photo_lock(photo_id)
        if locked.is_finished:
            return
        gone = _gone_reason(locked)
        if gone:
            _photo_abandon(locked, gone)
            return
        if locked.faces.exists():
            return
        if locked.kind == PhotoKind.REFERENCE:
            reference_faces_store(photo=locked, detected=detected, files=files)
            return
        _faces_store(locked, detected, files)
        locked.status = PhotoStatus.MATCHING
        locked.status_changed_at = timezone.now()
        locked.save(update_fields=["status", "status_changed_at"])
    probe_photo_search(photo_id=photo_id)


def _photo_abandon(photo: Photo, reason: str) -> None:
    """Fail a photo that is gone, under its locks. A photo whose owner is gone but which the erasure or purge
    never saw (no path adds one, but a row may be made by hand) loses its files here."""
    if photo.purged_at is None:
        photo_purge(photo, timezone.now())
    Photo.objects.filter(pk=photo.pk).update(
        status=PhotoStatus.FAILED, failure_reason=reason, status_changed_at=timezone.now()
    )


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
        faces = _faces_store(photo, detected, files)
        gallery_change_record(organisation_id=photo.organisation_id, added=[face.id for face in faces])
        photo.status = PhotoStatus.DONE
    photo.status_changed_at = timezone.now()
    photo.save(update_fields=["status", "failure_reason", "status_changed_at"])


def faces_review_images_backfill(*, limit: int | None = None) -> int:
    """Make the aligned image and thumbnail of faces detected before the worker stored them. Safe to run twice,
    and beside erasure: a face erased or purged meanwhile is skipped under its row lock."""
    from PIL import Image

    from matching.alignment import aligned_face_from_image
    from matching.imaging import thumbnail_jpeg

    made = 0
    waiting = (
        Face.objects.defer("encoding")
        .select_related("photo")
        .filter(aligned="", purged_at__isnull=True, photo__purged_at__isnull=True)
        .exclude(crop="")
        .order_by("pk")
    )
    for face in waiting[:limit] if limit is not None else waiting.iterator():
        try:
            with face.photo.image.open("rb") as handle, Image.open(handle) as source:
                aligned = aligned_face_from_image(source.convert("RGB"), (face.top, face.right, face.bottom, face.left))
            with face.crop.open("rb") as handle, Image.open(handle) as crop:
                thumbnail = thumbnail_jpeg(crop)
        except (OSError, ValueError):
            logger.warning("Face %s: its photo or crop cannot be read; no aligned image made.", face.pk)
            continue
        with StoredFiles() as files, transaction.atomic():
            locked = (
                Face.objects.select_for_update(no_key=True)
                .defer("encoding")
                .filter(pk=face.pk, aligned="", purged_at__isnull=True)
                .first()
            )
            if locked is None:
                continue
            files.save(locked.aligned, f"{uuid.uuid4().hex}.jpg", aligned)
            files.save(locked.thumbnail, f"{uuid.uuid4().hex}.jpg", thumbnail)
            locked.save(update_fields=["aligned", "thumbnail"])
        made += 1
    return made
