"""What only a deliberate step on /settings/ changes, each after the page has shown what it does.

- The threshold, with the number of candidates listed per face: matching waits for its confirmation, and held
  photos go on once it is given. Confirming is the only way either changes, so the threshold in use is always
  the one last confirmed (the admin shows both read-only; `organisation_update` refuses them).
- The retention period of closed cases: a change moves the purge of every closed case at once, so the page lists
  those it brings due, forward or back, or stops (`retention_change_effect`), and the log names them.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from matching.models import Photo, PhotoKind, PhotoStatus
from matching.services.exceptions import ServiceError
from matching.services.retention import retention_change_effect
from portal import access
from portal.audit import audit_record
from portal.models import Organisation
from portal.outbox import outbox_enqueue

THRESHOLD_HOLD = (
    "Matching waits until an org admin has confirmed the organisation's threshold on the settings page. "
    "The photo is stored and will be searched once that is done."
)
RETENTION_MAX_DAYS = 36500


@transaction.atomic
def organisation_threshold_confirm(
    *, organisation: Organisation, threshold: float, acting_user: Any, max_candidates: int | None = None
) -> Organisation:
    """Set and confirm the threshold (and, if given, the candidates per face), then release the photos held for it."""
    if not access.can_manage_organisation(acting_user) or access.organisation_of(acting_user) != organisation:
        raise ServiceError("Only an org admin of this organisation may confirm its threshold.")
    if not 0.05 <= float(threshold) <= 1.5:
        raise ServiceError("The threshold must be between 0.05 and 1.5.")
    if max_candidates is not None and not 1 <= int(max_candidates) <= 50:
        raise ServiceError("List between 1 and 50 candidates per face.")
    locked = Organisation.objects.select_for_update(no_key=True).get(pk=organisation.pk)
    previous, previous_candidates = locked.distance_threshold, locked.max_candidates
    locked.distance_threshold = float(threshold)
    if max_candidates is not None:
        locked.max_candidates = int(max_candidates)
    locked.threshold_confirmed_at = timezone.now()
    locked.threshold_confirmed_by = acting_user
    locked.save(
        update_fields=["distance_threshold", "max_candidates", "threshold_confirmed_at", "threshold_confirmed_by"]
    )
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
        detail={
            "threshold": [previous, locked.distance_threshold],
            "max_candidates": [previous_candidates, locked.max_candidates],
            "released_photos": len(held),
        },
    )
    return locked


@transaction.atomic
def organisation_retention_set(
    *, organisation: Organisation, retention_days: int | None, acting_user: Any
) -> tuple[Organisation, dict[str, list[dict[str, Any]]]]:
    """Change how long closed cases keep their biometrics (None: until erased by hand); returns what it moved.

    The effect is worked out again under the organisation's lock, and the log names every case it moved.
    """
    if not access.can_manage_organisation(acting_user) or access.organisation_of(acting_user) != organisation:
        raise ServiceError("Only an org admin of this organisation may change its retention period.")
    if retention_days is not None and not 0 <= int(retention_days) <= RETENTION_MAX_DAYS:
        raise ServiceError(f"The retention period must be between 0 and {RETENTION_MAX_DAYS} days, or none.")
    locked = Organisation.objects.select_for_update(no_key=True).get(pk=organisation.pk)
    effect = retention_change_effect(organisation=locked, retention_days=retention_days)
    previous = locked.retention_days
    if previous == retention_days:
        raise ServiceError("That is the retention period in use; nothing changed.")
    locked.retention_days = retention_days
    locked.save(update_fields=["retention_days"])
    audit_record(
        action="organisation.retention_change",
        actor=acting_user,
        organisation=locked,
        target=locked,
        detail={
            "retention_days": [previous, retention_days],
            "cases": {kind: [case["case_id"] for case in cases] for kind, cases in effect.items()},
        },
    )
    return locked, effect


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
