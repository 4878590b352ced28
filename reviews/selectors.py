"""Reads about one reviewer and one candidate, shared by the review workbench and the services' checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from matching.models import Candidate
from reviews import services
from reviews.models import FEATURES, FeatureMark, ReviewDecision, ReviewPolicy
from reviews.services import TrainingStatus


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
    # Blind review: the other reviewers' decisions, shown once one's own is recorded (or to the senior decider,
    # or when the candidate is closed); otherwise only how many there are.
    decisions: list[ReviewDecision] = field(default_factory=list)
    hidden_decisions: int = 0
    # The neighbours of this item in the reviewer's queue (what they may still decide, oldest first).
    previous_id: int | None = None
    next_id: int | None = None

    @property
    def marks(self) -> list[str]:
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


def queue_neighbours(user: Any, candidate: Candidate) -> tuple[int | None, int | None]:
    """The items before and after this one in the user's queue, in its order (oldest first)."""
    queue = services.candidates_decidable_by(user, Candidate.objects.all()).exclude(pk=candidate.pk)
    before = Q(created_at__lt=candidate.created_at) | Q(created_at=candidate.created_at, id__lt=candidate.pk)
    previous = queue.filter(before).order_by("-created_at", "-id").values_list("id", flat=True).first()
    following = queue.exclude(before).order_by("created_at", "id").values_list("id", flat=True).first()
    return previous, following


def worksheet_for(user: Any, candidate: Candidate, *, correcting: bool = False) -> Worksheet:
    policy = services.review_policy_for(candidate.case.organisation)
    own_latest = candidate.decisions.filter(reviewer=user).order_by("-created_at", "-id").first()
    blockers = services.decision_blockers(user, candidate, correcting=correcting)
    hide_scores = services.scores_hidden_from(user, candidate)
    may_see_others = services.may_see_decisions(user, candidate)
    previous_id, next_id = queue_neighbours(user, candidate)
    return Worksheet(
        policy=policy,
        training=services.training_status(user, candidate.case.organisation),
        blockers=blockers,
        hide_scores=hide_scores,
        compare_only=hide_scores and not blockers,
        own_latest=own_latest,
        correcting=correcting,
        decisions=list(candidate.decisions.select_related("reviewer")) if may_see_others else [],
        hidden_decisions=0 if may_see_others else candidate.decisions.count(),
        previous_id=previous_id,
        next_id=next_id,
    )
