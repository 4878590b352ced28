"""ACE-V's analysis: the probe's value is recorded before any comparison, under either analysis policy; a probe
of no value closes its candidates; and the worksheet's record of image tools and marks on the faces."""

from __future__ import annotations

import pytest

from matching.models import Candidate, Outcome
from matching.services import ServiceError
from portal.audit import audit_detail_for
from portal.models import AuditEvent, TaskOutbox
from reviews.models import FeatureComparison, ProbeAnalysis, ReviewDecision
from reviews.selectors import analysis_needed, worksheet_for
from reviews.services import ANALYSE_FIRST, probe_analyse, review_compare, review_policy_update
from tests.conftest import ALL_SIMILAR, OBAMA, OBAMA_2, analyse, decide
from tests.factories import candidate_with


@pytest.fixture
def candidate(org, alice):
    return candidate_with(organisation=org, created_by=alice)


def _policy(org, dana, **changes):
    review_policy_update(organisation=org, acting_user=dana, **changes)


# Before any comparison


def test_a_reviewer_must_analyse_the_probe_before_comparing_or_deciding(reviewers, candidate):
    # Given bob, trained, who has not analysed the probe
    bob, _ = reviewers
    assert analysis_needed(bob, candidate)
    assert worksheet_for(bob, candidate).analyse_only

    # Then neither the comparison nor the decision is taken, whatever a crafted request says
    with pytest.raises(ServiceError, match="Record your analysis of the probe face first"):
        review_compare(candidate_id=candidate.pk, features=ALL_SIMILAR, acting_user=bob)
    with pytest.raises(ServiceError, match="Record your analysis of the probe face first"):
        decide(candidate, bob, analyse=False)
    assert not FeatureComparison.objects.exists() and not ReviewDecision.objects.exists()

    # and once he has, they are
    analyse(candidate, bob, value="limited", limits=["pose"], note="Turned a little to his left.")
    assert not analysis_needed(bob, candidate)
    decide(candidate, bob, analyse=False)
    assert ReviewDecision.objects.filter(reviewer=bob).exists()


def test_under_the_each_reviewer_policy_the_second_reviewer_records_their_own(reviewers, org, dana, candidate):
    # Given the default policy: each reviewer records their own analysis
    bob, rita = reviewers
    analyse(candidate, bob)

    # Then rita still has to record hers, and may
    assert analysis_needed(rita, candidate)
    with pytest.raises(ServiceError, match=ANALYSE_FIRST[:40]):
        decide(candidate, rita, analyse=False)
    analyse(candidate, rita, value="limited", limits=["resolution"])
    assert ProbeAnalysis.objects.filter(face=candidate.search.face).count() == 2
    # but nobody records a second analysis of one face
    with pytest.raises(ServiceError, match="already recorded your analysis"):
        analyse(candidate, rita)


def test_under_the_shared_policy_the_first_analysis_holds_for_every_reviewer(reviewers, org, dana, candidate):
    # Given the shared policy, and bob's analysis
    _policy(org, dana, analysis_scope="shared")
    bob, rita = reviewers
    analyse(candidate, bob, value="limited", limits=["lighting"])

    # Then rita compares on it without her own, sees whose it is, and cannot record another
    assert not analysis_needed(rita, candidate)
    worksheet = worksheet_for(rita, candidate)
    assert not worksheet.analyse_only and worksheet.analysis.reviewer == bob
    with pytest.raises(ServiceError, match="bob has already recorded the analysis of this probe face"):
        analyse(candidate, rita)
    decide(candidate, rita, analyse=False)
    assert ProbeAnalysis.objects.count() == 1


def test_the_policy_change_is_audited_and_refused_with_an_unknown_scope(org, dana):
    _policy(org, dana, analysis_scope="shared")
    event = AuditEvent.objects.filter(action="review_policy.update").latest("id")
    assert event.detail["changes"]["analysis_scope"] == ["each", "shared"]
    with pytest.raises(Exception):  # noqa: B017  (full_clean's ValidationError: not a choice)
        _policy(org, dana, analysis_scope="whoever")


def test_under_each_the_other_analyses_stay_blind_until_ones_own_decision(reviewers, org, dana, trained, candidate):
    # Given bob's analysis and decision, rita's analysis, and dana, an org admin who could still decide
    bob, rita = reviewers
    analyse(candidate, bob, value="limited", limits=["blur"], note="Soft focus.")
    decide(candidate, bob, analyse=False)
    analyse(candidate, rita)
    trained(dana)

    # Then rita sees only her own analysis, and dana's activity log hides bob's, until they decide
    assert [a.reviewer for a in worksheet_for(rita, candidate).analyses] == [rita]
    event = AuditEvent.objects.filter(action="probe.analyse", actor=bob).get()
    assert "hidden" in audit_detail_for(dana, event) and "Soft focus." not in str(audit_detail_for(dana, event))
    decide(candidate, rita, analyse=False)
    assert {a.reviewer for a in worksheet_for(rita, candidate).analyses} == {bob, rita}
    assert audit_detail_for(dana, event)["note"] == "Soft focus."  # the candidate is closed now


def test_the_measures_shown_are_stored_with_the_analysis(reviewers, enrol, open_case):
    # Given a real probe photo
    enrol("OBAMA-REF", OBAMA)
    candidate = open_case(OBAMA_2).candidates.get()

    analysis = analyse(candidate, reviewers[0])

    measures = analysis.measures
    assert measures["landmarks_found"] is True
    assert 60 < measures["eye_distance"]["value"] < 200 and measures["eye_distance"]["unit"] == " px"
    assert measures["sharpness"]["value"] == pytest.approx(candidate.search.face.blur)
    assert {measures[name]["verdict"] for name in ("eye_distance", "sharpness", "yaw", "roll")} <= {
        "good",
        "limited",
        "poor",
    }


# Of no value


def test_a_probe_of_no_value_closes_every_open_candidate_of_that_face_and_says_why(
    reviewers, org, alice, dana, candidate
):
    # Given two more candidates of the same probe face (one already confirmed) and one of another face
    face = candidate.search.face
    second = candidate_with(organisation=org, created_by=alice, case=candidate.case, rank=2)
    Candidate.objects.filter(pk=second.pk).update(search=candidate.search)
    bob, rita = reviewers
    confirmed = candidate_with(organisation=org, created_by=alice, case=candidate.case, rank=3)
    decide(confirmed, bob)
    decide(confirmed, rita)
    Candidate.objects.filter(pk=confirmed.pk).update(search=candidate.search)
    other_face = candidate_with(organisation=org, created_by=alice, case=candidate.case)

    # When rita judges the probe face of no value
    analyse(candidate, rita, value="none", limits=["blur", "occlusion"], note="A hand covers the mouth.")

    # Then its open candidates are closed as not comparable, with the reason; the others are as they were
    for pk in (candidate.pk, second.pk):
        closed = Candidate.objects.get(pk=pk)
        assert closed.outcome == Outcome.UNSUITABLE and closed.outcome_by == rita
        assert "judged it of no value (blur, occlusion): A hand covers the mouth." in closed.outcome_reason
    assert Candidate.objects.get(pk=confirmed.pk).outcome == Outcome.CONFIRMED
    assert Candidate.objects.get(pk=other_face.pk).outcome == Outcome.PENDING
    face.refresh_from_db()
    assert face.unsuitable_at is not None and "blur, occlusion" in face.unsuitable_reason
    # and the log says so, candidate by candidate, and the caseworker is told (through the outbox)
    assert AuditEvent.objects.filter(action="candidate.unsuitable").count() == 2
    assert AuditEvent.objects.filter(action="probe.analyse").latest("id").detail["value"] == "none"
    assert TaskOutbox.objects.filter(task_name="reviews.tasks.notify_caseworker").exists()
    # and nobody can decide or analyse a closed candidate any more
    with pytest.raises(ServiceError, match="closed"):
        decide(Candidate.objects.get(pk=candidate.pk), bob)


def test_no_value_without_a_reason_is_refused_and_nothing_is_stored(reviewers, candidate):
    with pytest.raises(ServiceError, match="Say why the probe is of no value"):
        analyse(candidate, reviewers[0], value="none")
    with pytest.raises(ServiceError, match="Choose the probe's value"):
        analyse(candidate, reviewers[0], value="great")
    with pytest.raises(ServiceError, match="from the list"):
        analyse(candidate, reviewers[0], value="limited", limits=["mood"])
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.PENDING and not ProbeAnalysis.objects.exists()


def test_people_who_may_not_decide_may_not_analyse(alice, charlie, bob, candidate):
    # The case's own caseworker, another organisation, an untrained reviewer
    for person in (alice, charlie, bob):
        with pytest.raises(ServiceError):
            probe_analyse(candidate_id=candidate.pk, value="none", limits=["blur"], acting_user=person)
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.PENDING and not ProbeAnalysis.objects.exists()


# The worksheet's record: image tools and marks


def _mark(face_id: int, **fields) -> dict:
    return {"face": face_id, "kind": "point", "x": 0.4, "y": 0.3, "feature": "eyebrows", "note": "Scar", **fields}


def test_marks_on_the_probe_and_on_any_of_the_subjects_faces_are_stored_with_the_decision(reviewers, candidate):
    bob, _ = reviewers
    analyse(candidate, bob)
    probe, gallery = candidate.search.face_id, candidate.reference_face_id
    marks = [
        _mark(probe),
        _mark(gallery, kind="region", x=0.4, y=0.5, w=0.2, h=0.15, feature="nose", note="  Broad tip  "),
    ]

    decision = decide(candidate, bob, analyse=False, annotations=marks, tools={"probe": ["mirror", "gamma"]})

    assert [(m["side"], m["kind"], m["feature"], m["note"]) for m in decision.annotations] == [
        ("probe", "point", "eyebrows", "Scar"),
        ("gallery", "region", "nose", "Broad tip"),
    ]
    assert decision.tools == {"probe": ["gamma", "mirror"]}  # in the tools' order


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        ({"face": "other"}, "not part of this comparison"),
        ({"feature": "tattoo"}, "choose the facial feature"),
        ({"x": 1.5}, "outside the face"),
        ({"x": True}, "outside the face"),
        ({"kind": "region", "w": 0.9, "h": 0.1}, "outside the face"),
        ({"kind": "circle"}, "could not be read"),
        ({"note": "x" * 501}, "limited to 500"),
    ],
)
def test_a_mark_that_does_not_belong_is_refused_and_nothing_is_stored(reviewers, org, alice, candidate, mark, message):
    bob, _ = reviewers
    analyse(candidate, bob)
    elsewhere = candidate_with(organisation=org, created_by=alice).reference_face_id
    fields = {**mark, "face": elsewhere} if mark.get("face") == "other" else mark
    with pytest.raises(ServiceError, match=message):
        decide(candidate, bob, analyse=False, annotations=[_mark(candidate.search.face_id, **fields)])
    assert not ReviewDecision.objects.exists()


def test_an_unknown_tool_is_refused(reviewers, candidate):
    bob, _ = reviewers
    analyse(candidate, bob)
    with pytest.raises(ServiceError, match="unknown tool"):
        decide(candidate, bob, analyse=False, tools={"probe": ["sharpen"]})
    with pytest.raises(ServiceError, match="could not be read"):
        decide(candidate, bob, analyse=False, tools={"third": ["mirror"]})
    assert not ReviewDecision.objects.exists()


def test_the_tools_used_while_comparing_are_kept_on_the_decision(reviewers, org, dana, candidate):
    bob, _ = reviewers
    analyse(candidate, bob)
    review_compare(
        candidate_id=candidate.pk,
        features=ALL_SIMILAR,
        acting_user=bob,
        tools={"gallery": ["contrast"]},
        annotations=[_mark(candidate.search.face_id)],
    )
    assert worksheet_for(bob, candidate).marks[0]["own"] is True  # the page redraws his marks

    decision = decide(candidate, bob, analyse=False, tools={"probe": ["pixels"]})

    assert decision.tools == {"gallery": ["contrast"], "probe": ["pixels"]}


def test_the_second_reviewer_sees_the_first_ones_marks_only_after_their_own_decision(reviewers, candidate):
    bob, rita = reviewers
    decide(candidate, bob, annotations=[_mark(candidate.search.face_id, note="Scar over the left brow")])
    analyse(candidate, rita)

    before = worksheet_for(rita, candidate)
    decide(candidate, rita, analyse=False)
    after = worksheet_for(rita, candidate)

    assert before.marks == []
    assert [(m["by"], m["note"], m["own"]) for m in after.marks] == [("bob", "Scar over the left brow", False)]


def test_the_others_see_only_the_marks_of_a_reviewers_correction(reviewers, candidate):
    # Given bob decided with a mark, then corrected his decision with another one
    bob, rita = reviewers
    first = decide(candidate, bob, conclusion="exclusion", annotations=[_mark(candidate.search.face_id, note="Mole")])
    decide(candidate, bob, corrects_id=first.pk, annotations=[_mark(candidate.search.face_id, note="Scar")])

    # When rita has decided too, and sees the others' marks
    decide(candidate, rita)
    marks = worksheet_for(rita, candidate).marks

    # Then bob's marks are those of his correction only
    assert [(m["by"], m["note"]) for m in marks if not m["own"]] == [("bob", "Scar")]
