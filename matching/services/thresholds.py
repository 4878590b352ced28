"""Confirming an organisation's threshold: matching waits for it, and held photos go on once it is given."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from matching.models import Photo, PhotoKind, PhotoStatus
from matching.services.exceptions import ServiceError
from portal import access
from portal.audit import audit_record
from portal.models import Organisation
from portal.outbox import outbox_enqueue

THRESHOLD_HOLD = (
    "Matching waits until an org admin has confirmed the organisation's threshold on the settings page. "
    "The photo is stored and will be searched once that is done."
)


@transaction.atomic
def organisation_threshold_confirm(*, organisation: Organisation, threshold: float, acting_user: Any) -> Organisation:
    """Set and confirm the threshold, then send every photo held for it back to the worker."""
    if not access.can_manage_organisation(acting_user) or access.organisation_of(acting_user) != organisation:
        raise ServiceError("Only an org admin of this organisation may confirm its threshold.")
    if not 0.05 <= float(threshold) <= 1.5:
        raise ServiceError("The threshold must be between 0.05 and 1.5.")
    locked = Organisation.objects.select_for_update(no_key=True).get(pk=organisation.pk)
    previous = locked.distance_threshold
    locked.distance_threshold = float(threshold)
    locked.threshold_confirmed_at = timezone.now()
    locked.threshold_confirmed_by = acting_user
    locked.save(update_fields=["distance_threshold", "threshold_confirmed_at", "threshold_confirmed_by"])
    held = list(
        Photo.objects.filter(organisation=locked, kind=PhotoKind.PROBE, status=PhotoStatus.HELD).values_list(
            "id", flat=True
        )
    )
    Photo.objects.filter(id__in=held).update(
        status=PhotoStatus.QUEUED, failure_reason="", attempts=0, status_changed_at=timezone.now()
    )
    for photo_id in held:
        outbox_enqueue("matching.tasks.process_photo", photo_id)
    audit_record(
        action="organisation.threshold_confirm",
        actor=acting_user,
        organisation=locked,
        target=locked,
        detail={"threshold": [previous, locked.distance_threshold], "released_photos": len(held)},
    )
    return locked


def photo_hold_for_threshold(*, photo_id: int, organisation_id: int) -> bool:
    """Hold a claimed probe photo while the threshold is unconfirmed. False when it was confirmed meanwhile.

    The organisation row is locked, as confirmation locks it, so a photo is never held after the release.
    """
    with transaction.atomic():
        organisation = Organisation.objects.select_for_update(no_key=True).get(id=organisation_id)
        if organisation.threshold_confirmed_at is not None:
            return False
        Photo.objects.filter(id=photo_id).update(
            status=PhotoStatus.HELD, failure_reason=THRESHOLD_HOLD, status_changed_at=timezone.now()
        )
    return True
