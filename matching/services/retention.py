"""Biometric data: erasing a subject, closing cases, and purging closed cases after their retention.

Every copy or derivative of a face the portal keeps is listed in the README ("Protecting biometric data");
each is deleted here, through the storage API so that S3 behaves like the local disk. Apps to the right of
matching (reviews keeps disclosure reports) register a listener with `biometrics_listener_register`, and are
told in the same transaction which cases an erasure or a purge touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from matching.models import (
    Candidate,
    Case,
    EnrolmentBatch,
    Face,
    Outcome,
    Photo,
    Subject,
)
from matching.services.cases import candidate_set_outcome
from matching.services.exceptions import ServiceError
from matching.services.searching import gallery_change_record
from portal import access
from portal.audit import audit_record
from portal.models import Organisation


@dataclass(frozen=True)
class BiometricsRemoved:
    """What an erasure or a purge took away, for the apps that keep copies elsewhere."""

    kind: str  # "subject.erase" or "case.purge"
    organisation_id: int
    case_ids: list[int]
    acting_user: Any = None
    subject_code: str = ""


_listeners: list[Callable[[BiometricsRemoved], None]] = []


def biometrics_listener_register(listener: Callable[[BiometricsRemoved], None]) -> None:
    """Called from an app's ready(): the listener runs inside the erasure's or purge's transaction."""
    if listener not in _listeners:
        _listeners.append(listener)


def _listeners_tell(event: BiometricsRemoved) -> None:
    for listener in _listeners:
        listener(event)


def field_file_delete(field_file) -> None:
    """Delete a stored file through its storage (local disk or S3); a file already gone is no error."""
    if field_file and field_file.name:
        field_file.storage.delete(field_file.name)


def _batch_reports_redact(subject: Subject) -> int:
    """Take an erased subject's code and file names out of the gallery's import reports; the counts stay."""
    redacted = 0
    for batch in EnrolmentBatch.objects.select_for_update(no_key=True).filter(gallery_id=subject.gallery_id):
        report = []
        changed = False
        for entry in batch.report:
            if entry.get("code") == subject.code:
                entry = {**entry, "code": "", "file": "", "detail": "The subject was erased."}
                changed = True
            report.append(entry)
        if changed:
            batch.report = report
            batch.save(update_fields=["report"])
            redacted += 1
    return redacted


FACE_FILES_EMPTY = {"crop": "", "aligned": "", "thumbnail": ""}


def _face_purge(face: Face, now) -> None:
    for field_file in (face.crop, face.aligned, face.thumbnail):
        field_file_delete(field_file)
    Face.objects.filter(pk=face.pk).update(encoding=b"", purged_at=now, **FACE_FILES_EMPTY)


def photo_purge(photo: Photo, now) -> None:
    """Delete a photo's files and its faces' biometrics, keeping the rows. Called under the lock of its subject
    or case (see `photo_process_store`)."""
    for field_file in (photo.image, photo.original):
        field_file_delete(field_file)
    # Locked, so that a backfill writing a face's aligned image (faces_review_images_backfill) either finishes
    # first, and its files are read and deleted here, or finds the face purged.
    for face in photo.faces.select_for_update(no_key=True):
        _face_purge(face, now)
    Photo.objects.filter(pk=photo.pk).update(image="", original="", purged_at=now)


@transaction.atomic
def subject_erase(*, subject: Subject, acting_user: Any) -> None:
    """Delete a subject's reference photos, crops and encodings everywhere, keeping a tombstone for history.

    Open candidates that point at the subject are closed, since nobody can compare against a photo that is
    gone; decided ones keep their record without the biometrics.
    """
    # The subject's row only (not its gallery's or organisation's): a worker storing one of its photos takes the
    # subject first too, so the two run one after the other, and either the worker finds the subject erased or
    # this finds its face (photo_process_store).
    subject = (
        Subject.objects.select_for_update(no_key=True, of=("self",))
        .select_related("gallery__organisation")
        .get(pk=subject.pk)
    )
    if subject.erased_at is not None:
        return
    organisation = subject.gallery.organisation
    now = timezone.now()
    photos = list(subject.photos.all())
    face_ids = list(Face.objects.filter(subject=subject, purged_at__isnull=True).values_list("id", flat=True))
    for photo in photos:
        photo_purge(photo, now)
    Face.objects.filter(subject=subject).exclude(purged_at__isnull=False).update(
        encoding=b"", purged_at=now, **FACE_FILES_EMPTY
    )
    for candidate in Candidate.objects.open().filter(subject=subject):
        candidate_set_outcome(
            candidate_id=candidate.pk,
            outcome=Outcome.REJECTED,
            reason="The subject was erased from the gallery before review finished.",
            acting_user=acting_user,
        )
    subject.erased_at = now
    subject.display_name = ""
    subject.save(update_fields=["erased_at", "display_name"])
    redacted = _batch_reports_redact(subject)
    # Every worker's cached gallery catches up with this change at its next search, and drops these faces.
    gallery_change_record(organisation_id=organisation.pk, removed=face_ids)
    audit_record(
        action="subject.erase",
        actor=acting_user,
        organisation=organisation,
        target=subject,
        detail={"code": subject.code, "photos": len(photos), "import_reports_redacted": redacted},
    )
    case_ids = sorted(set(Candidate.objects.filter(subject=subject).values_list("case_id", flat=True)))
    _listeners_tell(
        BiometricsRemoved(
            kind="subject.erase",
            organisation_id=organisation.pk,
            case_ids=case_ids,
            acting_user=acting_user,
            subject_code=subject.code,
        )
    )


@transaction.atomic
def case_close(*, case: Case, acting_user: Any, reason: str) -> Case:
    """Close a case: its retention period starts now, and the beat sweep purges its biometrics when it ends."""
    case = Case.objects.select_for_update(no_key=True).select_related("organisation").get(pk=case.pk)
    if not (access.can_close_case(acting_user) and access.same_organisation(acting_user, case.organisation_id)):
        raise ServiceError("Only the organisation's caseworkers and admins may close its cases.")
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Give a reason for closing the case.")
    if len(reason) > 2000:
        raise ServiceError("The reason is too long (2000 characters at most).")
    if case.closed_at is not None:
        raise ServiceError("This case is already closed.")
    case.closed_at = timezone.now()
    case.closed_by = acting_user
    case.close_reason = reason
    case.save(update_fields=["closed_at", "closed_by", "close_reason"])
    due = case.purge_due_at
    audit_record(
        action="case.close",
        actor=acting_user,
        organisation_id=case.organisation_id,
        target=case,
        detail={"reason": reason, "purge_due_at": due.isoformat() if due else None},
    )
    return case


@transaction.atomic
def case_reopen(*, case: Case, acting_user: Any, reason: str = "") -> Case:
    """Reopen a closed case before it is purged; its retention clock stops. Org admins only."""
    case = Case.objects.select_for_update(no_key=True).select_related("organisation").get(pk=case.pk)
    if not (access.can_reopen_case(acting_user) and access.same_organisation(acting_user, case.organisation_id)):
        raise ServiceError("Only the organisation's admins may reopen a case.")
    if case.purged_at is not None:
        raise ServiceError("This case's photos were purged; it cannot be reopened.")
    if case.closed_at is None:
        raise ServiceError("This case is open.")
    closed = {"closed_at": case.closed_at.isoformat(), "close_reason": case.close_reason}
    case.closed_at = None
    case.closed_by = None
    case.close_reason = ""
    case.save(update_fields=["closed_at", "closed_by", "close_reason"])
    audit_record(
        action="case.reopen",
        actor=acting_user,
        organisation_id=case.organisation_id,
        target=case,
        detail={**closed, "reason": (reason or "").strip()[:2000]},
    )
    return case


def cases_purge_expired(*, now=None) -> int:
    """Purge probe photos, crops and encodings of cases closed longer than their organisation's retention.

    Searches, candidates, decisions and the audit log stay, without biometrics. Each case is purged in its
    own transaction, so a failure leaves the others done and itself untouched.
    """
    now = now or timezone.now()
    return sum(case_purge_if_due(case_id=case_id, now=now) for case_id in cases_due_for_purge(now=now))


def cases_due_for_purge(*, now) -> list[int]:
    """The cases whose retention had ended at `now`, as read without a lock: each is decided again, under its
    lock, by `case_purge_if_due`."""
    due = Case.objects.filter(
        closed_at__isnull=False, purged_at__isnull=True, organisation__retention_days__isnull=False
    ).select_related("organisation")
    return [case.pk for case in due.order_by("pk") if case.purge_due_at <= now]


@transaction.atomic
def case_purge_if_due(*, case_id: int, now) -> bool:
    """Purge one case if, under its row lock, it is still closed and its retention, under the organisation's
    current setting, has ended. A case reopened, or given a longer retention, since the sweep listed it keeps
    its photos. A worker storing one of its photos takes the case's row first too (photo_process_store)."""
    locked = Case.objects.select_for_update(no_key=True).get(pk=case_id)
    # Read after the lock, in its own statement, so that a retention changed while this waited is seen.
    locked.organisation = Organisation.objects.get(pk=locked.organisation_id)
    due = locked.purge_due_at
    if due is None or due > now:
        return False
    photos = list(locked.photos.all())
    for photo in photos:
        photo_purge(photo, now)
    locked.purged_at = now
    locked.save(update_fields=["purged_at"])
    audit_record(
        action="case.purge",
        organisation=locked.organisation,
        target=locked,
        detail={"photos": len(photos), "retention_days": locked.organisation.retention_days},
    )
    _listeners_tell(BiometricsRemoved(kind="case.purge", organisation_id=locked.organisation_id, case_ids=[locked.pk]))
    return True


# Read-only: what a change of the retention period does to closed cases, shown on /settings/ before it is made.


def retention_change_effect(
    *, organisation: Any, retention_days: int | None, now=None
) -> dict[str, list[dict[str, Any]]]:
    """Which closed cases not yet purged a new retention period moves, and how. Writes nothing.

    A closed case is purged at its closing time plus the period in force when the sweep runs, so a change moves
    every such case at once. "due_now": due under the new period and not under the old one, purged by the next
    sweep; "earlier": brought forward, still ahead; "later": postponed; "no_longer": kept until erased by hand.
    Each case: case_id, reference, closed_at, due_before, due_after (None: never), oldest closed first.
    """
    now = now or timezone.now()
    previous = organisation.retention_days
    effect: dict[str, list[dict[str, Any]]] = {"due_now": [], "earlier": [], "later": [], "no_longer": []}
    if previous == retention_days:
        return effect
    closed = Case.objects.filter(organisation=organisation, closed_at__isnull=False, purged_at__isnull=True)
    for case_id, reference, closed_at in closed.order_by("closed_at", "pk").values_list("pk", "reference", "closed_at"):
        before = closed_at + timedelta(days=previous) if previous is not None else None
        after = closed_at + timedelta(days=retention_days) if retention_days is not None else None
        row = {
            "case_id": case_id,
            "reference": reference,
            "closed_at": closed_at,
            "due_before": before,
            "due_after": after,
        }
        if after is None:
            effect["no_longer"].append(row)
        elif after <= now:
            if before is None or before > now:
                effect["due_now"].append(row)
        elif before is None or after < before:
            effect["earlier"].append(row)
        else:
            effect["later"].append(row)
    return effect
