"""What reviewers found, beside what the audit predicted for the same searches (the settings page's loop)."""

from __future__ import annotations

from django.urls import reverse

from matching.accuracy.findings import ALL_SEARCHES, review_findings
from matching.accuracy.gallery_risk import threshold_consequences
from tests.conftest import decide
from tests.factories import candidate_with, searchable_subjects, women_who_look_alike


def _rejected(org, alice, reviewers, count: int, **probe):
    bob, rita = reviewers
    for _ in range(count):
        candidate = candidate_with(organisation=org, created_by=alice, distance=0.55, probe=probe)
        decide(candidate, bob, conclusion="exclusion", reason="Different ears.")
        decide(candidate, rita, conclusion="exclusion", reason="Different chin.")


def test_searches_are_counted_per_month_and_group_of_the_person_sought(org, alice, reviewers):
    # Given an audit, and three searches for women and one for a man, each with a candidate reviewers rejected
    women_who_look_alike(org)
    searchable_subjects(org, 10, sex="F")
    searchable_subjects(org, 10, sex="M")
    _rejected(org, alice, reviewers, 3, sex="F")
    _rejected(org, alice, reviewers, 1, sex="M")
    # and one search still open, which is not counted
    candidate_with(organisation=org, created_by=alice, distance=0.5, probe={"sex": "F"})

    findings = {f.group: f for f in review_findings(org, threshold_consequences(org))}

    assert (findings[ALL_SEARCHES].searches, findings[ALL_SEARCHES].rejected) == (4, 4)
    women = findings["sex=F"]
    assert (women.searches, women.confirmed, women.rejected, women.with_stranger) == (3, 0, 3, 3)
    assert women.observed[0] == 1.0 and women.observed[1] < 1.0
    assert women.predicted is not None and women.predicted_low <= women.predicted <= women.predicted_high


def test_a_group_whose_reviewers_reject_far_more_than_the_audit_predicts_is_flagged(
    client, dana, org, alice, reviewers
):
    # Given an audit in which men look like nobody at 0.6, but reviewers rejected a stranger in every one of
    # twelve searches for a man
    women_who_look_alike(org)
    searchable_subjects(org, 10, sex="F")
    searchable_subjects(org, 10, sex="M")
    _rejected(org, alice, reviewers, 12, sex="M")

    findings = {f.group: f for f in review_findings(org, threshold_consequences(org))}
    client.force_login(dana)
    page = client.get(reverse("matching:organisation_settings")).content.decode()

    # Then the group is flagged: the reviewers' evidence and the audit disagree beyond both intervals
    assert findings["sex=M"].predicted == 0.0 and findings["sex=M"].disagreement == "more"
    assert 'class="disagree"' in page and "reviewers found strangers more often than the audit predicts" in page
