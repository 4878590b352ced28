from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils.html import escape

from matching.accuracy.evaluation import audit_run_create
from matching.accuracy.gallery_risk import in_100
from matching.models import AuditRun
from matching.services import ServiceError
from reviews.bias import BiasPanel, bias_panel
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


def _gallery_of(org, count: int, **attributes):
    searchable_subjects(org, count, **attributes)


def _mixed_gallery(org):
    """180 searchable subjects: 60 Asian men, 60 White women aged 30-44, 60 with nothing recorded."""
    _gallery_of(org, 60, ethnicity="Asian", sex="M")
    _gallery_of(org, 60, ethnicity="White", sex="F", age_band="30-44")
    _gallery_of(org, 60)


def test_the_headline_counts_the_whole_gallery_in_natural_frequencies_for_the_probes_own_group(
    client, bob, alice, audit_run, org
):
    # Given a gallery of 180 people, and a candidate for a probe the case records as an Asian man
    _mixed_gallery(org)
    candidate = candidate_with(
        organisation=org,
        created_by=alice,
        distance=0.5,
        probe={"ethnicity": "Asian", "sex": "M"},
        subject={"ethnicity": "Asian", "sex": "M"},
    )

    # When the reviewer opens it
    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    # Then one sentence says, for the probe's own group, how many in 100 strangers' searches return someone this close
    assert panel.headline.startswith("In this gallery of 180 people, about ")
    assert "in 100 searches for a stranger like this probe (" in panel.headline
    assert "return someone at least this close (95% CI " in panel.headline
    chosen = max((r for r in panel.rows if r.key != "everyone" and r.shown.measured), key=lambda r: r.shown.fpir)
    assert f"about {in_100(chosen.at_distance.fpir)} in 100" in panel.headline
    # computed over the whole gallery, not over the probe's own group alone
    assert chosen.at_threshold.gallery_size == 180
    # with the miss rate beside it, and every row a group the probe falls in (or anyone)
    assert panel.miss.startswith("About ") and "miss them at this threshold" in panel.miss
    assert {r.key for r in panel.rows} <= {"everyone", "sex=M", "race=Asian", "sex=M & race=Asian"}
    assert escape(panel.headline) in page


def test_the_panel_speaks_one_unit_and_gives_one_multiplier_per_group(client, bob, alice, audit_run, org):
    _mixed_gallery(org)
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian"})

    page = panel_html(client, bob, candidate)
    panel = bias_panel(candidate)
    start = page.index('<div class="bias-panel')
    html = page[start : page.index("</details>", start)]

    assert set(re.findall(r"([\d.]+)%", html)) == {"95"}  # "95% CI" and no rate in per cent
    assert "in 1,000" not in html and "per 1,000" not in html
    assert html.count("×") == sum(1 for r in panel.rows if r.ratio is not None)


def test_a_high_figure_reads_high_risk(alice, audit_run, org):
    # Given no group is set aside as weak evidence (a ceiling of 99 in 100), and an Asian probe at 0.6
    org.fpir_ceiling = 0.99
    org.save(update_fields=["fpir_ceiling"])
    _mixed_gallery(org)
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.6, probe={"ethnicity": "Asian"})

    panel = bias_panel(candidate)

    chosen = max((r for r in panel.rows if r.key != "everyone" and r.shown.measured), key=lambda r: r.shown.fpir)
    assert chosen.at_distance.fpir >= 0.5
    assert panel.severity == "high" and panel.label == "High risk of a false match"


def test_a_low_figure_reads_standard_caution(alice, audit_run, org):
    _mixed_gallery(org)
    candidate = candidate_with(
        organisation=org, created_by=alice, distance=0.3, probe={"ethnicity": "White", "sex": "F", "age_band": "30-44"}
    )

    panel = bias_panel(candidate)

    chosen = max((r for r in panel.rows if r.key != "everyone" and r.shown.measured), key=lambda r: r.shown.fpir)
    assert chosen.at_distance.fpir < 0.2
    assert panel.severity == "standard" and panel.label == "Standard caution"
    assert "Elevated" not in panel.headline and "High" not in panel.headline


def test_a_group_the_audit_cannot_measure_reads_not_measured_never_a_risk_label(client, bob, alice, org):
    # Given an audit of only three people: no figure rests on enough people
    _hand_built_audit(org)
    _gallery_of(org, 30, ethnicity="Asian")
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.45, probe={"ethnicity": "Asian"})

    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    assert panel.severity == "unmeasured" and panel.label == "Not measured"
    assert panel.headline.startswith("Not measured: ")
    assert "fewer than" in panel.headline
    assert "Elevated risk" not in page and "High risk" not in page and "Standard caution" not in page


def test_a_child_under_10_is_named_as_weak_evidence_with_the_reason(client, bob, alice, audit_run, org):
    # Given a gallery with many young children, and a candidate for a probe recorded as a child aged 0-9
    _gallery_of(org, 100, age_band="0-9")
    _gallery_of(org, 80, age_band="30-44")
    candidate = candidate_with(
        organisation=org, created_by=alice, distance=0.45, probe={"age_band": "0-9"}, subject={"age_band": "0-9"}
    )

    panel = bias_panel(candidate)
    page = panel_html(client, bob, candidate)

    # Then the panel says it is weak evidence, and why: no threshold keeps those strangers out without missing most
    assert panel.severity == "weak" and panel.label == "Weak evidence"
    assert any(
        sentence.startswith("For children aged 0-9, this engine cannot keep strangers out") for sentence in panel.weak
    )
    assert "every candidate for a child aged 0-9 is weak evidence" in page
    assert "This involves a child under 10." in panel.child_warning
    assert "The probe and the subject are under 18." in panel.reasons


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
    _gallery_of(org, 30, ethnicity="Asian")
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian"})
    decision = decide(candidate, bob, conclusion="exclusion", reason="Different ears.")
    before = ReviewDecision.objects.get(pk=decision.pk).bias_snapshot

    newer = audit_run_create(dataset=audit_dataset, organisation=org, acting_user=None, thresholds=[0.5, 0.6])

    after = ReviewDecision.objects.get(pk=decision.pk).bias_snapshot
    assert before == after
    assert after["run_id"] == audit_run.pk != newer.pk
    assert any(row["key"] == "race=Asian" for row in after["rows"])


def test_a_stale_audit_does_not_count(bob, alice, audit_run, org):
    AuditRun.objects.filter(pk=audit_run.pk).update(completed_at=audit_run.completed_at.replace(year=2020))
    candidate = candidate_with(organisation=org, created_by=alice)

    panel = bias_panel(candidate)

    assert not panel.valid and "days old" in panel.reason


# Hidden scores, snapshots and closed candidates


def test_hidden_scores_leave_no_distance_in_the_bias_panel(client, reviewers, dana, alice, audit_run, org):
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

    # Then the headline speaks of the threshold only
    assert "0.487" not in before
    assert "at least this close" not in before and "at least as close" not in before
    assert "return a candidate at this threshold (0.60" in before
    assert "This involves a child under 10." in before  # the under-10 statement stays

    # And once the comparison is recorded, the distance and the figures at it appear
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
    stored = BiasPanel.from_snapshot(decision.bias_snapshot)
    assert stored.headline == shown.headline and stored.miss == shown.miss
    assert [r.at_threshold for r in stored.rows] == [r.at_threshold for r in shown.rows]
    assert [r.at_distance for r in stored.rows] == [r.at_distance for r in shown.rows]


def test_a_snapshot_from_before_the_1_to_n_panel_still_reads(client, reviewers, alice, audit_run, org):
    # Given a decision whose stored panel is the earlier pairwise one
    bob, rita = reviewers
    candidate = candidate_with(organisation=org, created_by=alice, distance=0.5, subject={"ethnicity": "Asian"})
    decide(candidate, bob, conclusion="exclusion", reason="Different ears.")
    decide(candidate, rita, conclusion="exclusion", reason="Different chin.")
    old = {
        "valid": True, "reason": "", "distance": 0.5, "threshold": 0.6, "run_id": audit_run.pk, "severity": "elevated",
        "headline": "A stranger in group race Asian would have about 9.1 subjects at least this close.",
        "involved": [{"key": "race=Asian", "fmr": 0.2, "fmr_low": 0.1, "fmr_high": 0.3, "insufficient": False}],
    }  # fmt: skip
    ReviewDecision.objects.filter(candidate=candidate).update(bias_snapshot=old)

    page = panel_html(client, bob, candidate)

    assert "A stranger in group race Asian would have about 9.1 subjects at least this close." in page
    assert "Elevated risk of a false match" in page


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
    """A valid audit of the engine in use, made of rows: three Asian people, 2 of their 3 pairs within 0.6."""
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
        min_identities=20,
        min_effective_pairs=1,
        photos=3,
        completed_at=timezone.now(),
        people=[[1, {"race": "Asian"}]] * 3,
    )
    AuditGroup.objects.create(
        run=run,
        key="all",
        attributes={},
        photos=3,
        identities=3,
        impostor_pairs=3,
        genuine_pairs=0,
        insufficient=True,
        insufficient_reasons=["3 identities, fewer than 20"],
        impostor_distances=np.array([0.3, 0.45, 0.7], dtype=np.float32).tobytes(),
        genuine_distances=b"",
        impostor_people=np.array([[0, 1], [0, 2], [1, 2]], dtype=np.int32).tobytes(),
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

    assert "what the audit says" in page.lower() and "Not measured" in page
    assert "0.487" not in page and "at least this close" not in page
