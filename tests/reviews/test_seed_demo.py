"""`seed_demo`: a demo organisation that can reach a confirmed match without outside help."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from matching.models import Gallery, Photo
from portal.models import AuditEvent
from reviews.management.commands.seed_demo import DEMO_PROBE, DEMO_RETENTION_DAYS
from reviews.models import TrainingAttestation
from reviews.services import review_policy_for, training_status


def _seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_the_demo_has_as_many_trained_reviewers_as_the_policy_needs(db, faces):
    # When the demo is seeded
    output = _seed()

    # Then the policy's required confirmations can be met by trained reviewers, attested by the org admin
    User = get_user_model()
    bob, rita, dana = (User.objects.get(username=name) for name in ("bob", "rita", "dana"))
    organisation = dana.membership.organisation
    policy = review_policy_for(organisation)
    reviewers = [u for u in User.objects.filter(membership__organisation=organisation, membership__role="reviewer")]
    assert len(reviewers) >= policy.required_confirmations == 2
    for reviewer in (bob, rita):
        assert training_status(reviewer, organisation).current
        attestation = TrainingAttestation.objects.get(reviewer=reviewer)
        assert attestation.recorded_by == dana  # not self-attested
        assert AuditEvent.objects.filter(action="training.record", target_id=str(attestation.pk)).exists()
    # and everyone has an e-mail address, so that the caseworker's notices can be read
    assert all(User.objects.get(username=n).email for n in ("alice", "bob", "rita", "dana", "root"))
    # and the gallery holds the subject whose other photo the journey uploads, queued for the worker
    gallery = Gallery.objects.get(organisation=organisation)
    assert sorted(gallery.subjects.values_list("code", flat=True)) == ["DEMO-001", "DEMO-002"]
    assert Photo.objects.filter(subject__gallery=gallery, status="queued").count() == 2
    assert "obama__tests_test_images_obama2.jpg" in output


def test_seeding_twice_adds_nothing(db, faces):
    _seed()
    counts = (TrainingAttestation.objects.count(), Photo.objects.count(), get_user_model().objects.count())
    output = _seed()
    assert (TrainingAttestation.objects.count(), Photo.objects.count(), get_user_model().objects.count()) == counts
    assert "(unchanged)" in output


def test_a_demo_case_once_closed_says_when_its_biometrics_are_purged(db, faces):
    from datetime import timedelta

    from matching import services

    # Given the demo, and a case its caseworker opened
    _seed()
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
    from portal.services import organisation_update

    _seed()
    dana = get_user_model().objects.get(username="dana")
    organisation_update(organisation=dana.membership.organisation, acting_user=dana, retention_days=90)

    _seed()

    dana.membership.organisation.refresh_from_db()
    assert dana.membership.organisation.retention_days == 90


def test_seed_demo_refuses_a_production_deployment(db, settings):
    settings.DEPLOYMENT = "production"
    with pytest.raises(CommandError, match="refuses DEPLOYMENT=production"):
        _seed()
    assert not get_user_model().objects.exists()
