"""Reads about one reviewer and one candidate, shared by the review workbench and the services' checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import CharField, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone

from matching.models import AgeBand, Candidate, Case, Face, Outcome, years_between
from portal import access
from portal.models import ApiKeyKind, Organisation
from reviews.models import (
    FEATURES,
    AnalysisScope,
    FeatureComparison,
    FeatureMark,
    ProbeAnalysis,
    ReviewClaim,
    ReviewDecision,
    ReviewPolicy,
    TrainingAttestation,
)

# A page that only reads (the queue, a candidate's page on GET) asks for the organisation's policy and the
# reviewer's training from a dozen places (the columns, the filters, the decision rule, the worksheet), and the
# candidate page asks for the reviewer's own decision, comparison and the probe's analyses from five: inside
# `reads_once()` each is read once per page instead of once per question. Never around a write: a service that
# changes the policy or records training must read what it wrote.
_page_reads: ContextVar[dict | None] = ContextVar("review_page_reads", default=None)


@contextmanager
def reads_once() -> Iterator[None]:
    """Within this block (one read-only page), each of the reads above is made once."""
    token = _page_reads.set({})
    try:
        yield
    finally:
        _page_reads.reset(token)


def _read_once(key: tuple, read: Callable[[], Any]) -> Any:
    reads = _page_reads.get()
    if reads is None:
        return read()
    if key not in reads:
        reads[key] = read()
    return reads[key]


def review_policy_for(organisation: Organisation) -> ReviewPolicy:
    """The organisation's policy; the defaults, unsaved, until an admin first changes it (a read never writes)."""
    return _read_once(
        ("policy", organisation.pk),
        lambda: (
            ReviewPolicy.objects.filter(organisation=organisation).first() or ReviewPolicy(organisation=organisation)
        ),
    )


@dataclass(frozen=True)
class TrainingStatus:
    current: bool
    valid_until: date | None
    message: str


def training_status(user: Any, organisation: Organisation) -> TrainingStatus:
    return _read_once(("training", user.pk, organisation.pk), lambda: _training_status(user, organisation))


def _training_status(user: Any, organisation: Organisation) -> TrainingStatus:
    policy = review_policy_for(organisation)
    latest = TrainingAttestation.objects.filter(organisation=organisation, reviewer=user).first()
    if latest is None:
        return TrainingStatus(False, None, "You have no recorded facial-comparison training; ask an org admin.")
    until = latest.valid_until(policy.training_valid_months)
    if until < timezone.localdate():
        return TrainingStatus(False, until, f"Your training expired on {until:%Y-%m-%d}; ask an org admin to renew it.")
    return TrainingStatus(True, until, f"Training current until {until:%Y-%m-%d}.")


def may_request_disclosure(user: Any) -> bool:
    """The role half of who may request a disclosure report (`reviews.disclosure.disclosure_blockers` adds
    the case's open candidates)."""
    organisation = access.organisation_of(user)
    if organisation is None:
        return False
    return access.can_request_disclosure(user, senior_reviewer_id=review_policy_for(organisation).senior_reviewer_id)


def own_latest_decision(user: Any, candidate: Candidate) -> ReviewDecision | None:
    """This user's latest decision on the candidate (a correction is the latest), or None."""
    return _read_once(
        ("own decision", user.pk, candidate.pk),
        lambda: candidate.decisions.filter(reviewer=user).order_by("-created_at", "-id").first(),
    )


def has_decided(user: Any, candidate: Candidate) -> bool:
    return own_latest_decision(user, candidate) is not None


def own_comparison(user: Any, candidate: Candidate) -> FeatureComparison | None:
    """This user's latest feature comparison of the candidate (ACE-V's comparison step), or None."""
    return _read_once(
        ("own comparison", user.pk, candidate.pk),
        lambda: FeatureComparison.objects.filter(candidate=candidate, reviewer=user).first(),
    )


def may_decide_escalations(user: Any, policy: ReviewPolicy) -> bool:
    return access.can_settle_escalations(user, senior_reviewer_id=policy.senior_reviewer_id)


def _answerable_for(user: Any, candidate: Candidate) -> bool:
    """The case's creator, or the person accountable for it (the maker of the key that filed it)."""
    case = candidate.case
    return user.pk is not None and user.pk in (case.created_by_id, case.accountable_by_id)


def active_decisions(candidate: Candidate) -> list[ReviewDecision]:
    """Each reviewer's latest non-escalation decision: a correction replaces what it corrects."""
    latest: dict[int, ReviewDecision] = {}
    for decision in candidate.decisions.filter(escalation=False).order_by("created_at", "id"):
        latest[decision.reviewer_id] = decision
    return list(latest.values())


def decision_blockers(user: Any, candidate: Candidate, *, correcting: bool = False) -> list[str]:
    """Why this user may not decide this candidate now; empty when they may.

    `candidates_decidable_by` is the same rule as a query (without `correcting`); keep the two together.
    """
    if not access.can_review(user) or not access.same_organisation(user, candidate.organisation_id):
        return ["You may not review this organisation's candidates."]
    blockers = []
    if not candidate.is_open:
        blockers.append(f"This candidate is closed ({candidate.get_outcome_display().lower()}).")
    if _answerable_for(user, candidate):
        blockers.append("You are accountable for this case; separation of duties means someone else must review it.")
    policy = review_policy_for(candidate.case.organisation)
    mine = has_decided(user, candidate)
    if candidate.outcome == Outcome.ESCALATED:
        if mine:
            # Not even as a correction: a participant's change of mind must not settle the disagreement.
            blockers.append("You took part in the disagreement; another senior decider must close it.")
        elif not may_decide_escalations(user, policy):
            blockers.append("Reviewers disagreed; an org admin or the senior reviewer decides this candidate.")
    elif mine and not correcting:
        blockers.append("You have already decided this candidate. A reviewer decides a candidate once.")
    status = training_status(user, candidate.case.organisation)
    if not status.current:
        blockers.append(status.message)
    return blockers


def candidates_decidable_by(user: Any, queryset: QuerySet[Candidate]) -> QuerySet[Candidate]:
    """The candidates of `queryset` this user may decide now: `decision_blockers` as a query."""
    organisation = access.organisation_of(user)
    if organisation is None or not access.can_review(user) or not training_status(user, organisation).current:
        return queryset.none()
    # An escalated candidate waits for whoever settles disagreements.
    waiting = (
        Candidate.open_q()
        if may_decide_escalations(user, review_policy_for(organisation))
        else Q(outcome=Outcome.PENDING)
    )
    # One filter() rather than a chain: each step of a chain copies the query, and the queue asks this on every page.
    return queryset.filter(
        waiting,
        ~Q(case__created_by=user),
        ~Q(case__accountable_by=user),
        ~Exists(ReviewDecision.objects.filter(candidate=OuterRef("pk"), reviewer=user)),
        organisation=organisation,
    )


def may_see_decisions(user: Any, candidate: Candidate) -> bool:
    """Blind review: whether this user may see the other reviewers' decisions and reasons on this candidate.

    Yes once it is closed, once they have recorded their own decision, to whoever settles an escalation, and
    to those who could never decide it (caseworkers, the case's accountable people, other organisations).
    Everyone else who could still decide it sees none, in any view: training lapses and is renewed, so it
    does not count here.
    """
    if not candidate.is_open:
        return True
    if not (access.can_review(user) and access.same_organisation(user, candidate.organisation_id)):
        return True
    if _answerable_for(user, candidate) or has_decided(user, candidate):
        return True
    if candidate.outcome == Outcome.ESCALATED:
        return True  # the senior decider weighs the disagreement; other reviewers can no longer decide it
    return False


def candidates_blind_to(user: Any) -> QuerySet[Candidate]:
    """The candidates whose decisions this user may not see yet: `may_see_decisions` as a query."""
    organisation = access.organisation_of(user)
    if organisation is None or not access.can_review(user):
        return Candidate.objects.none()
    return (
        Candidate.objects.filter(organisation=organisation, outcome=Outcome.PENDING)
        .exclude(case__created_by=user)
        .exclude(case__accountable_by=user)
        .exclude(Exists(ReviewDecision.objects.filter(candidate=OuterRef("pk"), reviewer=user)))
    )


def audit_rows_hidden_from(user: Any) -> Q | None:
    """The activity-log rows about candidates this user may still decide that someone else wrote. Their detail is
    hidden already (`audit_detail_of_candidate`), but a listed row by another reviewer would still say that
    someone has decided, which blind review keeps from the reviewer until their own decision. Superusers decide
    nothing and see every row."""
    if access.is_superuser(user) or not access.can_review(user):
        return None
    blind = candidates_blind_to(user).annotate(pk_text=Cast("pk", CharField())).values("pk_text")
    return Q(target_type="matching.Candidate", target_id__in=blind, actor__isnull=False) & ~Q(actor=user)


def candidates_scores_hidden_from(user: Any) -> QuerySet[Candidate]:
    """The candidates whose scores this user may not see yet: `scores_hidden_from` as a query."""
    organisation = access.organisation_of(user)
    if organisation is None or not access.can_review(user):
        return Candidate.objects.none()
    if not review_policy_for(organisation).hide_scores_until_compared:
        return Candidate.objects.none()
    return (
        Candidate.objects.open()
        .filter(organisation=organisation)
        .exclude(case__created_by=user)
        .exclude(case__accountable_by=user)
        .exclude(Exists(ReviewDecision.objects.filter(candidate=OuterRef("pk"), reviewer=user)))
        .exclude(Exists(FeatureComparison.objects.filter(candidate=OuterRef("pk"), reviewer=user)))
    )


def scores_hidden_from(user: Any, candidate: Candidate) -> bool:
    """Distance, rank and score-local rates stay hidden until this user has compared the features (or decided),
    when the policy says so. Closed candidates and people who cannot decide them are not concerned."""
    policy = review_policy_for(candidate.case.organisation)
    if not policy.hide_scores_until_compared or not candidate.is_open:
        return False
    if not (access.can_review(user) and access.same_organisation(user, candidate.organisation_id)):
        return False
    if _answerable_for(user, candidate):
        return False
    return not (has_compared(user, candidate) or has_decided(user, candidate))


SCORE_KEYS = ("rank", "distance", "bias_severity")


def audit_detail_of_candidate(user: Any, event: Any) -> dict[str, Any]:
    """An audit row about a candidate, as this user may read it: blind review and hidden scores hold in the
    log too. Superusers run the instance and decide nothing; they read the row as stored."""
    if access.is_superuser(user):
        return event.detail
    candidate = (
        Candidate.objects.select_related("case__organisation").filter(pk=event.target_id).first()
        if str(event.target_id).isdigit()
        else None
    )
    if candidate is None:
        return event.detail
    if not may_see_decisions(user, candidate):
        return {"hidden": "Blind review: you may still decide this candidate, so its decisions are not shown."}
    if scores_hidden_from(user, candidate):
        return {k: v for k, v in event.detail.items() if k not in SCORE_KEYS}
    return event.detail


def has_compared(user: Any, candidate: Candidate) -> bool:
    return own_comparison(user, candidate) is not None


# ACE-V's analysis: the probe face's value for comparison, judged before any candidate of it is compared.


def binding_analysis(user: Any, face_id: int, policy: ReviewPolicy) -> ProbeAnalysis | None:
    """The analysis that holds for this user's comparisons of this probe face: their own, or under the shared
    policy the first one anybody recorded; None while there is none (the user must analyse first)."""
    analyses = probe_analyses(face_id)
    if policy.analysis_scope == AnalysisScope.SHARED:
        return analyses[0] if analyses else None
    return next((analysis for analysis in analyses if analysis.reviewer_id == user.pk), None)


def probe_analyses(face_id: int) -> list[ProbeAnalysis]:
    """Every analysis of the probe face, oldest first, with its reviewer."""
    return _read_once(
        ("analyses", face_id), lambda: list(ProbeAnalysis.objects.filter(face_id=face_id).select_related("reviewer"))
    )


def analysis_needed(user: Any, candidate: Candidate) -> bool:
    """Whether this user must record the probe face's analysis before comparing this candidate."""
    policy = review_policy_for(candidate.case.organisation)
    return binding_analysis(user, candidate.search.face_id, policy) is None


def analyses_visible_to(user: Any, candidate: Candidate) -> list[ProbeAnalysis]:
    """The analyses of the candidate's probe face this user may read. Shared analyses bind everyone, so all see
    them. Under "each", a reviewer's analysis is independent work like their decision: blind review hides the
    others' (even who made them) from someone who could still decide the candidate, until they have decided."""
    analyses = probe_analyses(candidate.search.face_id)
    policy = review_policy_for(candidate.case.organisation)
    if policy.analysis_scope == AnalysisScope.SHARED or may_see_decisions(user, candidate):
        return list(analyses)  # a copy: the page's other readers share the list read once
    return [a for a in analyses if a.reviewer_id == user.pk]


def analysis_may_be_read(user: Any, analysis: ProbeAnalysis) -> bool:
    """`analyses_visible_to` for one analysis, whatever candidate it is read from (the activity log's rows)."""
    if access.is_superuser(user) or analysis.reviewer_id == user.pk:
        return True
    face = Face.objects.select_related("organisation").defer("encoding").get(pk=analysis.face_id)
    if review_policy_for(face.organisation).analysis_scope == AnalysisScope.SHARED:
        return True
    candidates = Candidate.objects.select_related("case__organisation").filter(search__face_id=face.pk)
    return all(may_see_decisions(user, candidate) for candidate in candidates)


def queue_reveals(user: Any, items: list[Candidate]) -> tuple[set[int], set[int]]:
    """Of a queue page's items (read with their search): those whose comparison this user has recorded (their
    scores may show) and those whose probe face has the analysis that holds for this user (their gallery face may
    show). Two plain queries by the page's ids: one query with an EXISTS for each took 1 ms longer to build than
    both of these together, and asked in the rows' own query PostgreSQL would ask it of every item it sorts."""
    if not items:
        return set(), set()
    compared = set(
        FeatureComparison.objects.filter(candidate_id__in=[item.pk for item in items], reviewer=user).values_list(
            "candidate_id", flat=True
        )
    )
    analyses = ProbeAnalysis.objects.filter(face_id__in={item.search.face_id for item in items})
    organisation = access.organisation_of(user)
    if organisation is None or review_policy_for(organisation).analysis_scope != AnalysisScope.SHARED:
        analyses = analyses.filter(reviewer=user)
    analysed_faces = set(analyses.values_list("face_id", flat=True))
    # A closed item takes no more comparisons: nothing is left to judge first.
    analysed = {item.pk for item in items if item.search.face_id in analysed_faces or not item.is_open}
    return compared, analysed


def queue_claimers(candidate_ids: Iterable[int]) -> dict[int, list[str]]:
    """The usernames of those who claimed each of these candidates, first claim first: one query of two columns,
    where prefetching the claims built a claim and a user for each."""
    ids = list(candidate_ids)
    if not ids:
        return {}
    claims = ReviewClaim.objects.filter(candidate_id__in=ids).order_by("claimed_at", "pk")
    claimers: dict[int, list[str]] = {}
    for candidate_id, username in claims.values_list("candidate_id", "reviewer__username"):
        claimers.setdefault(candidate_id, []).append(username)
    return claimers


# The queue's case filter: the cases this reviewer has open items in, remembered for a short while

# Finding them asks the whole "may this reviewer decide it" question of every open item, inside an EXISTS per case:
# about an eighth of a queue page. Each web process remembers the answer, as case ids only, for each reviewer and
# view for QUEUE_CASES_SECONDS, and forgets it once the reviewer's own decision, probe judged of no value or recorded
# training commits. It is a list of links, not a rule: the rows, the count and every decision still ask afresh, so a
# case that appeared or emptied meanwhile is at most that late in the list (and its link shows its items as they are).
QUEUE_CASES_SECONDS = 30.0
_clock = time.monotonic
_queue_cases: dict[tuple[int, int, bool], tuple[float, list[int] | None]] = {}


def queue_cases(
    user: Any, organisation: Organisation, *, mine: bool, find: Callable[[], list[int] | None]
) -> list[tuple[int, str]]:
    """(id, reference) of the cases `find` returns (ids, or None for too many to list), by reference; `find` is
    asked again once the remembered answer is QUEUE_CASES_SECONDS old. The references are read afresh each time,
    so a case renamed since shows its new reference, and a deleted one is not listed."""
    key = (user.pk, organisation.pk, mine)
    now = _clock()
    remembered = _queue_cases.get(key)
    if remembered is None or now - remembered[0] > QUEUE_CASES_SECONDS:
        if len(_queue_cases) > 10_000:  # reviewers who have left: drop the lot rather than grow without bound
            _queue_cases.clear()
        remembered = _queue_cases[key] = (now, find())
    ids = remembered[1]
    if not ids:
        return []
    cases = Case.objects.filter(organisation=organisation, pk__in=ids).values_list("id", "reference")
    return sorted(cases, key=lambda pair: pair[1])


def queue_cases_forget(user_id: int) -> None:
    """Forget, in this process, the case lists remembered for this reviewer: they have just changed what they may
    decide."""
    for key in list(_queue_cases):  # a copy first: another thread of the process may be adding to it
        if key[0] == user_id:
            _queue_cases.pop(key, None)


def audit_detail_of_analysis(user: Any, event: Any) -> dict[str, Any]:
    """An analysis's log row as this user may read it: under "each", blind until they have recorded theirs."""
    analysis = ProbeAnalysis.objects.filter(pk=event.target_id).first() if str(event.target_id).isdigit() else None
    if analysis is None or analysis_may_be_read(user, analysis):
        return event.detail
    hidden = "Blind review: you may still decide a candidate of this probe face, so others' analyses are not shown."
    return {"hidden": hidden}


# Every reference photo of the candidate's subject, with when it was taken


CHILD_AGE = 18


@dataclass(frozen=True)
class ReferencePhoto:
    face: Face
    captured_on: date | None
    age: int | None  # the subject's age in whole years when it was taken, where known
    years_from_probe: int | None  # whole years between this photo and the probe photo, where both are dated
    is_candidate: bool  # the face the search found

    @property
    def label(self) -> str:
        taken = f"taken {self.captured_on:%Y-%m-%d}" if self.captured_on else "date taken unknown"
        return f"{taken}, age {self.age}" if self.age is not None else taken


@dataclass(frozen=True)
class ReferenceStrip:
    photos: list[ReferencePhoto]
    probe_captured_on: date | None
    child: bool
    # For a child: how many years lie between the photos, in words.
    gap_note: str


def _band_is_child(band: str) -> bool:
    return band in (AgeBand.B0_9, AgeBand.B10_17)


def reference_strip(candidate: Candidate) -> ReferenceStrip:
    """Every stored reference face of the candidate's subject (the search's own first), each with its photo's
    capture date, the subject's age then where known, and for a child the years between it and the probe."""
    subject, probe_photo = candidate.subject, candidate.search.face.photo
    faces = list(
        Face.objects.filter(subject=subject, purged_at__isnull=True)
        .select_related("photo__subject")
        .defer("encoding")
        .order_by("photo__captured_on", "photo_id", "index")
    )
    probe_date = probe_photo.captured_on
    photos = []
    for face in faces:
        taken = face.photo.captured_on
        gap = None
        if taken and probe_date:
            gap = abs(years_between(min(taken, probe_date), max(taken, probe_date)))
        photos.append(
            ReferencePhoto(
                face=face,
                captured_on=taken,
                age=face.photo.age_at_capture(),
                years_from_probe=gap,
                is_candidate=face.pk == candidate.reference_face_id,
            )
        )
    photos.sort(key=lambda p: not p.is_candidate)
    child = (
        _band_is_child(subject.age_band)
        or _band_is_child(candidate.case.probe_age_band)
        or any(p.age is not None and p.age < CHILD_AGE for p in photos)
    )
    note = ""
    if child:
        gaps = [p for p in photos if p.years_from_probe is not None]
        if not probe_date:
            note = "A child: the probe photo's date is unknown, so the years between the photos are unknown."
        elif not gaps:
            note = "A child: no reference photo is dated, so the years between the photos are unknown."
        else:
            spans = sorted({p.years_from_probe for p in gaps})
            years = (
                f"{spans[0]} year{'s' if spans[0] != 1 else ''}"
                if len(spans) == 1
                else f"{spans[0]} to {spans[-1]} years"
            )
            note = (
                f"A child: {years} between the probe photo and the dated reference photos. A child's face changes fast."
            )
    return ReferenceStrip(photos=photos, probe_captured_on=probe_date, child=child, gap_note=note)


# Marks on the faces: one's own, and once blind review allows, the other reviewers'


def marks_shown(user: Any, candidate: Candidate, *, decisions: list[ReviewDecision]) -> list[dict[str, Any]]:
    """The annotations this user sees drawn: their own (from their latest decision, else their comparison),
    and the other reviewers' from their latest of `decisions`: the candidate's decisions in the order they were
    made, read with their reviewers, when blind review lets this user see them, else none."""
    shown: list[dict[str, Any]] = []
    mine = own_latest_decision(user, candidate)
    if mine is not None:
        own = mine.annotations
    else:
        comparison = own_comparison(user, candidate)
        own = comparison.annotations if comparison else []
    shown.extend({**mark, "by": user.get_username(), "own": True} for mark in own or [])
    latest: dict[int, ReviewDecision] = {}
    for decision in decisions:
        if decision.reviewer_id != user.pk:
            latest[decision.reviewer_id] = decision
    for decision in latest.values():
        name = decision.reviewer.get_username()
        shown.extend({**mark, "by": name, "own": False} for mark in decision.annotations or [])
    return shown


def review_queue(user: Any) -> QuerySet[Candidate]:
    """The reviewer's queue: exactly the open candidates this user may decide now, oldest first."""
    return candidates_decidable_by(user, Candidate.objects.all()).order_by("created_at", "id")


@dataclass(frozen=True)
class Worksheet:
    """What one reviewer may see and do on one candidate now."""

    policy: ReviewPolicy
    training: TrainingStatus
    # Why this reviewer may not decide now; empty when they may.
    blockers: list[str]
    # Distance and rank stay hidden until the reviewer has compared the features (or decided).
    hide_scores: bool
    # The form records only the feature comparison; the decision comes after.
    compare_only: bool
    # This reviewer's latest decision on the candidate, if any, and whether they are correcting it now.
    own_latest: ReviewDecision | None
    correcting: bool
    # The decision the page was asked to correct (its `?correct=`), as given: the form carries it to
    # `review_decide`, which checks it.
    correction_of: str | None = None
    # The feature marks this reviewer recorded in the comparison step, if any: the worksheet starts from them.
    own_comparison: dict[str, str] = field(default_factory=dict)
    # Blind review: the other reviewers' decisions, shown once one's own is recorded (or to the senior decider,
    # or when the candidate is closed). Until then nothing of them, not even whether there are any: with the
    # candidate still pending, "two others have decided" says that they agreed (disagreement escalates), and
    # tells the reviewer whether their decision settles it (README, "Accountable review").
    decisions: list[ReviewDecision] = field(default_factory=list)
    decisions_hidden: bool = False
    # Nothing is left for this reviewer to do here: the candidate is closed, or they have decided it (and are not
    # correcting). The page then reports the state plainly instead of as a blocked control.
    finished: bool = False
    # ACE-V's analysis: the form records only the probe's value (no candidate is shown until it is in), and
    # the analysis that holds for this reviewer once it is.
    analyse_only: bool = False
    analysis: ProbeAnalysis | None = None
    analyses: list[ProbeAnalysis] = field(default_factory=list)
    # Annotations drawn on the faces: this reviewer's own, and the others' once blind review allows.
    marks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mark_columns(self) -> list[str]:
        """The worksheet's columns, in order."""
        return [label for _, label in FeatureMark.choices]

    @property
    def own_rows(self) -> list[dict[str, Any]]:
        """This reviewer's recorded worksheet, one row per FISWG component, for the read-only grid."""
        if self.own_latest is None:
            return []
        recorded = self.own_latest.features or {}
        return [
            {"label": label, "cells": [recorded.get(name) == value for value, _ in FeatureMark.choices]}
            for name, label in FEATURES
        ]


def queue_neighbour(user: Any, candidate: Candidate, *, later: bool) -> int | None:
    """The item after (`later`) or before this one in the user's queue, in its order (oldest first), or None.

    Asked when the reviewer moves, not on each candidate page: the query costs about a fifth of the page."""
    queue = candidates_decidable_by(user, Candidate.objects.all()).exclude(pk=candidate.pk)
    before = Q(created_at__lt=candidate.created_at) | Q(created_at=candidate.created_at, id__lt=candidate.pk)
    if later:
        return queue.exclude(before).order_by("created_at", "id").values_list("id", flat=True).first()
    return queue.filter(before).order_by("-created_at", "-id").values_list("id", flat=True).first()


def worksheet_for(
    user: Any, candidate: Candidate, *, correcting: bool = False, correction_of: str | None = None
) -> Worksheet:
    policy = review_policy_for(candidate.case.organisation)
    own_latest = own_latest_decision(user, candidate)
    blockers = decision_blockers(user, candidate, correcting=correcting)
    may_see_others = may_see_decisions(user, candidate)
    analysis = binding_analysis(user, candidate.search.face_id, policy)
    analyse_only = not blockers and analysis is None
    # ACE-V: while the probe is analysed the page shows nothing of the candidate, so nothing of the comparison step
    # is read: not its record, not its marks, and its scores are hidden whatever the policy.
    comparison = None if analyse_only else own_comparison(user, candidate)
    hide_scores = analyse_only or scores_hidden_from(user, candidate)
    # In the order they were made (ReviewDecision's ordering).
    decisions = list(candidate.decisions.select_related("reviewer")) if may_see_others else []
    return Worksheet(
        policy=policy,
        training=training_status(user, candidate.case.organisation),
        blockers=blockers,
        hide_scores=hide_scores,
        compare_only=hide_scores and not blockers and not analyse_only,
        own_latest=own_latest,
        correcting=correcting,
        correction_of=correction_of,
        own_comparison=comparison.features if comparison else {},
        decisions=decisions,
        decisions_hidden=not may_see_others,
        finished=not candidate.is_open or (own_latest is not None and not correcting),
        analyse_only=analyse_only,
        analysis=analysis,
        analyses=analyses_visible_to(user, candidate),
        marks=[] if analyse_only else marks_shown(user, candidate, decisions=decisions),
    )


def senior_reviewer_choices(organisation: Organisation | None) -> QuerySet:
    """Who the policy may name senior reviewer: the organisation's reviewers and org admins."""
    return get_user_model().objects.filter(
        membership__organisation=organisation, membership__role__in=access.REVIEW_ROLES
    )


def training_attestable_by(user: Any) -> QuerySet:
    """Whose training this user may record: the organisation's active reviewers and org admins, never oneself
    (nobody attests their own training) nor the organisation's API key users. `training_record` checks it again."""
    return (
        get_user_model()
        .objects.filter(
            membership__organisation=access.organisation_of(user),
            membership__role__in=access.REVIEW_ROLES,
            is_active=True,
        )
        .exclude(pk=user.pk)
        .exclude(api_keys__kind=ApiKeyKind.ORGANISATION)
        .order_by("username")
    )
