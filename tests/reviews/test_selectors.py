"""The worksheet: what one reviewer may see and do on one candidate."""

from __future__ import annotations

from reviews.selectors import worksheet_for
from reviews.services import review_compare, review_policy_update
from tests.conftest import ALL_SIMILAR, OBAMA, OBAMA_2, analyse, decide
from tests.factories import candidate_with


def test_review_is_blind_until_ones_own_decision_is_recorded(org, alice, reviewers):
    # Given a candidate that one reviewer has decided
    bob, rita = reviewers
    candidate = candidate_with(organisation=org, created_by=alice)
    decide(candidate, bob, reason="Ear shape agrees.")

    # When the second reviewer opens it, then they see no decision, and not how many there are: their worksheet
    # reads as it does on a candidate nobody has decided
    before = worksheet_for(rita, candidate)
    untouched = worksheet_for(rita, candidate_with(organisation=org, created_by=alice))
    assert [getattr(before, k) for k in vars(before) if "decision" in k] == [
        getattr(untouched, k) for k in vars(untouched) if "decision" in k
    ]
    assert (before.decisions_hidden, before.decisions, before.blockers) == (True, [], [])

    # And once they have decided too, they see each decision and reason, and may not decide again
    decide(candidate, rita, reason="Nose bridge agrees.")
    after = worksheet_for(rita, candidate)
    assert after.decisions_hidden is False
    assert [d.reason for d in after.decisions] == ["Ear shape agrees.", "Nose bridge agrees."]
    assert after.own_latest.reason == "Nose bridge agrees."
    assert any("already decided" in b for b in after.blockers)
    assert not worksheet_for(rita, candidate, correcting=True).blockers


def test_scores_stay_hidden_until_the_features_are_compared_when_the_policy_says_so(org, alice, dana, reviewers):
    bob, _ = reviewers
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    candidate = candidate_with(organisation=org, created_by=alice)
    analyse(candidate, bob)

    first = worksheet_for(bob, candidate)
    review_compare(candidate_id=candidate.pk, features=ALL_SIMILAR, acting_user=bob)
    second = worksheet_for(bob, candidate)

    assert (first.hide_scores, first.compare_only) == (True, True)
    assert (second.hide_scores, second.compare_only) == (False, False)


def test_the_case_creator_gets_reasons_instead_of_decision_controls(org, alice, trained):
    # Given a caseworker-turned-reviewer who created the case, without current training
    candidate = candidate_with(organisation=org, created_by=alice)
    alice.membership.role = "reviewer"
    alice.membership.save()

    worksheet = worksheet_for(alice, candidate)

    assert any("separation of duties" in b for b in worksheet.blockers)
    assert any("training" in b for b in worksheet.blockers)
    assert worksheet.compare_only is False


def test_queue_neighbours_follow_the_queue_order_and_skip_what_the_reviewer_may_not_decide(reviewers, enrol, open_case):
    from reviews.selectors import queue_neighbour

    # Given three candidates in bob's queue, oldest first, and a fourth he has already decided
    bob, _ = reviewers
    enrol("OBAMA-REF", OBAMA)
    first, second, third, decided = (open_case(OBAMA_2, reference=f"C-{n}").candidates.get() for n in range(4))
    decide(decided, bob)

    # Then each one's neighbours are the items before and after it that he may still decide
    def neighbours(candidate):
        return queue_neighbour(bob, candidate, later=False), queue_neighbour(bob, candidate, later=True)

    assert neighbours(first) == (None, second.pk)
    assert neighbours(second) == (first.pk, third.pk)
    assert neighbours(third) == (second.pk, None)
    assert neighbours(decided) == (third.pk, None)
