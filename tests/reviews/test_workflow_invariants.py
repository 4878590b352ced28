"""The review workflow's promises, held under random play by everyone who might bend them.

A Hypothesis state machine: several reviewers, an org admin, a senior reviewer, the case's creators (a
caseworker and an org admin) and the org admin who made the API key that filed a case decide, correct, claim,
look and settle in random order, under a random policy (1-3 confirmations, scores hidden or not, a senior
reviewer or not) and random training (current, expired, none). Decisions go through the admin form over HTTP
or through the service; looking goes through the pages. Candidates are rows (no face detection), so that 200
examples run in a few minutes. After every step the invariants below must hold.
"""

from __future__ import annotations

import datetime
import io
import itertools
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from matching.models import Candidate, Outcome
from matching.services import ServiceError
from portal import access
from portal.audit import audit_chain_verify
from portal.keys import api_key_create
from portal.models import AuditEvent
from reviews import services
from reviews.models import CONFIRMING, Conclusion, ProbeAnalysis, ReviewDecision, ReviewItem
from tests.conftest import ALL_SIMILAR, review_post
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory, candidate_with

# CI runs 200; WORKFLOW_EXAMPLES=2000 for a longer hunt.
EXAMPLES = int(os.environ.get("WORKFLOW_EXAMPLES", "200"))
DECIDERS = ["r1", "r2", "r3", "admin", "senior", "keymaker"]
ACTORS = [*DECIDERS, "creator"]
CONCLUSIONS = list(Conclusion.values)
# Distinctive distances, so that a leaked score can be found in a page: "0.437" appears nowhere else.
DISTANCES = [0.4371, 0.5283, 0.3694]
_example = itertools.count()


def _tiny_jpeg() -> SimpleUploadedFile:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (150, 110, 90)).save(out, "JPEG")
    return SimpleUploadedFile("probe.jpg", out.getvalue(), content_type="image/jpeg")


class ReviewWorkflow(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Each example runs in a savepoint of the test's transaction and is rolled back in teardown.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        # One test client per actor, signed in once: signing in costs more than most steps.
        self.clients: dict[str, Client] = {}
        # (actor, candidate index) pairs where the actor was shown another's decision before deciding
        self.saw_before_deciding: set[tuple[str, int]] = set()
        self.reasons = itertools.count()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # Setup: one organisation, its people, three candidates

    @initialize(
        required=st.integers(1, 3),
        hide_scores=st.booleans(),
        analysis_scope=st.sampled_from(["each", "shared"]),
        with_senior=st.booleans(),
        # Mostly current: an untrained reviewer is refused at once, and then nothing else happens.
        training=st.lists(
            st.sampled_from(["current", "current", "current", "expired", "none"]), min_size=6, max_size=6
        ),
    )
    def setup(
        self, required: int, hide_scores: bool, analysis_scope: str, with_senior: bool, training: list[str]
    ) -> None:
        from matching.services import case_create, uploaded_image_read

        n = next(_example)
        self.org = OrganisationFactory(slug=f"sm-{n}")
        roles = {
            "r1": "reviewer",
            "r2": "reviewer",
            "r3": "reviewer",
            "admin": "org_admin",
            "senior": "reviewer",
            "keymaker": "org_admin",
            "creator": "caseworker",
            "attester": "org_admin",
        }
        self.users = {
            name: MembershipFactory(user=UserFactory(username=f"sm{n}-{name}"), organisation=self.org, role=role).user
            for name, role in roles.items()
        }
        attester = self.users["attester"]
        services.review_policy_update(
            organisation=self.org,
            acting_user=attester,
            required_confirmations=required,
            hide_scores_until_compared=hide_scores,
            analysis_scope=analysis_scope,
            senior_reviewer=self.users["senior"] if with_senior else None,
        )
        self.policy = services.review_policy_for(self.org)
        for name, state in zip(DECIDERS, training, strict=True):
            self._train(name, state)
        # A case by the caseworker, one by the org admin herself, and one filed through the keymaker's key
        key, _ = api_key_create(
            organisation=self.org, name="Intake", role="caseworker", acting_user=self.users["keymaker"]
        )
        filed = case_create(
            organisation=self.org,
            acting_user=key.user,
            reference=f"KEY-{n}",
            title="Filed by key",
            purpose="Locate a missing child",
            photos=[uploaded_image_read(_tiny_jpeg())],
        )
        self.candidates = [
            candidate_with(organisation=self.org, created_by=self.users["creator"], distance=DISTANCES[0]),
            candidate_with(organisation=self.org, created_by=self.users["admin"], distance=DISTANCES[1]),
            candidate_with(organisation=self.org, case=filed, distance=DISTANCES[2]),
        ]
        self.codes = [c.subject.code for c in self.candidates]

    def _train(self, name: str, state: str) -> None:
        if state == "none":
            return
        days = 30 if state == "current" else 30 + 31 * self.policy.training_valid_months
        services.training_record(
            organisation=self.org,
            reviewer=self.users[name],
            trained_on=timezone.localdate() - datetime.timedelta(days=days),
            acting_user=self.users["attester"],
        )

    def _client(self, name: str) -> Client:
        if name not in self.clients:
            self.clients[name] = Client()
            self.clients[name].force_login(self.users[name])
        return self.clients[name]

    def _candidate(self, index: int) -> Candidate:
        return Candidate.objects.select_related("case__organisation").get(pk=self.candidates[index].pk)

    def _queue_agrees(self, name: str, candidate: Candidate) -> None:
        """The queue lists exactly what its user may decide: the query and the blockers give one answer."""
        user = self.users[name]
        listed = services.candidates_decidable_by(user, ReviewItem.objects.all()).filter(pk=candidate.pk).exists()
        blockers = services.decision_blockers(user, candidate)
        assert listed == (not blockers), (name, candidate.outcome, blockers)

    # What the actors do

    @rule(
        actor=st.sampled_from(ACTORS),
        index=st.integers(0, 2),
        # Mostly of value: a probe of no value ends its candidates, and then little else happens.
        value=st.sampled_from(["value", "value", "limited", "none"]),
    )
    def analyse(self, actor: str, index: int, value: str) -> None:
        """ACE-V: the probe's value, judged before comparing (or by someone who may not, and is refused)."""
        try:
            services.probe_analyse(
                candidate_id=self.candidates[index].pk,
                value=value,
                limits=["blur"] if value != "value" else [],
                acting_user=self.users[actor],
            )
        except ServiceError:
            pass

    @rule(
        actor=st.sampled_from(ACTORS),
        index=st.integers(0, 2),
        conclusion=st.sampled_from(CONCLUSIONS),
        # One decision in four through the admin form: the form and the service must agree, and the form costs more.
        http=st.sampled_from([True, False, False, False]),
        # Most deciders have analysed the probe first; the others must be refused.
        analysed=st.sampled_from([True, True, True, False]),
    )
    def decide(self, actor: str, index: int, conclusion: str, http: bool, analysed: bool = True) -> None:
        candidate = self._candidate(index)
        self._queue_agrees(actor, candidate) if actor != "creator" else None
        user = self.users[actor]
        reason = f"Reason {next(self.reasons)} of {actor}: ears and jaw."
        before = ReviewDecision.objects.filter(candidate=candidate, reviewer=user).count()
        if analysed and services.analysis_needed(user, candidate):
            self.analyse(actor=actor, index=index, value="value")
        if http:
            client = self._client(actor)
            url = reverse("admin:reviews_reviewitem_change", args=[candidate.pk])
            page = client.get(url)
            if page.status_code == 200 and 'name="analysis_value"' in page.content.decode():
                # The probe's analysis comes first
                client.post(url, {"analysis_value": "value", "_save": "Save"})
                page = client.get(url)
            if page.status_code == 200 and 'name="conclusion"' not in page.content.decode():
                # Scores hidden: the form asks for the comparison first
                client.post(url, {**{f"feature_{k}": v for k, v in ALL_SIMILAR.items()}, "_save": "Save"})
            client.post(url, review_post(conclusion, reason=reason))
        else:
            try:
                services.review_decide(
                    candidate_id=candidate.pk,
                    acting_user=user,
                    conclusion=conclusion,
                    reason=reason,
                    features=ALL_SIMILAR,
                    bias_acknowledged=True,
                )
            except ServiceError:
                pass
        after = ReviewDecision.objects.filter(candidate=candidate, reviewer=user).count()
        assert after - before in (0, 1)

    @rule(
        actor=st.sampled_from(["admin", "senior", "keymaker"]),
        index=st.integers(0, 2),
        conclusion=st.sampled_from(CONCLUSIONS),
    )
    def settle(self, actor: str, index: int, conclusion: str) -> None:
        """A senior decider (or one who thinks they are) takes on a candidate, escalated or not."""
        self.decide(actor=actor, index=index, conclusion=conclusion, http=False)

    @rule(actor=st.sampled_from(DECIDERS), index=st.integers(0, 2), conclusion=st.sampled_from(CONCLUSIONS))
    def correct(self, actor: str, index: int, conclusion: str) -> None:
        """Correct one's latest decision on one of the candidates one has decided."""
        user = self.users[actor]
        decided = sorted({d.candidate_id for d in ReviewDecision.objects.filter(reviewer=user)})
        if not decided:
            return
        candidate = Candidate.objects.select_related("case__organisation").get(pk=decided[index % len(decided)])
        own = ReviewDecision.objects.filter(candidate=candidate, reviewer=user).order_by("-created_at", "-id").first()
        outcome_before = candidate.outcome
        try:
            services.review_decide(
                candidate_id=candidate.pk,
                acting_user=user,
                conclusion=conclusion,
                reason=f"Correction {next(self.reasons)} of {actor}.",
                features=ALL_SIMILAR,
                bias_acknowledged=True,
                corrects_id=own.pk,
            )
        except ServiceError:
            pass
        candidate.refresh_from_db()
        if outcome_before == Outcome.ESCALATED:
            # A participant's correction never settles a disagreement
            assert candidate.outcome == Outcome.ESCALATED

    @rule(actor=st.sampled_from(ACTORS), index=st.integers(0, 2))
    def claim(self, actor: str, index: int) -> None:
        try:
            services.review_claim(candidate_id=self.candidates[index].pk, acting_user=self.users[actor])
        except ServiceError:
            pass

    @rule(actor=st.sampled_from(DECIDERS), state=st.sampled_from(["current", "expired"]))
    def training_changes(self, actor: str, state: str) -> None:
        self._train(actor, state)

    @rule(actor=st.sampled_from(DECIDERS), index=st.integers(0, 2), pick=st.integers(0, 7))
    def look(self, actor: str, index: int, pick: int) -> None:
        """Open the worksheet, the candidate's decisions and their log rows, as a reviewer would."""
        candidate = self._candidate(index)
        user = self.users[actor]
        client = self._client(actor)
        decided = ReviewDecision.objects.filter(candidate=candidate, reviewer=user).exists()
        hidden = services.scores_hidden_from(user, candidate)
        others = list(ReviewDecision.objects.filter(candidate=candidate).exclude(reviewer=user))
        pages = [client.get(reverse("admin:reviews_reviewitem_change", args=[candidate.pk]))]
        # Besides the worksheet, one of: a decision's own page, or a log row about the candidate
        if others and pick % 2 == 0:
            decision = others[pick % len(others)]
            pages.append(client.get(reverse("admin:reviews_reviewdecision_change", args=[decision.pk])))
        events = AuditEvent.objects.filter(target_type="matching.Candidate", target_id=str(candidate.pk))
        rows = list(events.filter(action__startswith="review.").exclude(actor=user).order_by("seq"))
        log = ""
        if rows and pick % 2 == 1:
            row = client.get(reverse("admin:portal_auditevent_change", args=[rows[pick % len(rows)].pk]))
            log = row.content.decode() if row.status_code == 200 else ""
        text = " ".join(page.content.decode() for page in pages if page.status_code == 200) + log
        # The log row's detail is JSON in the page: a conclusion there is another reviewer's decision
        shown = any(d.reason in text for d in others) or "&quot;conclusion&quot;" in log
        if shown and not decided:
            self.saw_before_deciding.add((actor, index))
        if hidden:
            assert f"{candidate.distance:.3f}" not in text and f"{candidate.distance:.4f}" not in text

    @rule(actor=st.sampled_from(DECIDERS))
    def open_queue(self, actor: str) -> None:
        """The queue page lists exactly the candidates its user may decide."""
        page = self._client(actor).get(reverse("admin:reviews_reviewitem_changelist")).content.decode()
        for candidate in map(self._candidate, range(3)):
            listed = reverse("admin:reviews_reviewitem_change", args=[candidate.pk]) in page
            assert listed == (not services.decision_blockers(self.users[actor], candidate)), actor

    # What must hold after every step

    @invariant()
    def promises_hold(self) -> None:
        """Checked after every step; the full checks run when a decision or an outcome has changed since the
        last step (nothing else can change what they look at), so that 200 examples stay quick."""
        if not hasattr(self, "candidates"):
            return
        ids = [c.pk for c in self.candidates]
        state = (
            tuple(Candidate.objects.filter(pk__in=ids).order_by("pk").values_list("outcome", flat=True)),
            ReviewDecision.objects.filter(candidate__in=ids).count(),
            ProbeAnalysis.objects.filter(face__search__candidates__in=ids).count(),
            frozenset(self.saw_before_deciding),
        )
        if state == getattr(self, "_checked_state", None):
            return
        self._checked_state = state
        self._confirmations_are_independent_trained_and_enough()
        self._every_decision_rests_on_an_analysis_and_no_value_closes()
        self._caseworkers_see_only_confirmed_candidates()
        self._the_log_verifies()

    def _confirmations_are_independent_trained_and_enough(self) -> None:
        for index, candidate in enumerate(map(self._candidate, range(3))):
            case = candidate.case
            answerable = {case.created_by_id, case.accountable_by_id} - {None}
            key_maker = access.accountable_human(case.created_by) if case.created_by else None
            assert key_maker is None or key_maker.pk in answerable
            decisions = list(candidate.decisions.order_by("created_at", "id"))
            for decision in decisions:
                assert decision.reviewer_id not in answerable, "a case's accountable person decided it"
                assert decision.training_valid_until is not None
                assert decision.training_valid_until >= timezone.localdate(decision.created_at)
            first = {}
            for decision in decisions:
                first.setdefault(decision.reviewer_id, decision)
            for name, user in self.users.items():
                if user.pk in first and not first[user.pk].escalation:
                    assert (name, index) not in self.saw_before_deciding, f"{name} saw others before deciding"
            settled = [d for d in decisions if d.escalation]
            # Several settlers only when each confirmed and the confirmations were not yet enough
            assert len({d.reviewer_id for d in settled}) == len(settled)
            assert all(d.conclusion in CONFIRMING for d in settled[:-1])
            for decision in settled:
                # Settled only by someone who took no other part in it, and who may settle escalations
                assert not any(d.reviewer_id == decision.reviewer_id and not d.escalation for d in decisions)
                assert services.may_decide_escalations(decision.reviewer, self.policy)
            if candidate.outcome == Outcome.CONFIRMED:
                active = services.active_decisions(candidate)
                confirming = {d.reviewer_id for d in active if d.conclusion in CONFIRMING}
                if settled:
                    # Escalation: every settler confirmed, and reviewers and settlers together are enough people
                    assert all(d.conclusion in CONFIRMING for d in settled)
                    confirming |= {d.reviewer_id for d in settled}
                else:
                    assert not any(d.conclusion not in CONFIRMING for d in active)
                assert len(confirming) >= self.policy.required_confirmations
            if candidate.is_open:
                # Open after a settlement only while the settlers' confirmations are not yet enough
                assert all(d.conclusion in CONFIRMING for d in settled)

    def _every_decision_rests_on_an_analysis_and_no_value_closes(self) -> None:
        for candidate in map(self._candidate, range(3)):
            face_id = candidate.search.face_id
            analyses = list(ProbeAnalysis.objects.filter(face_id=face_id).order_by("created_at", "id"))
            if self.policy.analysis_scope == "shared":
                assert len(analyses) <= 1, "a second analysis under the shared policy"
            for decision in candidate.decisions.all():
                binding = [
                    a
                    for a in analyses
                    if (a.reviewer_id == decision.reviewer_id or self.policy.analysis_scope == "shared")
                    and a.created_at <= decision.created_at
                ]
                assert binding, "a decision without the probe's analysis before it"
            no_value = [a for a in analyses if a.value == "none"]
            if no_value:
                assert not candidate.is_open, "an open candidate of a probe judged of no value"
                assert candidate.outcome == Outcome.UNSUITABLE or candidate.outcome_at <= no_value[0].created_at
                assert not candidate.decisions.filter(created_at__gt=no_value[0].created_at).exists()
            else:
                assert candidate.outcome != Outcome.UNSUITABLE

    def _caseworkers_see_only_confirmed_candidates(self) -> None:
        unconfirmed = [
            code
            for code, candidate in zip(self.codes, map(self._candidate, range(3)), strict=True)
            if candidate.outcome != Outcome.CONFIRMED
        ]
        if not unconfirmed:
            return
        client = self._client("creator")
        api = client.get("/api/matches/").content.decode()
        page = client.get(reverse("matching:case_detail", args=[self.candidates[0].case_id])).content.decode()
        for code in unconfirmed:
            assert code not in api and code not in page

    def _the_log_verifies(self) -> None:
        verification = audit_chain_verify()
        assert verification.intact, verification.breaks


@pytest.mark.django_db
def test_the_review_workflow_keeps_its_promises_under_random_play():
    run_state_machine_as_test(
        ReviewWorkflow,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
