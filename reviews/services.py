from __future__ import annotations

from datetime import date
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from matching.models import Candidate, Face, Outcome
from matching.services import ServiceError, candidate_set_outcome, probe_face_set_unsuitable
from portal import access
from portal.audit import audit_record
from portal.models import Organisation
from portal.outbox import outbox_enqueue
from reviews.bias import bias_panel
from reviews.models import (
    CONFIRMING,
    FEATURES,
    IMAGE_TOOLS,
    AnalysisScope,
    Conclusion,
    FeatureComparison,
    FeatureMark,
    ProbeAnalysis,
    ProbeLimit,
    ProbeValue,
    ReviewClaim,
    ReviewDecision,
    ReviewPolicy,
    TrainingAttestation,
)
from reviews.selectors import (  # noqa: F401  (reads live in selectors; importable from here too)
    TrainingStatus,
    _answerable_for,
    active_decisions,
    analysis_needed,
    audit_detail_of_candidate,
    candidates_blind_to,
    candidates_decidable_by,
    candidates_scores_hidden_from,
    decision_blockers,
    has_compared,
    may_decide_escalations,
    may_request_disclosure,
    may_see_decisions,
    queue_cases_forget,
    review_policy_for,
    scores_hidden_from,
    training_status,
)

POLICY_FIELDS = (
    "required_confirmations",
    "hide_scores_until_compared",
    "analysis_scope",
    "training_valid_months",
    "senior_reviewer",
)


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
    transaction.on_commit(lambda: queue_cases_forget(reviewer.pk))
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


NOTE_MAX = 2000
MARKS_MAX = 60
MARK_NOTE_MAX = 500
ANALYSE_FIRST = (
    "Record your analysis of the probe face first: its value for comparison, judged before any candidate is compared."
)


def _tools_clean(tools: dict[str, Any] | None) -> dict[str, list[str]]:
    """{"probe": [...], "gallery": [...]}: which image tools were used on which face, in IMAGE_TOOLS order."""
    if not tools:
        return {}
    if not isinstance(tools, dict) or not set(tools) <= {"probe", "gallery"}:
        raise ServiceError("The record of the image tools used could not be read; reload the page.")
    cleaned = {}
    for face, used in tools.items():
        if not isinstance(used, list) or not all(isinstance(t, str) and t in IMAGE_TOOLS for t in used):
            raise ServiceError("The record of the image tools used names an unknown tool; reload the page.")
        if used:
            cleaned[face] = [tool for tool in IMAGE_TOOLS if tool in used]
    return cleaned


def _tools_merge(*records: dict[str, list[str]]) -> dict[str, list[str]]:
    merged: dict[str, set[str]] = {}
    for record in records:
        for face, used in (record or {}).items():
            merged.setdefault(face, set()).update(used)
    return {face: [t for t in IMAGE_TOOLS if t in used] for face, used in sorted(merged.items())}


def _number(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ServiceError("A mark lies outside the face; reload the page and mark it again.")
    return round(float(value), 4)


def _annotations_clean(annotations: list[Any] | None, candidate: Candidate) -> list[dict[str, Any]]:
    """Points and regions on the probe face or one of the subject's reference faces, in the aligned image's
    coordinates (0 to 1), each tied to a FISWG component with a note."""
    if not annotations:
        return []
    if not isinstance(annotations, list):
        raise ServiceError("The marks on the faces could not be read; reload the page.")
    if len(annotations) > MARKS_MAX:
        raise ServiceError(f"At most {MARKS_MAX} marks on one comparison.")
    faces = {candidate.search.face_id: "probe"} | {
        pk: "gallery" for pk in Face.objects.filter(subject_id=candidate.subject_id).values_list("pk", flat=True)
    }
    features = dict(FEATURES)
    cleaned = []
    for number, mark in enumerate(annotations, start=1):
        if not isinstance(mark, dict) or mark.get("kind") not in ("point", "region"):
            raise ServiceError("The marks on the faces could not be read; reload the page.")
        if mark.get("face") not in faces or isinstance(mark.get("face"), bool):
            raise ServiceError(f"Mark {number} is on a face that is not part of this comparison.")
        if mark.get("feature") not in features:
            raise ServiceError(f"Mark {number}: choose the facial feature it shows.")
        note = mark.get("note", "")
        if not isinstance(note, str) or len(note.strip()) > MARK_NOTE_MAX:
            raise ServiceError(f"Mark {number}: the note is limited to {MARK_NOTE_MAX} characters.")
        entry = {
            "face": mark["face"],
            "side": faces[mark["face"]],
            "kind": mark["kind"],
            "x": _number(mark.get("x"), 0, 1),
            "y": _number(mark.get("y"), 0, 1),
            "feature": mark["feature"],
            "note": note.strip(),
        }
        if mark["kind"] == "region":
            entry["w"] = _number(mark.get("w"), 0.001, 1 - entry["x"] + 1e-6)
            entry["h"] = _number(mark.get("h"), 0.001, 1 - entry["y"] + 1e-6)
        cleaned.append(entry)
    return cleaned


@transaction.atomic
def probe_analyse(
    *, candidate_id: int, value: str, limits: list[str], note: str = "", acting_user: Any
) -> ProbeAnalysis:
    """Record a reviewer's analysis of a candidate's probe face, before any of its candidates is compared.

    "Of no value" closes every open candidate of that face as not comparable (through matching's service, so
    the caseworker's page says the photo was judged unsuitable), with the reason, in the activity log.
    """
    if value not in ProbeValue.values:
        raise ServiceError("Choose the probe's value for comparison: of value, of limited value or of no value.")
    if not isinstance(limits, list | tuple) or not set(limits) <= set(ProbeLimit.values):
        raise ServiceError("Choose what limits the probe's value from the list.")
    limits = [limit for limit in ProbeLimit.values if limit in limits]
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise ServiceError(f"The note is limited to {NOTE_MAX} characters.")
    if value == ProbeValue.NO_VALUE and not (limits or note):
        raise ServiceError("Say why the probe is of no value: choose what limits it, or write a note.")
    candidate = Candidate.objects.select_related("case__organisation", "search").get(id=candidate_id)
    blockers = decision_blockers(acting_user, candidate)
    if blockers:
        raise ServiceError(" ".join(blockers))
    # The probe face's row lock: two reviewers analysing one face at once are taken one after the other, so
    # under the shared policy the second learns that the first one's analysis already holds.
    face = (
        Face.objects.select_for_update(no_key=True)
        .select_related("photo")
        .defer("encoding")
        .get(pk=candidate.search.face_id)
    )
    organisation = candidate.case.organisation
    policy = review_policy_for(organisation)
    recorded = ProbeAnalysis.objects.filter(face=face).select_related("reviewer")
    if recorded.filter(reviewer=acting_user).exists():
        raise ServiceError("You have already recorded your analysis of this probe face.")
    first = recorded.first()
    if policy.analysis_scope == AnalysisScope.SHARED and first is not None:
        raise ServiceError(
            f"{first.reviewer.get_username()} has already recorded the analysis of this probe face; under the "
            "organisation's shared policy it holds for every reviewer."
        )
    from matching.quality import face_quality_of

    analysis = ProbeAnalysis.objects.create(
        face=face,
        reviewer=acting_user,
        value=value,
        limits=limits,
        note=note,
        measures=face_quality_of(face).as_dict(),
    )
    audit_record(
        action="probe.analyse",
        actor=acting_user,
        organisation=organisation,
        target=analysis,
        detail={"case": candidate.case.reference, "face": face.pk, "value": value, "limits": limits, "note": note},
    )
    if value == ProbeValue.NO_VALUE:
        reason = f"{acting_user.get_username()} judged it {analysis.summary[0].lower()}{analysis.summary[1:]}"
        closed = probe_face_set_unsuitable(face_id=face.pk, reason=reason, acting_user=acting_user)
        for closed_candidate in closed:
            audit_record(
                action="candidate.unsuitable",
                actor=acting_user,
                organisation=organisation,
                target=closed_candidate,
                detail={"case": candidate.case.reference, "face": face.pk, "reason": closed_candidate.outcome_reason},
            )
        if closed:
            outbox_enqueue("reviews.tasks.notify_caseworker", candidate.case_id, False)
            outbox_enqueue("reviews.tasks.refresh_warnings", candidate.organisation_id)
            transaction.on_commit(lambda: queue_cases_forget(acting_user.pk))
    return analysis


@transaction.atomic
def review_compare(
    *,
    candidate_id: int,
    features: dict[str, str],
    acting_user: Any,
    tools: dict[str, Any] | None = None,
    annotations: list[Any] | None = None,
) -> FeatureComparison:
    """Record the feature comparison on its own, before the scores are revealed."""
    candidate = Candidate.objects.select_related("case__organisation", "search").get(id=candidate_id)
    blockers = decision_blockers(acting_user, candidate)
    if blockers:
        raise ServiceError(" ".join(blockers))
    if analysis_needed(acting_user, candidate):
        raise ServiceError(ANALYSE_FIRST)
    return FeatureComparison.objects.create(
        candidate=candidate,
        reviewer=acting_user,
        features=_features_clean(features),
        tools=_tools_clean(tools),
        annotations=_annotations_clean(annotations, candidate),
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
    tools: dict[str, Any] | None = None,
    annotations: list[Any] | None = None,
) -> ReviewDecision:
    """Record one reviewer's independent decision, then move the candidate on if the policy says so.

    `tools` and `annotations` are the worksheet's record of the image tools used and the marks made; the
    tools used during this reviewer's comparison step are added to it."""
    if conclusion not in Conclusion.values:
        raise ServiceError("Choose a conclusion.")
    reason = reason.strip()
    if not reason:
        raise ServiceError("A written reason is required.")
    if not bias_acknowledged:
        raise ServiceError("Acknowledge the bias warning before deciding.")
    features = _features_clean(features)
    tools = _tools_clean(tools)
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
    if analysis_needed(acting_user, candidate):
        raise ServiceError(ANALYSE_FIRST)
    annotations = _annotations_clean(annotations, candidate)
    comparison = FeatureComparison.objects.filter(candidate=candidate, reviewer=acting_user).first()
    if comparison is not None:
        tools = _tools_merge(comparison.tools, tools)
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
        tools=tools,
        annotations=annotations,
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
    transaction.on_commit(lambda: queue_cases_forget(acting_user.pk))
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
        counts = {
            o: case.candidates.filter(outcome=o).count()
            for o in (Outcome.CONFIRMED, Outcome.REJECTED, Outcome.UNSUITABLE)
        }
        unsuitable = (
            f", {counts[Outcome.UNSUITABLE]} not comparable (photo judged unsuitable for comparison)"
            if counts[Outcome.UNSUITABLE]
            else ""
        )
        lines.append(
            f"Review of case {case.reference} is complete: {counts[Outcome.CONFIRMED]} confirmed, "
            f"{counts[Outcome.REJECTED]} rejected{unsuitable}."
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
