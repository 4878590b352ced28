"""Cases, their probe photos, and moving a candidate on to its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from matching.models import (
    Candidate,
    Case,
    Outcome,
    Photo,
    PhotoKind,
)
from matching.services.exceptions import CandidateAlreadyDecided, ServiceError
from matching.services.uploads import StoredFiles, UploadedImage, photo_queue, photo_store
from portal import access
from portal.audit import audit_record
from portal.models import Organisation


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
                accountable_by=access.accountable_human(acting_user),
            )
    except IntegrityError:
        raise ServiceError(f"A case with reference “{reference}” already exists.") from None
    with StoredFiles() as files:
        for upload in photos:
            photo = photo_store(files=files, organisation=organisation, kind=PhotoKind.PROBE, upload=upload, case=case)
            photo_queue(photo)
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
    case = Case.objects.select_for_update(no_key=True).select_related("organisation").get(pk=case.pk)
    if case.closed_at is not None:
        # A closed case's photos are waiting to be purged; new ones must not slip in beside them (or after).
        raise ServiceError("This case is closed; an org admin can reopen it to add photos.")
    added = []
    with StoredFiles() as files:
        for upload in photos:
            photo = photo_store(
                files=files, organisation=case.organisation, kind=PhotoKind.PROBE, upload=upload, case=case
            )
            photo_queue(photo)
            added.append(photo)
    audit_record(
        action="case.add_photos",
        actor=acting_user,
        organisation=case.organisation,
        target=case,
        detail={"photos": len(photos), "photos_total": case.photos.count()},
    )
    return added


@transaction.atomic
def candidate_set_outcome(
    *, candidate_id: int, outcome: str, reason: str, acting_user: Any, confirmed_by: Sequence[Any] = ()
) -> Candidate:
    """Move a candidate on. Only the review workflow calls this; a confirmed or rejected candidate stays so.

    `confirmed_by` names every reviewer whose confirmation counts towards a confirmed outcome (the acting
    user when empty), so that the caseworker sees all of them, not only the one who settled it.
    """
    if outcome not in (Outcome.CONFIRMED, Outcome.REJECTED, Outcome.ESCALATED):
        raise ServiceError("A candidate can only be confirmed, rejected or escalated.")
    if not reason.strip():
        raise ServiceError("A written reason is required.")
    candidate = Candidate.objects.select_for_update(no_key=True).get(id=candidate_id)
    if not candidate.is_open or (outcome == Outcome.ESCALATED and candidate.outcome == Outcome.ESCALATED):
        raise CandidateAlreadyDecided(f"This candidate was already {candidate.get_outcome_display().lower()}.")
    candidate.outcome = outcome
    candidate.outcome_by = acting_user
    candidate.outcome_reason = reason.strip()
    candidate.outcome_at = timezone.now()
    candidate.save(update_fields=["outcome", "outcome_by", "outcome_reason", "outcome_at"])
    if outcome == Outcome.CONFIRMED:
        candidate.confirmed_by.set(list(confirmed_by) or [acting_user])
    return candidate
