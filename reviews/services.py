from __future__ import annotations

from datetime import date
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from matching.models import Candidate, Outcome
from matching.services import ServiceError, candidate_set_outcome
from portal import access
from portal.audit import audit_record
from portal.models import Organisation
from portal.outbox import outbox_enqueue
from reviews.bias import bias_panel
from reviews.models import (
    CONFIRMING,
    FEATURES,
    Conclusion,
    FeatureComparison,
    FeatureMark,
    ReviewClaim,
    ReviewDecision,
    ReviewPolicy,
    TrainingAttestation,
)
from reviews.selectors import (  # noqa: F401  (reads live in selectors; importable from here too)
    TrainingStatus,
    _answerable_for,
    active_decisions,
    audit_detail_of_candidate,
    candidates_blind_to,
    candidates_decidable_by,
    candidates_scores_hidden_from,
    decision_blockers,
    has_compared,
    may_decide_escalations,
    may_request_disclosure,
    may_see_decisions,
    review_policy_for,
    scores_hidden_from,
    training_status,
)

POLICY_FIELDS = ("required_confirmations", "hide_scores_until_compared", "training_valid_months", "senior_reviewer")


@transaction.atomic
def review_policy_update(*, organisation: Organisation, acting_user: Any, **changes: Any) -> ReviewPolicy:
    if not (access.can_manage_organisation(acting_user) and access.same_organisation(acting_user, organisation.pk)):
        raise ServiceError("Only the organisation's admins may change its review policy.")
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise ServiceError(f"Cannot change {', '.join(sorted(unknown))}.")
    ReviewPolicy.objects.get_or_create(organisation=organisation)
    policy = ReviewPolicy.objects.select_for_update(no_key=True).get(organisation=organisation)
    senior = changes.get("senior_reviewer")
    if senior is not None and not (access.can_review(senior) and access.same_organisation(senior, organisation.pk)):
        raise ServiceError("The senior reviewer must be a reviewer or admin of this organisation.")
    diff = {}
    for field, value in changes.items():
        old = getattr(policy, field)
        if old != value:
            diff[field] = [str(old) if old is not None else None, str(value) if value is not None else None]
            setattr(policy, field, value)
    if diff:
        policy.full_clean()
        policy.save()
        audit_record(
            action="review_policy.update",
            actor=acting_user,
            organisation=organisation,
            target=policy,
            detail={"changes": diff},
        )
    return policy


@transaction.atomic
def training_record(
    *, organisation: Organisation, reviewer: Any, trained_on: date, course: str = "", acting_user: Any
) -> TrainingAttestation:
    if not (access.can_manage_organisation(acting_user) and access.same_organisation(acting_user, organisation.pk)):
        raise ServiceError("Only the organisation's admins may record training.")
    if not access.same_organisation(reviewer, organisation.pk):
        raise ServiceError("The reviewer is not a member of this organisation.")
    if not access.can_attest_training(acting_user, reviewer):
        raise ServiceError("Nobody attests their own training; ask another org admin to record it.")
    if not access.can_review(reviewer) or access.is_service_user(reviewer):
        raise ServiceError("Training is recorded for reviewers and org admins only.")
    if trained_on > timezone.localdate():
        raise ServiceError("The training date cannot be in the future.")
    attestation = TrainingAttestation.objects.create(
        organisation=organisation, reviewer=reviewer, trained_on=trained_on, course=course, recorded_by=acting_user
    )
    audit_record(
        action="training.record",
        actor=acting_user,
        organisation=organisation,
        target=attestation,
        detail={"reviewer": reviewer.get_username(), "trained_on": trained_on.isoformat(), "course": course},
    )
    return attestation


def _features_clean(features: dict[str, str]) -> dict[str, str]:
    names = [name for name, _ in FEATURES]
    missing = [label for name, label in FEATURES if features.get(name) not in FeatureMark.values]
    if missing:
        raise ServiceError(f"Mark every facial component; missing: {', '.join(missing)}.")
    return {name: features[name] for name in names}


@transaction.atomic
def review_compare(*, candidate_id: int, features: dict[str, str], acting_user: Any) -> FeatureComparison:
    """Record the feature comparison on its own, before the scores are revealed."""
    candidate = Candidate.objects.select_related("case__organisation").get(id=candidate_id)
    blockers = decision_blockers(acting_user, candidate)
    if blockers:
        raise ServiceError(" ".join(blockers))
    return FeatureComparison.objects.create(
        candidate=candidate, reviewer=acting_user, features=_features_clean(features)
    )


@transaction.atomic
def review_claim(*, candidate_id: int, acting_user: Any) -> ReviewClaim:
    candidate = Candidate.objects.select_related("case__organisation").get(id=candidate_id)
    if not access.can_review(acting_user) or not access.same_organisation(acting_user, candidate.organisation_id):
        raise ServiceError("You may not review this organisation's candidates.")
    claim, _ = ReviewClaim.objects.get_or_create(candidate=candidate, reviewer=acting_user)
    return claim


def _summary(decisions: list[ReviewDecision]) -> str:
    return " · ".join(
        f"{d.reviewer.get_username()} ({d.get_conclusion_display().split(':')[0].lower()}): {d.reason}"
        for d in decisions
    )


@transaction.atomic
def review_decide(
    *,
    candidate_id: int,
    acting_user: Any,
    conclusion: str,
    reason: str,
    features: dict[str, str],
    bias_acknowledged: bool,
    corrects_id: int | None = None,
) -> ReviewDecision:
    """Record one reviewer's independent decision, then move the candidate on if the policy says so."""
    if conclusion not in Conclusion.values:
        raise ServiceError("Choose a conclusion.")
    reason = reason.strip()
    if not reason:
        raise ServiceError("A written reason is required.")
    if not bias_acknowledged:
        raise ServiceError("Acknowledge the bias warning before deciding.")
    features = _features_clean(features)
    # The row lock serialises decisions on one candidate; on PostgreSQL a second
    # reviewer waits here and then sees the first one's decision.
    candidate = Candidate.objects.select_for_update(no_key=True).get(id=candidate_id)
    candidate = Candidate.objects.select_related("case__organisation", "case__created_by", "subject", "search").get(
        id=candidate_id
    )
    corrects = None
    if corrects_id is not None:
        corrects = ReviewDecision.objects.filter(pk=corrects_id, candidate=candidate, reviewer=acting_user).first()
        if corrects is None or corrects.corrections.exists():
            raise ServiceError("You can only correct your own latest decision on this candidate.")
    blockers = decision_blockers(acting_user, candidate, correcting=corrects is not None)
    if blockers:
        raise ServiceError(" ".join(blockers))
    organisation = candidate.case.organisation
    policy = review_policy_for(organisation)
    panel = bias_panel(candidate)
    confirming = conclusion in CONFIRMING
    if confirming and not panel.valid and organisation.require_valid_audit:
        raise ServiceError(f"Confirmation is blocked: the organisation requires a valid bias audit. {panel.reason}")
    escalation = candidate.outcome == Outcome.ESCALATED and corrects is None
    decision = ReviewDecision.objects.create(
        candidate=candidate,
        reviewer=acting_user,
        conclusion=conclusion,
        features=features,
        reason=reason,
        bias_acknowledged=True,
        bias_snapshot=panel.snapshot(),
        training_valid_until=training_status(acting_user, organisation).valid_until,
        escalation=escalation,
        corrects=corrects,
    )
    audit_record(
        action="review.correct" if corrects else "review.decide",
        actor=acting_user,
        organisation=organisation,
        target=candidate,
        detail={
            "case": candidate.case.reference,
            "conclusion": conclusion,
            "rank": candidate.rank,
            "distance": candidate.distance,
            "bias_severity": panel.severity,
            "escalation": escalation,
        },
    )
    _candidate_advance(candidate, decision, policy, acting_user)
    return decision


def _candidate_advance(candidate: Candidate, decision: ReviewDecision, policy: ReviewPolicy, acting_user: Any) -> None:
    active = active_decisions(candidate)
    confirming = [d for d in active if d.confirms]
    if decision.escalation:
        # A settler who confirms counts as one confirmation, never as all of them: the candidate is confirmed only
        # once as many distinct people as the policy requires have confirmed it, so with three required another
        # settler who took no part must confirm too. One settler who does not confirm rejects it.
        settlers = [d for d in candidate.decisions.filter(escalation=True).order_by("created_at", "id") if d.confirms]
        if decision.pk not in {d.pk for d in settlers} and decision.confirms:
            settlers.append(decision)
        confirming += settlers
        if decision.confirms and len({d.reviewer_id for d in confirming}) < policy.required_confirmations:
            return
        outcome = Outcome.CONFIRMED if decision.confirms else Outcome.REJECTED
        reason = f"Escalation decided by {acting_user.get_username()}: {decision.reason}"
    else:
        other = [d for d in active if not d.confirms]
        if confirming and other:
            outcome, reason = Outcome.ESCALATED, f"Reviewers disagreed. {_summary(active)}"
        elif len(confirming) >= policy.required_confirmations:
            outcome, reason = Outcome.CONFIRMED, f"Confirmed independently by {_summary(confirming)}"
        elif len(other) >= policy.required_confirmations:
            outcome, reason = Outcome.REJECTED, f"Not confirmed by {_summary(other)}"
        else:
            return
    if outcome == candidate.outcome:
        return
    candidate_set_outcome(
        candidate_id=candidate.pk,
        outcome=outcome,
        reason=reason,
        acting_user=acting_user,
        confirmed_by=[d.reviewer for d in confirming],
    )
    audit_record(
        action=f"candidate.{outcome}",
        actor=acting_user,
        organisation=candidate.case.organisation,
        target=candidate,
        detail={"case": candidate.case.reference},
    )
    # Through the outbox, in this transaction: SMTP being down delays the mail and never fails the decision.
    outbox_enqueue("reviews.tasks.notify_caseworker", candidate.case_id, outcome == Outcome.CONFIRMED)
    outbox_enqueue("reviews.tasks.refresh_warnings", candidate.organisation_id)


def notify_caseworker(*, case_id: int, confirmed: bool) -> None:
    """Mail the case's caseworker when a match is confirmed or the case's review is complete.

    The mail names no subject: it says only that there is something to look at in the portal.
    """
    from matching.models import Case

    case = Case.objects.select_related("created_by").get(pk=case_id)
    if case.created_by is None or not case.created_by.email:
        return
    url = f"{settings.PORTAL_BASE_URL}{reverse('matching:case_detail', args=[case.pk])}"
    open_left = case.candidates.open().exists()
    unfinished = case.photos.exclude(status__in=["done", "failed"]).exists()
    lines = []
    if confirmed:
        lines.append(f"A reviewer-confirmed match is available for case {case.reference}.")
    if not open_left and not unfinished:
        counts = {o: case.candidates.filter(outcome=o).count() for o in (Outcome.CONFIRMED, Outcome.REJECTED)}
        lines.append(
            f"Review of case {case.reference} is complete: {counts[Outcome.CONFIRMED]} confirmed, "
            f"{counts[Outcome.REJECTED]} rejected."
        )
    if not lines:
        return
    lines.append(f"\n{url}\n\nA match is an investigative lead only, never an identification.")
    send_mail(
        subject=f"[Face search portal] Case {case.reference}",
        message="\n".join(lines),
        from_email=None,
        recipient_list=[case.created_by.email],
    )


@transaction.atomic
def candidate_warnings_store(*, candidate_ids: list[int]) -> int:
    """Store the queue's warning severity of new candidates, in the transaction that stores them.

    Matching tells reviews of every new candidate inside `search_results_store` (its CandidatesStored listener,
    registered in `reviews.apps`), so no candidate reaches the queue without its warning. `warnings_refresh` (the
    beat sweep, and the task queued with each decision) keeps them current when the audit changes.
    """
    from reviews.bias import AuditContext
    from reviews.models import CandidateWarning

    candidates = list(
        Candidate.objects.filter(pk__in=candidate_ids, warning__isnull=True)
        .select_related("case__organisation", "subject", "search")
        .order_by("id")
    )
    if not candidates:
        return 0
    # One search's candidates, so one organisation and one audit context.
    context = AuditContext.load(candidates[0].case.organisation)
    run_id = context.validity.run.pk if context.validity.valid else None
    CandidateWarning.objects.bulk_create(
        CandidateWarning(candidate=candidate, severity=bias_panel(candidate, context).severity, run_id=run_id)
        for candidate in candidates
    )
    return len(candidates)


# Per process: organisation id -> the state in which every open candidate's warning was found fresh.
_warnings_fresh_at: dict[int, tuple] = {}


def warnings_refresh(*, organisation: Organisation, limit: int = 500) -> int:
    """Recompute cached severities of open candidates whose cache is missing or from another audit run.

    Finding the stale ones scans every open candidate (100k at scale), so that scan is skipped when nothing
    that could make a warning stale has happened since this process last found none: no new candidate (the
    newest id), no new warning anywhere, and the same valid audit run.
    """
    from django.db.models import Max

    from reviews.bias import AuditContext
    from reviews.models import CandidateWarning

    context = AuditContext.load(organisation)
    run_id = context.validity.run.pk if context.validity.valid else None
    mark = (
        run_id,
        Candidate.objects.filter(organisation=organisation).aggregate(newest=Max("id"))["newest"],
        CandidateWarning.objects.aggregate(newest=Max("id"))["newest"],
    )
    if _warnings_fresh_at.get(organisation.pk) == mark:
        return 0
    stale = (
        Candidate.objects.open()
        .filter(organisation=organisation)
        .exclude(warning__run_id=run_id)
        .select_related("case__organisation", "subject", "search")
        .order_by("created_at")[:limit]
    )
    if run_id is None:
        stale = (
            Candidate.objects.open()
            .filter(organisation=organisation)
            .exclude(warning__run_id__isnull=True, warning__severity="unknown")
            .select_related("case__organisation", "subject", "search")
            .order_by("created_at")[:limit]
        )
    count = 0
    for candidate in stale:
        panel = bias_panel(candidate, context)
        CandidateWarning.objects.update_or_create(
            candidate=candidate, defaults={"severity": panel.severity, "run_id": run_id}
        )
        count += 1
    if count < limit:
        # All caught up; the mark is taken again so that the warnings just written are part of it.
        _warnings_fresh_at[organisation.pk] = (
            run_id,
            mark[1],
            CandidateWarning.objects.aggregate(newest=Max("id"))["newest"],
        )
    return count
