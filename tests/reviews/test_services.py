from __future__ import annotations

import datetime

import pytest
from django.core import mail
from django.utils import timezone

from matching.models import Outcome
from matching.services import ServiceError
from portal.models import AuditEvent
from reviews.models import ReviewDecision
from reviews.services import review_policy_update, training_record
from tests.conftest import decide
from tests.factories import candidate_with


@pytest.fixture
def candidate(org, alice):
    return candidate_with(organisation=org, created_by=alice, subject={"ethnicity": "White"})


def test_one_confirmation_leaves_the_candidate_pending_and_hidden(client, reviewers, candidate, alice):
    decide(candidate, reviewers[0])

    candidate.refresh_from_db()
    client.force_login(alice)
    page = client.get(f"/cases/{candidate.case_id}/").content.decode()
    assert candidate.outcome == Outcome.PENDING
    assert candidate.subject.code not in page


def test_a_second_confirmation_by_another_reviewer_confirms(reviewers, candidate, alice):
    decide(candidate, reviewers[0])
    decide(candidate, reviewers[1], conclusion="probable")

    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED


def test_a_confirmation_and_a_rejection_escalate(reviewers, candidate):
    decide(candidate, reviewers[0])
    decide(candidate, reviewers[1], conclusion="probable_exclusion", reason="Ear lobes differ.")

    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.ESCALATED
    assert "Reviewers disagreed" in candidate.outcome_reason


def test_an_escalation_is_closed_by_the_org_admin_with_a_reason(reviewers, candidate, dana, trained):
    decide(candidate, reviewers[0])
    decide(candidate, reviewers[1], conclusion="exclusion", reason="Different ears.")
    trained(dana)

    decision = decide(candidate, dana, conclusion="exclusion", reason="The ear shape differs clearly.")

    candidate.refresh_from_db()
    assert decision.escalation and candidate.outcome == Outcome.REJECTED


def test_an_escalation_can_go_to_a_designated_senior_reviewer(
    reviewers, candidate, dana, org, trained, django_user_model
):
    from tests.conftest import _member

    senior = _member("sam", org, "reviewer")
    trained(senior)
    review_policy_update(organisation=org, acting_user=dana, senior_reviewer=senior)
    decide(candidate, reviewers[0])
    decide(candidate, reviewers[1], conclusion="inconclusive", reason="Too blurred to tell.")

    decide(candidate, senior, conclusion="probable", reason="The sharper second photo shows the same ears.")

    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED


def test_a_settler_is_one_confirmation_not_all_that_the_policy_requires(reviewers, candidate, dana, org, trained):
    from tests.conftest import _member

    # Given a policy of three confirmations, a senior reviewer, and a disagreement between two reviewers
    senior = _member("sam", org, "reviewer")
    trained(senior)
    trained(dana)
    review_policy_update(organisation=org, acting_user=dana, senior_reviewer=senior, required_confirmations=3)
    decide(candidate, reviewers[0])
    decide(candidate, reviewers[1], conclusion="exclusion", reason="Different ears.")

    # When the org admin settles it with a confirmation: one reviewer and one settler are two people, not three
    decide(candidate, dana, conclusion="probable", reason="The sharper second photo shows the same ears.")
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.ESCALATED

    # Then the org admin cannot add a second one, and the senior reviewer, who took no part, makes the third
    with pytest.raises(ServiceError):
        decide(candidate, dana, conclusion="identification", reason="I am sure now, having looked again.")
    decide(candidate, senior, conclusion="identification", reason="Ears, nose and the scar agree.")
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED
    assert sorted(u.username for u in candidate.confirmed_by.all()) == sorted([reviewers[0].username, "dana", "sam"])


def test_a_plain_reviewer_cannot_settle_an_escalation(reviewers, candidate, org, trained):
    from tests.conftest import _member

    third = _member("tess", org, "reviewer")
    trained(third)
    decide(candidate, reviewers[0])
    decide(candidate, reviewers[1], conclusion="exclusion", reason="Different ears.")

    with pytest.raises(ServiceError, match="an org admin or the senior reviewer decides"):
        decide(candidate, third)


def test_the_same_reviewer_deciding_twice_is_refused(reviewers, candidate):
    decide(candidate, reviewers[0])

    with pytest.raises(ServiceError, match="already decided this candidate"):
        decide(candidate, reviewers[0], conclusion="exclusion", reason="Second thoughts.")
    assert ReviewDecision.objects.count() == 1


def test_a_correction_is_a_new_decision_that_refers_to_the_old_one(reviewers, candidate):
    first = decide(candidate, reviewers[0], conclusion="exclusion", reason="Typo: I meant the other candidate.")

    correction = decide(candidate, reviewers[0], conclusion="identification", corrects_id=first.pk)
    decide(candidate, reviewers[1])

    candidate.refresh_from_db()
    assert correction.corrects == first and ReviewDecision.objects.count() == 3
    assert candidate.outcome == Outcome.CONFIRMED


def test_separation_of_duties_refuses_the_case_creator(trained, dana, org):
    trained(dana)
    candidate = candidate_with(organisation=org, created_by=dana)

    with pytest.raises(ServiceError, match="separation of duties"):
        decide(candidate, dana)


def test_training_is_required_and_expires(bob, candidate, trained):
    with pytest.raises(ServiceError, match="no recorded facial-comparison training"):
        decide(candidate, bob)

    trained(bob, days_ago=400)
    with pytest.raises(ServiceError, match="training expired on"):
        decide(candidate, bob)


def test_the_bias_warning_must_be_acknowledged(reviewers, candidate):
    with pytest.raises(ServiceError, match="Acknowledge the bias warning"):
        decide(candidate, reviewers[0], bias_acknowledged=False)


def test_every_feature_must_be_marked(reviewers, candidate):
    from tests.conftest import ALL_SIMILAR

    features = {k: v for k, v in ALL_SIMILAR.items() if k != "ears"}
    with pytest.raises(ServiceError, match="missing: Ears"):
        decide(candidate, reviewers[0], features=features)


def test_the_caseworker_is_mailed_when_a_match_is_confirmed_and_review_completes(
    reviewers, candidate, alice, eager_tasks, django_capture_on_commit_callbacks
):
    alice.email = "alice@example.org"
    alice.save()

    with django_capture_on_commit_callbacks(execute=True):
        decide(candidate, reviewers[0])
        decide(candidate, reviewers[1])

    (message,) = mail.outbox
    assert message.to == ["alice@example.org"]
    assert "confirmed match is available" in message.body and "review of case" in message.body.lower()
    assert candidate.subject.code not in message.body


def test_policy_and_training_changes_are_recorded(dana, org, bob):
    review_policy_update(organisation=org, acting_user=dana, required_confirmations=3)
    training_record(
        organisation=org, reviewer=bob, trained_on=timezone.localdate() - datetime.timedelta(days=1), acting_user=dana
    )

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"review_policy.update", "training.record"} <= actions


def test_only_org_admins_change_the_policy(org, bob):
    with pytest.raises(ServiceError, match="Only the organisation's admins"):
        review_policy_update(organisation=org, acting_user=bob, required_confirmations=1)


# The queue's warning severity, stored with the candidate


def _queue_row(client, candidate) -> str:
    from django.urls import reverse

    page = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()
    link = reverse("admin:reviews_reviewitem_change", args=[candidate.pk])
    rows = [row for row in page.split("<tr") if link in row]
    assert len(rows) == 1, f"candidate {candidate.pk} is not in the queue"
    return rows[0]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_candidate_the_worker_stores_shows_its_warning_in_the_queue_at_once(
    client, celery_worker_process, enrol, open_case, reviewers, dana, org
):
    from tests.conftest import OBAMA, OBAMA_2, wait_for

    # Given scores shown (so the queue has its warning column), a gallery, and no audit yet
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=False)
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")

    # When alice opens a case and the real worker searches its photo (a worker without beat: no sweep runs)
    case = open_case(OBAMA_2, reference="W-1", process=False)
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="the probe photo")

    # Then the candidate is in bob's queue with its warning, as every other candidate is: never "—"
    candidate = case.candidates.get()
    client.force_login(reviewers[0])
    cell = _queue_row(client, candidate).split('class="field-severity">')[1].split("</td>")[0]
    assert "severity-unknown" in cell and "No valid audit" in cell, cell
    assert candidate.warning.run_id is None


def test_a_stored_warning_is_the_panel_s_severity_under_the_valid_audit(enrol, open_case, audit_run, org):
    from reviews.bias import bias_panel
    from tests.conftest import OBAMA, OBAMA_2

    # Given a valid audit, and a gallery subject recorded in its groups
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", ethnicity="Black", sex="M", age_band="45-59")

    # When a case's photo is searched
    candidate = open_case(OBAMA_2).candidates.get()

    # Then its stored warning is the bias panel's severity under that audit, stored with the candidate
    assert candidate.warning.run_id == audit_run.pk
    assert candidate.warning.severity == bias_panel(candidate).severity != "unknown"


def test_a_photo_searched_twice_stores_one_warning_per_candidate(enrol, open_case):
    from matching.services import photo_process
    from reviews.models import CandidateWarning
    from tests.conftest import OBAMA, OBAMA_2

    enrol("OBAMA-REF", OBAMA)
    case = open_case(OBAMA_2)
    photo = case.photos.get()
    photo.status = "queued"
    photo.save(update_fields=["status"])

    photo_process(photo_id=photo.pk)

    assert CandidateWarning.objects.filter(candidate__case=case).count() == case.candidates.count() == 1
