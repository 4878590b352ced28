"""`seed_demo`: a demo organisation that can reach a confirmed match without outside help."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from matching.accuracy.evaluation import audit_validity
from matching.accuracy.gallery_risk import operating_point_for, threshold_consequences
from matching.models import AuditDataset, AuditRun, Gallery, Photo, Subject
from portal.models import AuditEvent, Organisation
from reviews.management.commands.seed_demo import DEMO_EVALUATION_SET, DEMO_PROBE, DEMO_RETENTION_DAYS
from reviews.models import TrainingAttestation
from reviews.services import review_policy_for, training_status


def _seed(*options: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", *options, stdout=out)
    return out.getvalue()


# The evaluation set takes a minute of face encoding: only the tests about the threshold seed it.
QUICK = "--no-evaluation-set"


def test_the_demo_has_as_many_trained_reviewers_as_the_policy_needs(db, faces):
    # When the demo is seeded
    output = _seed(QUICK)

    # Then the policy's required confirmations can be met by trained reviewers, attested by the org admin
    User = get_user_model()
    bob, rita, dana = (User.objects.get(username=name) for name in ("bob", "rita", "dana"))
    organisation = dana.membership.organisation
    policy = review_policy_for(organisation)
    reviewers = [u for u in User.objects.filter(membership__organisation=organisation, membership__role="reviewer")]
    assert len(reviewers) >= policy.required_confirmations == 2
    # and it reviews blind to the score, as a new organisation does
    assert policy.pk is not None and policy.hide_scores_until_compared is True
    for reviewer in (bob, rita):
        assert training_status(reviewer, organisation).current
        attestation = TrainingAttestation.objects.get(reviewer=reviewer)
        assert attestation.recorded_by == dana  # not self-attested
        assert AuditEvent.objects.filter(action="training.record", target_id=str(attestation.pk)).exists()
    # and everyone has an e-mail address, so that the caseworker's notices can be read
    assert all(User.objects.get(username=n).email for n in ("alice", "bob", "rita", "dana", "root"))
    # and the gallery holds the subject whose other photo the journey uploads among a demo-sized mix, queued
    gallery = Gallery.objects.get(organisation=organisation)
    codes = set(gallery.subjects.values_list("code", flat=True))
    assert {"DEMO-001", "DEMO-002"} <= codes and len(codes) > 150
    assert Photo.objects.filter(subject__gallery=gallery, status="queued").count() == len(codes)
    assert "obama__tests_test_images_obama2.jpg" in output


def test_the_demo_confirms_the_threshold_its_settings_page_proposes(db, faces):
    # When the demo is seeded
    output = _seed()

    # Then its evaluation set holds nobody of its gallery, is audited for it, and the proposal is confirmed
    organisation = Organisation.objects.get(slug="demo")
    dataset = AuditDataset.objects.get(name=DEMO_EVALUATION_SET)
    gallery_people = {s.display_name for s in Subject.objects.filter(gallery__organisation=organisation)} - {""}
    assert dataset.samples.exists() and audit_validity(organisation).valid
    assert not {s.identity.removeprefix("lfw_").replace("_", " ") for s in dataset.samples.all()} & gallery_people
    point = operating_point_for(threshold_consequences(organisation))
    assert organisation.threshold_confirmed_at is not None
    assert organisation.distance_threshold == point.proposed != 0.6
    assert f"dana confirmed the threshold the settings page proposes, {point.proposed}" in output
    # and the first hour's probe is within it of its subject (0.363 apart), so the journey still ends in a match
    assert point.proposed > 0.37


def test_seeding_a_demo_made_before_blind_review_was_the_default_turns_it_on(db, faces):
    # Given a demo whose policy was written down with scores shown (as the migration keeps older organisations)
    from reviews.models import ReviewPolicy

    _seed(QUICK)
    ReviewPolicy.objects.filter(organisation__slug="demo").update(hide_scores_until_compared=False)

    # When it is seeded again, the scores are hidden until the comparison, and the change is in the log
    _seed(QUICK)
    assert ReviewPolicy.objects.get(organisation__slug="demo").hide_scores_until_compared is True
    assert AuditEvent.objects.filter(action="review_policy.update").exists()


def test_seeding_twice_adds_nothing(db, faces):
    _seed()

    def counts():
        models = (TrainingAttestation, Photo, get_user_model(), AuditDataset, AuditRun)
        return [model.objects.count() for model in models]

    before = counts()
    output = _seed()
    assert counts() == before
    assert "(unchanged)" in output


def test_a_demo_case_once_closed_says_when_its_biometrics_are_purged(db, faces):
    from datetime import timedelta

    from matching import services

    # Given the demo, and a case its caseworker opened
    _seed(QUICK)
    alice = get_user_model().objects.get(username="alice")
    organisation = alice.membership.organisation
    case = services.case_create(
        organisation=organisation,
        acting_user=alice,
        reference="DEMO-C1",
        title="Demo case",
        purpose="Demonstration",
        photos=[services.uploaded_image_read(faces.upload(DEMO_PROBE))],
    )

    # When she closes it
    case = services.case_close(case=case, acting_user=alice, reason="Found safe.")

    # Then its purge is due after the demo's retention period
    assert organisation.retention_days == DEMO_RETENTION_DAYS == 30
    assert case.purge_due_at == case.closed_at + timedelta(days=30)


def test_seeding_again_keeps_the_retention_an_org_admin_chose(db, faces):
    from matching import services

    _seed(QUICK)
    dana = get_user_model().objects.get(username="dana")
    services.organisation_retention_set(organisation=dana.membership.organisation, retention_days=90, acting_user=dana)

    _seed(QUICK)

    dana.membership.organisation.refresh_from_db()
    assert dana.membership.organisation.retention_days == 90


def test_seed_demo_refuses_a_production_deployment(db, settings):
    settings.DEPLOYMENT = "production"
    with pytest.raises(CommandError, match="refuses DEPLOYMENT=production"):
        _seed()
    assert not get_user_model().objects.exists()
