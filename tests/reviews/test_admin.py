from __future__ import annotations

import pytest
from django.urls import reverse

from matching.models import Candidate, Outcome
from portal.models import AuditEvent
from reviews.models import ReviewDecision
from tests.conftest import OBAMA, OBAMA_2


@pytest.fixture
def candidate(enrol, open_case):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", ethnicity="Black", sex="M", age_band="45-59")
    return open_case(OBAMA_2).candidates.get()


def change_url(candidate) -> str:
    return reverse("admin:reviews_reviewitem_change", args=[candidate.pk])


def test_reviewer_sees_both_faces_side_by_side_with_distance_and_rank(client, bob, candidate):
    client.force_login(bob)

    page = client.get(change_url(candidate)).content.decode()

    assert reverse("matching:face_crop", args=[candidate.search.face_id]) in page
    assert reverse("matching:face_crop", args=[candidate.reference_face_id]) in page
    assert reverse("matching:photo_image", args=[candidate.search.face.photo_id]) in page
    assert reverse("matching:photo_image", args=[candidate.reference_face.photo_id]) in page
    assert f"{candidate.distance:.3f}" in page and f"rank {candidate.rank}" in page


def test_reviewer_confirms_through_the_admin_form(client, bob, candidate):
    client.force_login(bob)

    response = client.post(
        change_url(candidate), {"decision": "confirm", "reason": "Ears, nose and hairline agree.", "_save": "Save"}
    )

    assert response.status_code == 302
    candidate.refresh_from_db()
    assert (candidate.outcome, candidate.outcome_by, candidate.outcome_reason) == (
        Outcome.CONFIRMED,
        bob,
        "Ears, nose and hairline agree.",
    )
    decision = ReviewDecision.objects.get()
    assert (decision.reviewer, decision.decision) == (bob, "confirm")
    assert AuditEvent.objects.filter(action="review.confirm", actor=bob).exists()


def test_a_reason_is_required(client, bob, candidate):
    client.force_login(bob)

    response = client.post(change_url(candidate), {"decision": "reject", "reason": "  ", "_save": "Save"})

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.PENDING and not ReviewDecision.objects.exists()


def test_a_decided_item_cannot_be_edited_again(client, bob, candidate):
    client.force_login(bob)
    client.post(change_url(candidate), {"decision": "reject", "reason": "Different ear shape.", "_save": "Save"})

    page = client.get(change_url(candidate))
    second = client.post(change_url(candidate), {"decision": "confirm", "reason": "Changed my mind.", "_save": "Save"})

    assert 'name="decision"' not in page.content.decode()
    assert second.status_code == 403
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.REJECTED and ReviewDecision.objects.count() == 1


def test_nobody_can_delete_a_decision_or_review_item(client, bob, dana, candidate):
    from reviews.services import review_decide

    decision = review_decide(candidate_id=candidate.pk, decision="reject", reason="Different chin.", acting_user=bob)
    client.force_login(dana)

    item = client.post(reverse("admin:reviews_reviewitem_delete", args=[candidate.pk]), {"post": "yes"})
    row = client.post(reverse("admin:reviews_reviewdecision_delete", args=[decision.pk]), {"post": "yes"})

    assert (item.status_code, row.status_code) == (403, 403)
    assert Candidate.objects.filter(pk=candidate.pk).exists() and ReviewDecision.objects.count() == 1


def test_the_queue_lists_pending_items_oldest_first(client, bob, candidate):
    client.force_login(bob)

    page = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()

    assert change_url(candidate) in page


def test_rejected_candidate_never_appears_to_the_caseworker(client, alice, bob, candidate):
    client.force_login(bob)
    client.post(change_url(candidate), {"decision": "reject", "reason": "Different ear shape.", "_save": "Save"})
    client.force_login(alice)

    page = client.get(reverse("matching:case_detail", args=[candidate.case_id])).content.decode()

    assert "OBAMA-REF" not in page and "Barack Obama" not in page
    assert '<strong data-count="rejected">1</strong>' in page
