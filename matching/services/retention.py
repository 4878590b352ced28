"""Biometric data: erasing a subject, closing cases, and purging closed cases after their retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from matching.models import (
    Candidate,
    Case,
    Face,
    Outcome,
    Photo,
    Subject,
)
from matching.services.cases import OPEN_OUTCOMES, candidate_set_outcome
from portal.audit import audit_record
from portal.models import Organisation


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
