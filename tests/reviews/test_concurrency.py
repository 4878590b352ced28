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
    from tests.conftest import analyse

    candidate = candidate_with(organisation=org, created_by=alice)
    analyse(candidate, reviewers[0])  # the race is about the decision

    errors = _race(candidate, [(reviewers[0], "identification"), (reviewers[0], "exclusion")])

    assert len(errors) == 1 and "already decided" in str(errors[0])
    assert ReviewDecision.objects.filter(candidate=candidate).count() == 1
    assert Candidate.objects.get(pk=candidate.pk).outcome == Outcome.PENDING


def _waiting_on_a_lock(count: int) -> bool:
    """Whether `count` other sessions of this database are waiting for a row lock now."""
    from django.db import connection

    with connection.cursor() as cursor:
        # The statistics views are a snapshot per transaction, and this runs inside the lock holder's: renew it.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0] >= count


def test_two_first_analyses_at_once_under_the_shared_policy_leave_one(reviewers, org, alice, dana):
    from django.db import transaction

    from matching.models import Face
    from reviews.models import ProbeAnalysis
    from reviews.services import probe_analyse, review_policy_update
    from tests.conftest import wait_for

    # Given the shared policy, and the probe face's row held by another transaction
    review_policy_update(organisation=org, acting_user=dana, analysis_scope="shared")
    candidate = candidate_with(organisation=org, created_by=alice)
    errors: list[Exception] = []

    def analyse(reviewer, value):
        try:
            probe_analyse(candidate_id=candidate.pk, value=value, limits=["blur"], acting_user=reviewer)
        except ServiceError as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=analyse, args=call) for call in ((reviewers[0], "value"), (reviewers[1], "none"))
    ]
    with transaction.atomic():
        Face.objects.select_for_update().get(pk=candidate.search.face_id)
        for thread in threads:
            thread.start()
        # When both reviewers are waiting for it (PostgreSQL says so), the holder lets go
        wait_for(lambda: _waiting_on_a_lock(2), timeout=30, message="both analyses waiting on the face's row")
    for thread in threads:
        thread.join(timeout=60)

    # Then one analysis holds, and the other reviewer was told whose
    assert ProbeAnalysis.objects.filter(face_id=candidate.search.face_id).count() == 1
    assert len(errors) == 1 and "already recorded the analysis of this probe face" in str(errors[0])
    first = ProbeAnalysis.objects.get()
    candidate.refresh_from_db()
    assert candidate.outcome == (Outcome.UNSUITABLE if first.value == "none" else Outcome.PENDING)
