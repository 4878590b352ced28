"""Two reviewers deciding the same candidate at the same moment, on PostgreSQL's row locks."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from matching.models import Candidate, Outcome
from matching.services import ServiceError
from reviews.models import ReviewDecision
from tests.conftest import decide
from tests.factories import candidate_with

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgresql_only(reason="Two reviewers deciding at once are serialised by PostgreSQL's row locks."),
]


def _race(candidate, calls):
    barrier = threading.Barrier(len(calls))
    errors: list[Exception] = []

    def run(reviewer, conclusion):
        try:
            barrier.wait()
            decide(candidate, reviewer, conclusion=conclusion, reason=f"{reviewer} decided {conclusion}.")
        except ServiceError as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_two_confirmations_at_once_confirm_exactly_once(reviewers, org, alice):
    candidate = candidate_with(organisation=org, created_by=alice)

    errors = _race(candidate, [(reviewers[0], "identification"), (reviewers[1], "probable")])

    candidate.refresh_from_db()
    assert errors == []
    assert candidate.outcome == Outcome.CONFIRMED
    assert ReviewDecision.objects.filter(candidate=candidate).count() == 2


def test_a_confirmation_and_a_rejection_at_once_escalate(reviewers, org, alice):
    candidate = candidate_with(organisation=org, created_by=alice)

    errors = _race(candidate, [(reviewers[0], "identification"), (reviewers[1], "exclusion")])

    candidate.refresh_from_db()
    assert errors == [] and candidate.outcome == Outcome.ESCALATED


def test_the_same_reviewer_twice_at_once_records_one_decision(reviewers, org, alice):
    candidate = candidate_with(organisation=org, created_by=alice)

    errors = _race(candidate, [(reviewers[0], "identification"), (reviewers[0], "exclusion")])

    assert len(errors) == 1 and "already decided" in str(errors[0])
    assert ReviewDecision.objects.filter(candidate=candidate).count() == 1
    assert Candidate.objects.get(pk=candidate.pk).outcome == Outcome.PENDING
