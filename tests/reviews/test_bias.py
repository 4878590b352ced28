from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from matching.accuracy.evaluation import audit_run_create
from matching.models import AuditRun
from matching.services import ServiceError
from reviews.bias import bias_panel
from reviews.models import ReviewDecision
from tests.conftest import analysed, decide, review_post
from tests.factories import candidate_with, searchable_subjects


@pytest.fixture(autouse=True)
def scores_shown(org):
    """These tests are about the panel, which shows more with scores shown; those about hidden scores hide them."""
    from reviews.models import ReviewPolicy

    ReviewPolicy.objects.create(organisation=org, hide_scores_until_compared=False)


def panel_html(client, user, candidate) -> str:
    analysed(candidate, user)  # the candidate's page, past the probe's analysis
    client.force_login(user)
    return client.get(reverse("admin:reviews_reviewitem_change", args=[candidate.pk])).content.decode()


def test_a_subject_recorded_as_asian_gets_the_elevated_warning(client, bob, alice, audit_run, org):
    candidate = candidate_with(
        organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian", "sex": "M"}
    )

    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    assert panel.valid and panel.severity == "elevated"
    asian = next(f for f in panel.involved if f.key == "race=Asian")
    assert asian.local_ratio >= 3 and asian.fmr_low <= asian.fmr <= asian.fmr_high
    assert "Elevated risk of a false match" in page
    assert "Among different people in race=Asian" in page and "at least this close" in page


def test_a_subject_aged_0_to_9_gets_the_child_warning(client, bob, alice, audit_run, org):
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.55, subject={"age_band": "0-9"})

    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    assert panel.severity == "elevated"
    assert "under 18" in " ".join(panel.reasons)
    assert "children aged 0–9" in panel.child_warning and "cannot reliably tell different children apart" in page


def test_a_probe_recorded_as_a_teenager_raises_the_severity(audit_run, org, alice):
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.3, probe={"age_band": "10-17"})

    panel = bias_panel(candidate)

    assert panel.severity == "elevated"
    assert "The probe is under 18." in panel.reasons


def test_a_subject_with_no_recorded_group_shows_the_full_table(client, bob, alice, audit_run, org):
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.5)

    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    assert panel.involved == []
    assert len(panel.table) == audit_run.groups.exclude(key="all").count()
    assert "names no group the audit measured" in page
    assert "race=Asian &amp; age_group=18 and over" in page and "sex=F &amp; race=White" in page


def test_without_an_audit_the_panel_says_no_valid_audit(client, bob, alice, org):
    candidate = candidate_with(organisation=org, created_by=alice, subject={"ethnicity": "White"})

    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    assert not panel.valid and panel.severity == "unknown"
    assert "No valid audit." in page and "No audit has been run" in page


def test_blocking_setting_refuses_confirmation_without_a_valid_audit(reviewers, alice, org):
    bob, _ = reviewers
    org.require_valid_audit = True
    org.save()
    candidate = candidate_with(organisation=org, created_by=alice)

    with pytest.raises(ServiceError, match="requires a valid bias audit"):
        decide(candidate, bob, reason="Same ears and nose.")
    decide(candidate, bob, conclusion="exclusion", reason="Different chin line.")

    assert list(ReviewDecision.objects.values_list("conclusion", flat=True)) == ["exclusion"]


def test_blocking_shows_as_a_message_in_the_admin(client, reviewers, alice, org):
    bob, _ = reviewers
    org.require_valid_audit = True
    org.save()
    candidate = candidate_with(organisation=org, created_by=alice)
    analysed(candidate, bob)
    client.force_login(bob)

    response = client.post(
        reverse("admin:reviews_reviewitem_change", args=[candidate.pk]),
        review_post(reason="Same ears and nose."),
        follow=True,
    )

    assert "Confirmation is blocked" in response.content.decode()
    candidate.refresh_from_db()
    assert candidate.outcome == "pending"


def test_the_warning_is_snapshotted_with_the_decision_and_later_audits_do_not_change_it(
    reviewers, alice, audit_run, audit_dataset, org
):
    bob, _ = reviewers
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian"})
    decision = decide(candidate, bob, conclusion="exclusion", reason="Different ears.")
    before = ReviewDecision.objects.get(pk=decision.pk).bias_snapshot

    newer = audit_run_create(dataset=audit_dataset, organisation=org, acting_user=None, thresholds=[0.5, 0.6])

    after = ReviewDecision.objects.get(pk=decision.pk).bias_snapshot
    assert before == after
    assert after["run_id"] == audit_run.pk != newer.pk
    assert after["severity"] == "elevated"
    assert any(g["key"] == "race=Asian" for g in after["involved"])


def test_a_stale_audit_does_not_count(bob, alice, audit_run, org):
    AuditRun.objects.filter(pk=audit_run.pk).update(completed_at=audit_run.completed_at.replace(year=2020))
    candidate = candidate_with(organisation=org, created_by=alice)

    panel = bias_panel(candidate)

    assert not panel.valid and "days old" in panel.reason


# 1:N figures, hidden scores and closed candidates


def _gallery_of(org, count: int, **attributes):
    searchable_subjects(org, count, **attributes)


def test_the_headline_names_the_largest_risk_with_the_gallery_figure_and_a_comparison_group(
    client, bob, alice, audit_run, org
):
    # Given a gallery of 40 Asian and 160 White subjects, and a candidate recorded as an Asian man
    _gallery_of(org, 40, ethnicity="Asian", sex="M")
    _gallery_of(org, 160, ethnicity="White", sex="F")
    candidate = candidate_with(
        organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian", "sex": "M"}
    )

    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    # Then the sentence counts strangers in this gallery at least this close, with an interval and the people
    asian = next(f for f in panel.involved if f.key == "race=Asian")
    assert asian.gallery_size == 40  # the White subjects are not compared with an Asian stranger
    assert asian.local_expected_low <= asian.local_expected <= asian.local_expected_high
    assert asian.fpir_low <= asian.fpir <= asian.fpir_high
    assert "at least this close" in panel.headline and f"audit of {asian.identities} people" in panel.headline
    assert panel.comparison_group and _describe_key(panel.comparison_group) in panel.headline
    assert escape(panel.headline) in page
    # and the compact table shows each involved group with its people; the full table stays collapsed
    assert 'class="bias-full">' in page or 'class="bias-full"\n' in page


def _describe_key(key: str) -> str:
    return ", ".join(part.replace("=", " ") for part in key.split(" & "))


def test_hidden_scores_leave_no_distance_or_score_local_rate_in_the_bias_panel(
    client, reviewers, dana, alice, audit_run, org
):
    # Given the policy hides scores until the comparison is recorded, and a candidate at distance 0.4873
    from reviews.services import review_policy_update

    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    _gallery_of(org, 30, ethnicity="Asian")
    candidate = candidate_with(
        organisation=org, created_by=alice, distance=0.4873, subject={"ethnicity": "Asian", "age_band": "0-9"}
    )
    bob, _ = reviewers
    analysed(candidate, bob)
    client.force_login(bob)
    url = reverse("admin:reviews_reviewitem_change", args=[candidate.pk])

    # When the reviewer opens it before comparing
    before = client.get(url).content.decode()

    # Then the panel shows group-level rates at the threshold only
    assert "0.487" not in before
    assert "at least this close" not in before and "at least as close" not in before
    assert "per 1,000 pairs" not in before
    assert "Searches returning a candidate at 0.60" in before
    assert "cannot reliably tell different children apart" in before  # the under-10 statement stays

    # And once the comparison is recorded, the distance and the local figures appear
    data = {k: v for k, v in review_post().items() if k.startswith("feature_")}
    client.post(url, {**data, "_save": "Save"})
    after = client.get(url).content.decode()
    assert "0.487" in after and "at least this close" in after


def test_the_decision_snapshot_keeps_the_1_to_n_figures_as_shown(reviewers, alice, audit_run, org):
    _gallery_of(org, 25, ethnicity="Asian")
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian"})
    bob, _ = reviewers

    decision = decide(candidate, bob, conclusion="exclusion", reason="Different ears.")

    shown = bias_panel(candidate)
    stored = next(g for g in decision.bias_snapshot["involved"] if g["key"] == "race=Asian")
    live = next(g for g in shown.involved if g.key == "race=Asian")
    assert stored["gallery_size"] == 25 and stored["fpir"] == live.fpir and stored["expected"] == live.expected
    assert decision.bias_snapshot["headline"] == shown.headline


def test_a_closed_candidate_shows_what_each_reviewer_saw_and_notes_a_newer_audit(
    client, reviewers, alice, audit_run, audit_dataset, org
):
    # Given two reviewers who excluded a candidate, and then a newer audit
    bob, rita = reviewers
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian"})
    decide(candidate, bob, conclusion="exclusion", reason="Different ears.")
    decide(candidate, rita, conclusion="exclusion", reason="Different chin.")
    candidate.refresh_from_db()
    assert candidate.outcome == "rejected"
    newer = audit_run_create(dataset=audit_dataset, organisation=org, acting_user=None, thresholds=[0.5, 0.6])

    # When a reviewer opens it
    page = panel_html(client, bob, candidate)

    # Then each reviewer's stored panel is shown, with a visible note that the current audit differs
    assert "This candidate is closed." in page
    assert "Seen by bob" in page and "Seen by rita" in page
    assert page.count("The current audit differs.") == 2
    assert f"the current panel uses audit {newer.pk}" in page
    assert f"audit {audit_run.pk} of" in page


def _hand_built_audit(org):
    """A valid audit of the engine in use, made of rows: one sufficient group, race=Asian, 2 of 3 pairs within 0.6."""
    import numpy as np
    from django.utils import timezone

    from matching.engine import engine_version
    from matching.models import AuditDataset, AuditGroup, AuditRate

    dataset = AuditDataset.objects.create(organisation=org, name="set", status="done")
    run = AuditRun.objects.create(
        dataset=dataset,
        organisation=org,
        engine_version=engine_version(),
        thresholds=[0.6],
        threshold_in_use=0.6,
        target_fmr=0.001,
        min_identities=2,
        min_effective_pairs=1,
        photos=3,
        completed_at=timezone.now(),
    )
    group = AuditGroup.objects.create(
        run=run,
        key="race=Asian",
        attributes={"race": "Asian"},
        photos=3,
        identities=3,
        impostor_pairs=3,
        genuine_pairs=0,
        insufficient=False,
        insufficient_reasons=[],
        impostor_distances=np.array([0.3, 0.45, 0.7], dtype=np.float32).tobytes(),
        genuine_distances=b"",
        impostor_people=np.array([[0, 1], [0, 2], [1, 2]], dtype=np.int32).tobytes(),
    )
    AuditRate.objects.create(
        group=group,
        threshold=0.6,
        false_matches=2,
        impostor_pairs=3,
        fmr=2 / 3,
        fmr_low=0.2,
        fmr_high=0.9,
        false_non_matches=0,
        genuine_pairs=0,
    )
    return run


def test_hidden_scores_keep_the_distance_out_of_the_panel_over_http(client, reviewers, dana, alice, org):
    # Given hidden scores and a valid audit (before the fix the panel printed "Distance of this candidate: 0.487")
    from reviews.services import review_policy_update

    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    _hand_built_audit(org)
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.4873, subject={"ethnicity": "Asian"})
    analysed(candidate, reviewers[0])
    client.force_login(reviewers[0])

    page = client.get(reverse("admin:reviews_reviewitem_change", args=[candidate.pk])).content.decode()

    assert "what the audit says" in page.lower() and "race=Asian" in page
    assert "0.487" not in page and "at least this close" not in page
