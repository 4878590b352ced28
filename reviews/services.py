from __future__ import annotations

from typing import Any

from django.db import transaction

from matching.models import Candidate, Outcome
from matching.services import ServiceError, candidate_set_outcome
from portal import access
from portal.audit import audit_record
from reviews.models import Decision, ReviewDecision

OUTCOME_OF = {Decision.CONFIRM: Outcome.CONFIRMED, Decision.REJECT: Outcome.REJECTED}


@transaction.atomic
def review_decide(*, candidate_id: int, decision: str, reason: str, acting_user: Any) -> ReviewDecision:
    """Record a reviewer's decision and close the candidate with it."""
    if decision not in OUTCOME_OF:
        raise ServiceError("Choose to confirm or to reject.")
    reason = reason.strip()
    if not reason:
        raise ServiceError("A written reason is required.")
    candidate = Candidate.objects.select_for_update().select_related("case").get(id=candidate_id)
    if not access.can_review(acting_user) or not access.same_organisation(acting_user, candidate.organisation_id):
        raise ServiceError("You may not review this candidate.")
    candidate_set_outcome(
        candidate_id=candidate.id, outcome=OUTCOME_OF[decision], reason=reason, acting_user=acting_user
    )
    review = ReviewDecision.objects.create(candidate=candidate, reviewer=acting_user, decision=decision, reason=reason)
    audit_record(
        action=f"review.{decision}",
        actor=acting_user,
        organisation=candidate.case.organisation,
        target=candidate,
        detail={"case": candidate.case.reference, "rank": candidate.rank, "distance": candidate.distance},
    )
    return review
