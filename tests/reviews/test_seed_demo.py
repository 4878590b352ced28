"""`seed_demo`: a demo organisation that can reach a confirmed match without outside help."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from matching.models import Gallery, Photo
from portal.models import AuditEvent
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
    # and it reviews blind to the score, as a new organisation does
    assert policy.pk is not None and policy.hide_scores_until_compared is True
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


def test_seeding_a_demo_made_before_blind_review_was_the_default_turns_it_on(db, faces):
    # Given a demo whose policy was written down with scores shown (as the migration keeps older organisations)
    from reviews.models import ReviewPolicy

    _seed()
    ReviewPolicy.objects.filter(organisation__slug="demo").update(hide_scores_until_compared=False)

    # When it is seeded again, the scores are hidden until the comparison, and the change is in the log
    _seed()
    assert ReviewPolicy.objects.get(organisation__slug="demo").hide_scores_until_compared is True
    assert AuditEvent.objects.filter(action="review_policy.update").exists()


def test_seeding_twice_adds_nothing(db, faces):
    _seed()
    counts = (TrainingAttestation.objects.count(), Photo.objects.count(), get_user_model().objects.count())
    output = _seed()
    assert (TrainingAttestation.objects.count(), Photo.objects.count(), get_user_model().objects.count()) == counts
    assert "(unchanged)" in output


def test_seed_demo_refuses_a_production_deployment(db, settings):
    settings.DEPLOYMENT = "production"
    with pytest.raises(CommandError, match="refuses DEPLOYMENT=production"):
        _seed()
    assert not get_user_model().objects.exists()
