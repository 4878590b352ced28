"""Cases, their probe photos, and moving a candidate on to its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from matching.models import (
    Candidate,
    Case,
    Face,
    Outcome,
    Photo,
    PhotoKind,
    reference_problem,
)
from matching.services.exceptions import CandidateAlreadyDecided, ServiceError
from matching.services.uploads import StoredFiles, UploadedImage, dates_check, photo_queue, photo_store
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
    captured_on: date | None = None,
) -> Case:
    if not photos:
        raise ServiceError("Add at least one probe photo.")
    dates_check(captured_on=captured_on)
    reference = reference.strip()
    problem = reference_problem(reference)
    if problem:
        raise ServiceError(problem)
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
            photo = photo_store(
                files=files,
                organisation=organisation,
                kind=PhotoKind.PROBE,
                upload=upload,
                case=case,
                captured_on=captured_on,
            )
            photo_queue(photo)
    audit_record(
        action="case.create", actor=acting_user, organisation=organisation, target=case, detail={"photos": len(photos)}
    )
    return case


@transaction.atomic
def case_add_photos(
    *, case: Case, photos: list[UploadedImage], acting_user: Any, captured_on: date | None = None
) -> list[Photo]:
    """Add probe photos to an existing case; each is processed in the background like the first ones."""
    if not photos:
        raise ServiceError("Add at least one probe photo.")
    dates_check(captured_on=captured_on)
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
                files=files,
                organisation=case.organisation,
                kind=PhotoKind.PROBE,
                upload=upload,
                case=case,
                captured_on=captured_on,
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
    if outcome not in (Outcome.CONFIRMED, Outcome.REJECTED, Outcome.ESCALATED, Outcome.UNSUITABLE):
        raise ServiceError("A candidate can only be confirmed, rejected, escalated or closed as not comparable.")
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


@transaction.atomic
def probe_face_set_unsuitable(*, face_id: int, reason: str, acting_user: Any) -> list[Candidate]:
    """Record that a probe face was judged of no value for comparison, and close each of its open candidates
    as not comparable. Only the review workflow calls this (its analysis step); the caseworker's page reads
    the face's `unsuitable_reason`. Returns the candidates it closed; a candidate already decided stays so.
    """
    reason = reason.strip()
    if not reason:
        raise ServiceError("Say why the probe photo is unsuitable for comparison.")
    # The face row first, then its candidates in id order: a decision on one of them locks that candidate
    # row, so the two wait for each other instead of crossing.
    face = Face.objects.select_for_update(no_key=True).get(pk=face_id)
    if face.subject_id is not None:
        raise ServiceError("Only a probe face can be judged unsuitable for comparison.")
    if face.unsuitable_at is None:
        face.unsuitable_at = timezone.now()
        face.unsuitable_reason = reason[:600]
        face.save(update_fields=["unsuitable_at", "unsuitable_reason"])
    closed = []
    for candidate in Candidate.objects.select_for_update(no_key=True).open().filter(search__face=face).order_by("id"):
        closed.append(
            candidate_set_outcome(
                candidate_id=candidate.pk,
                outcome=Outcome.UNSUITABLE,
                reason=f"Not comparable: the probe photo was judged unsuitable for comparison. {reason}",
                acting_user=acting_user,
            )
        )
    return closed
