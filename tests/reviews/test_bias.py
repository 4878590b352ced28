from __future__ import annotations

import pytest
from django.urls import reverse

from matching.evaluation import audit_run_create
from matching.models import AuditRun
from matching.services import ServiceError
from reviews.bias import bias_panel
from reviews.models import ReviewDecision
from tests.conftest import decide, review_post
from tests.factories import candidate_with


def panel_html(client, user, candidate) -> str:
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
