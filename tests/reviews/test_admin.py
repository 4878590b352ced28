from __future__ import annotations

import re

import pytest
from django.urls import reverse

from matching.models import Candidate, Outcome
from portal.models import AuditEvent
from reviews.models import FeatureComparison, ReviewDecision
from reviews.services import review_policy_update
from tests.conftest import OBAMA, OBAMA_2, decide, review_post


@pytest.fixture
def candidate(enrol, open_case):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", ethnicity="Black", sex="M", age_band="45-59")
    return open_case(OBAMA_2).candidates.get()


def change_url(candidate) -> str:
    return reverse("admin:reviews_reviewitem_change", args=[candidate.pk])


def test_reviewer_sees_both_faces_side_by_side_with_distance_and_rank(client, reviewers, candidate):
    client.force_login(reviewers[0])

    page = client.get(change_url(candidate)).content.decode()

    assert reverse("matching:face_crop", args=[candidate.search.face_id]) in page
    assert reverse("matching:face_crop", args=[candidate.reference_face_id]) in page
    assert reverse("matching:photo_image", args=[candidate.search.face.photo_id]) in page
    assert reverse("matching:photo_image", args=[candidate.reference_face.photo_id]) in page
    assert f"{candidate.distance:.3f}" in page and f"rank {candidate.rank}" in page
    for label in ["Face shape", "Hairline", "Forehead", "Eyebrows", "Eyes", "Nose", "Ears", "Mouth", "Chin and jaw"]:
        assert label in page
    assert "Identification: the same person" in page and "I have read the bias warning" in page


def test_two_reviewers_confirm_through_the_admin_form(client, reviewers, candidate):
    bob, rita = reviewers

    client.force_login(bob)
    first = client.post(change_url(candidate), review_post(reason="Ears, nose and hairline agree."), follow=True)
    candidate.refresh_from_db()
    outcome_after_one = candidate.outcome
    client.force_login(rita)
    second = client.post(
        change_url(candidate), review_post("probable", reason="Nose and jaw agree; ears hidden."), follow=True
    )

    assert (first.status_code, second.status_code) == (200, 200)
    assert outcome_after_one == Outcome.PENDING
    # Each reviewer is told what became of the candidate, on the queue they return to
    assert first.redirect_chain[-1][0].startswith(reverse("admin:reviews_reviewitem_changelist"))
    assert "needs more confirmations before the caseworker sees it" in first.content.decode()
    assert "it is now confirmed, and the caseworker sees it" in second.content.decode()
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED
    assert "Ears, nose and hairline agree." in candidate.outcome_reason and "rita" in candidate.outcome_reason
    decisions = list(ReviewDecision.objects.order_by("id"))
    assert [(d.reviewer, d.conclusion) for d in decisions] == [(bob, "identification"), (rita, "probable")]
    assert decisions[0].features["nose"] == "similar" and decisions[0].bias_acknowledged
    assert AuditEvent.objects.filter(action="candidate.confirmed").exists()


def test_a_reason_every_feature_and_the_acknowledgement_are_required(client, reviewers, candidate):
    client.force_login(reviewers[0])
    data = review_post(reason="  ")
    del data["feature_ears"], data["bias_acknowledged"]

    response = client.post(change_url(candidate), data)

    page = response.content.decode()
    assert response.status_code == 200
    assert page.count("This field is required") >= 2 and "Acknowledge the bias warning" in page
    assert not ReviewDecision.objects.exists()


def test_blind_review_hides_the_first_reason_from_the_second_reviewer(client, reviewers, candidate):
    bob, rita = reviewers
    decide(candidate, bob, reason="The scar above the left eyebrow matches.")
    client.force_login(rita)

    before = client.get(change_url(candidate)).content.decode()
    decide(candidate, rita, reason="Jaw line and ears agree.")
    after = client.get(change_url(candidate)).content.decode()

    assert "scar above the left eyebrow" not in before and "1 other reviewer(s) have decided" in before
    assert "scar above the left eyebrow" in after


def test_policy_can_hide_the_scores_until_the_comparison_is_recorded(client, reviewers, dana, candidate, org):
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    bob = reviewers[0]
    client.force_login(bob)

    before = client.get(change_url(candidate)).content.decode()
    data = {k: v for k, v in review_post().items() if k.startswith("feature_")}
    client.post(change_url(candidate), {**data, "_save": "Save"})
    after = client.get(change_url(candidate)).content.decode()

    assert f"{candidate.distance:.3f}" not in before and 'name="conclusion"' not in before
    assert FeatureComparison.objects.filter(reviewer=bob).exists()
    assert f"{candidate.distance:.3f}" in after and 'name="conclusion"' in after


def test_without_training_the_controls_are_disabled_and_the_page_says_why(client, bob, candidate):
    client.force_login(bob)

    page = client.get(change_url(candidate)).content.decode()
    response = client.post(change_url(candidate), review_post(), follow=True)

    # every control of the decision is there and disabled: the five conclusions, the reason, the acknowledgement
    controls = re.findall(r'<(?:input|textarea)[^>]*name="(?:conclusion|reason|bias_acknowledged)"[^>]*>', page)
    assert len(controls) == 7 and all(" disabled" in control for control in controls), controls
    assert "The decision controls are disabled" in page and "no recorded facial-comparison training" in page
    # and a decision posted anyway is refused: the page again, with the reason, and nothing recorded
    assert (response.status_code, response.redirect_chain) == (200, [])
    assert "The decision controls are disabled" in response.content.decode()
    assert not ReviewDecision.objects.exists()
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.PENDING


def test_the_case_creator_cannot_review_it(client, trained, dana, enrol, faces):
    from matching import services

    trained(dana)
    enrol("OBAMA-REF", OBAMA)
    case = services.case_create(
        organisation=dana.membership.organisation,
        acting_user=dana,
        reference="OWN",
        title="t",
        purpose="p",
        photos=[services.uploaded_image_read(faces.upload(OBAMA_2))],
    )
    services.photo_process(photo_id=case.photos.get().pk)
    client.force_login(dana)

    page = client.get(change_url(case.candidates.get())).content.decode()

    assert "separation of duties" in page


def test_nobody_can_edit_or_delete_a_decision(client, reviewers, dana, candidate):
    decision = decide(candidate, reviewers[0], conclusion="exclusion", reason="Different chin.")
    client.force_login(dana)

    change = client.post(reverse("admin:reviews_reviewdecision_change", args=[decision.pk]), {"reason": "edited"})
    delete = client.post(reverse("admin:reviews_reviewdecision_delete", args=[decision.pk]), {"post": "yes"})
    item = client.post(reverse("admin:reviews_reviewitem_delete", args=[candidate.pk]), {"post": "yes"})

    assert (change.status_code, delete.status_code, item.status_code) == (403, 403, 403)
    assert ReviewDecision.objects.get().reason == "Different chin."
    assert Candidate.objects.filter(pk=candidate.pk).exists()


def test_the_queue_lists_what_this_reviewer_may_still_decide_oldest_first(client, reviewers, enrol, open_case):
    bob, rita = reviewers
    enrol("OBAMA-REF", OBAMA)
    first = open_case(OBAMA_2, reference="Q-1").candidates.get()
    second = open_case("face_recognition/obama__tests_test_images_obama3.jpg", reference="Q-2").candidates.get()
    decide(first, bob)
    client.force_login(bob)

    bobs = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()
    client.force_login(rita)
    ritas = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()

    assert change_url(first) not in bobs and change_url(second) in bobs
    assert ritas.index(change_url(first)) < ritas.index(change_url(second))
    assert "waiting-fresh" in ritas


def test_queue_filters_by_severity_and_claims(client, reviewers, candidate, audit_run):
    bob, rita = reviewers
    client.force_login(bob)
    client.post(
        reverse("admin:reviews_reviewitem_changelist"),
        {"action": "claim", "_selected_action": [candidate.pk], "index": 0},
    )
    client.force_login(rita)

    elevated = client.get(reverse("admin:reviews_reviewitem_changelist") + "?severity=elevated").content.decode()
    standard = client.get(reverse("admin:reviews_reviewitem_changelist") + "?severity=standard").content.decode()
    claimed = client.get(reverse("admin:reviews_reviewitem_changelist") + "?claimed=others").content.decode()

    assert change_url(candidate) in elevated and change_url(candidate) not in standard
    assert change_url(candidate) in claimed and ">bob<" in claimed
