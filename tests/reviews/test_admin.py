from __future__ import annotations

import re

import pytest
from django.urls import reverse

from matching.models import Candidate, Case, Outcome
from portal.models import AuditEvent
from reviews.bias import bias_panel
from reviews.models import FeatureComparison, ReviewDecision
from reviews.services import review_policy_update
from tests.conftest import ALL_SIMILAR, OBAMA, OBAMA_2, analyse, analysed, decide, review_post


@pytest.fixture
def candidate(enrol, open_case):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", ethnicity="Black", sex="M", age_band="45-59")
    return open_case(OBAMA_2).candidates.get()


@pytest.fixture
def scores_shown(org, dana):
    """The policy with scores shown at once (the default hides them until the comparison is recorded)."""
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=False)


@pytest.fixture
def analysed_by_both(reviewers, candidate):
    """bob and rita have each recorded their analysis of the probe (of value), as the policy asks first."""
    for reviewer in reviewers:
        analyse(candidate, reviewer)


def change_url(candidate) -> str:
    return reverse("admin:reviews_reviewitem_change", args=[candidate.pk])


def test_reviewer_sees_both_faces_side_by_side_with_distance_and_rank(
    client, reviewers, candidate, scores_shown, analysed_by_both
):
    client.force_login(reviewers[0])

    page = client.get(change_url(candidate)).content.decode()

    assert reverse("matching:face_crop", args=[candidate.search.face_id]) in page
    assert reverse("matching:face_crop", args=[candidate.reference_face_id]) in page
    assert reverse("matching:photo_image", args=[candidate.search.face.photo_id]) in page
    assert reverse("matching:photo_image", args=[candidate.reference_face.photo_id]) in page
    assert f"{candidate.distance:.3f}" in page and f"rank {candidate.rank}" in page
    for label in ["Face shape", "Hairline", "Forehead", "Eyebrows", "Eyes", "Nose", "Ears", "Mouth", "Chin and jaw"]:
        assert label in page
    assert "Identification: the same person" in page and "I have read the bias warning" in page


def test_the_queue_embeds_its_thumbnails_and_logs_each_face_shown(client, reviewers, candidate, analysed_by_both):
    # Given a reviewer with a candidate waiting
    bob, _ = reviewers
    client.force_login(bob)

    # When they open the queue
    page = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()

    # Then both faces are in the page itself, not behind fifty image requests, and each view is logged
    assert page.count('src="data:image/jpeg;base64,') == 2
    assert reverse("matching:face_crop", args=[candidate.search.face_id]) not in page
    viewed = set(AuditEvent.objects.filter(action="media.face", actor=bob).values_list("target_id", flat=True))
    assert viewed == {str(candidate.search.face_id), str(candidate.reference_face_id)}


def test_the_queue_says_where_a_face_was_erased(client, dana, reviewers, candidate):
    from matching.services import subject_erase

    # Given a candidate whose gallery subject has been erased while the item is still listed
    bob, _ = reviewers
    subject_erase(subject=candidate.subject, acting_user=dana)
    client.force_login(bob)

    # When the reviewer opens the full list
    page = client.get(reverse("admin:reviews_reviewitem_changelist") + "?items=all").content.decode()

    # Then no image of the erased face is shown, and no view of it is logged
    assert "gallery face: erased or purged" in page
    assert not AuditEvent.objects.filter(action="media.face", target_id=str(candidate.reference_face_id)).exists()


def test_two_reviewers_confirm_through_the_admin_form(client, reviewers, candidate, scores_shown, analysed_by_both):
    bob, rita = reviewers

    client.force_login(bob)
    first = client.post(change_url(candidate), review_post(reason="Ears, nose and hairline agree."), follow=True)
    candidate.refresh_from_db()
    outcome_after_one = candidate.outcome
    client.force_login(rita)
    second = client.post(
        change_url(candidate), review_post("probable", reason="Nose and jaw agree; ears hidden."), follow=True
    )

    assert (first.status_code, second.status_code) == (200, 200)
    assert outcome_after_one == Outcome.PENDING
    # Each reviewer is told what became of the candidate, on the queue they return to
    assert first.redirect_chain[-1][0].startswith(reverse("admin:reviews_reviewitem_changelist"))
    assert "needs more confirmations before the caseworker sees it" in first.content.decode()
    assert "it is now confirmed, and the caseworker sees it" in second.content.decode()
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED
    assert "Ears, nose and hairline agree." in candidate.outcome_reason and "rita" in candidate.outcome_reason
    decisions = list(ReviewDecision.objects.order_by("id"))
    assert [(d.reviewer, d.conclusion) for d in decisions] == [(bob, "identification"), (rita, "probable")]
    assert decisions[0].features["nose"] == "similar" and decisions[0].bias_acknowledged
    assert AuditEvent.objects.filter(action="candidate.confirmed").exists()


def test_a_reason_every_feature_and_the_acknowledgement_are_required(
    client, reviewers, candidate, scores_shown, analysed_by_both
):
    client.force_login(reviewers[0])
    data = review_post(reason="  ")
    del data["feature_ears"], data["bias_acknowledged"]

    response = client.post(change_url(candidate), data)

    page = response.content.decode()
    assert response.status_code == 200
    assert page.count("This field is required") >= 2 and "Acknowledge the bias warning" in page
    assert not ReviewDecision.objects.exists()


def test_blind_review_hides_the_first_reason_from_the_second_reviewer(client, reviewers, candidate):
    bob, rita = reviewers
    decide(candidate, bob, reason="The scar above the left eyebrow matches.")
    analysed(candidate, rita)
    client.force_login(rita)

    before = client.get(change_url(candidate)).content.decode()
    decide(candidate, rita, reason="Jaw line and ears agree.")
    after = client.get(change_url(candidate)).content.decode()

    assert "scar above the left eyebrow" not in before and "Blind review" in before
    assert "scar above the left eyebrow" in after


def _decisions_field(page: str) -> str:
    """The candidate page's "decisions so far", as shown."""
    (field,) = re.findall(r'field-history.*?<div class="readonly">(.*?)</div>', page, re.S)
    return field.strip()


def test_blind_review_does_not_say_whether_anyone_has_decided(client, reviewers, org, alice):
    from tests.factories import candidate_with

    # Given two candidates waiting for rita: bob has decided one and nobody the other
    bob, rita = reviewers
    decided, untouched = (candidate_with(organisation=org, created_by=alice) for _ in range(2))
    decide(decided, bob, reason="Ear shape agrees.")
    for candidate in (decided, untouched):
        analysed(candidate, rita)
    client.force_login(rita)

    # When she opens each
    pages = [client.get(change_url(candidate)).content.decode() for candidate in (decided, untouched)]

    # Then both say the same: neither how many have decided, nor whether anyone has
    shown = [_decisions_field(page) for page in pages]
    assert shown[0] == shown[1]
    assert "Blind review" in shown[0] and "once you record yours" in shown[0]
    assert not any(re.search(r"\d+ other reviewers? ha(s|ve) decided|None yet", page) for page in pages)
    assert "bob" not in shown[0]
    # And once she has decided, the page shows bob's decision beside hers
    decide(decided, rita, reason="Nose bridge agrees.")
    after = _decisions_field(client.get(change_url(decided)).content.decode())
    assert "Ear shape agrees." in after and "Nose bridge agrees." in after


def test_policy_can_hide_the_scores_until_the_comparison_is_recorded(client, reviewers, dana, candidate, org):
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    bob = reviewers[0]
    analyse(candidate, bob)
    client.force_login(bob)

    before = client.get(change_url(candidate)).content.decode()
    data = {k: v for k, v in review_post().items() if k.startswith("feature_")}
    client.post(change_url(candidate), {**data, "_save": "Save"})
    after = client.get(change_url(candidate)).content.decode()

    assert f"{candidate.distance:.3f}" not in before and 'name="conclusion"' not in before
    assert FeatureComparison.objects.filter(reviewer=bob).exists()
    assert f"{candidate.distance:.3f}" in after and 'name="conclusion"' in after


@pytest.mark.parametrize("page", ["candidate", "history"])
def test_while_scores_are_hidden_no_page_names_the_candidate_by_its_rank(client, reviewers, candidate, page):
    # Given bob, who has analysed the probe but not yet compared the faces, under the default policy (scores hidden)
    bob = reviewers[0]
    analyse(candidate, bob)
    client.force_login(bob)

    # When he opens the candidate's page, or its history
    url = (
        change_url(candidate)
        if page == "candidate"
        else reverse("admin:reviews_reviewitem_history", args=[candidate.pk])
    )
    html = client.get(url).content.decode()

    # Then neither its title nor its headings carry the candidate's rank
    title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
    assert "rank" not in title.lower() and f"Candidate {candidate.pk}" in title
    assert f"rank {candidate.rank}" not in html


def test_without_training_the_controls_are_disabled_and_the_page_says_why(client, bob, candidate):
    client.force_login(bob)

    page = client.get(change_url(candidate)).content.decode()
    response = client.post(change_url(candidate), review_post(), follow=True)

    # every control of the decision is there and disabled: the five conclusions, the reason, the acknowledgement
    controls = re.findall(r'<(?:input|textarea)[^>]*name="(?:conclusion|reason|bias_acknowledged)"[^>]*>', page)
    assert len(controls) == 7 and all(" disabled" in control for control in controls), controls
    assert "The decision controls are disabled" in page and "no recorded facial-comparison training" in page
    # and a decision posted anyway is refused: the page again, with the reason, and nothing recorded
    assert (response.status_code, response.redirect_chain) == (200, [])
    assert "The decision controls are disabled" in response.content.decode()
    assert not ReviewDecision.objects.exists()
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.PENDING


def test_the_case_creator_cannot_review_it(client, trained, dana, enrol, faces):
    from matching import services

    trained(dana)
    enrol("OBAMA-REF", OBAMA)
    case = services.case_create(
        organisation=dana.membership.organisation,
        acting_user=dana,
        reference="OWN",
        title="t",
        purpose="p",
        photos=[services.uploaded_image_read(faces.upload(OBAMA_2))],
    )
    services.photo_process(photo_id=case.photos.get().pk)
    client.force_login(dana)

    page = client.get(change_url(case.candidates.get())).content.decode()

    assert "separation of duties" in page


def test_nobody_can_edit_or_delete_a_decision(client, reviewers, dana, candidate):
    decision = decide(candidate, reviewers[0], conclusion="exclusion", reason="Different chin.")
    client.force_login(dana)

    change = client.post(reverse("admin:reviews_reviewdecision_change", args=[decision.pk]), {"reason": "edited"})
    delete = client.post(reverse("admin:reviews_reviewdecision_delete", args=[decision.pk]), {"post": "yes"})
    item = client.post(reverse("admin:reviews_reviewitem_delete", args=[candidate.pk]), {"post": "yes"})

    assert (change.status_code, delete.status_code, item.status_code) == (403, 403, 403)
    assert ReviewDecision.objects.get().reason == "Different chin."
    assert Candidate.objects.filter(pk=candidate.pk).exists()


def test_the_queue_lists_what_this_reviewer_may_still_decide_oldest_first(client, reviewers, enrol, open_case):
    bob, rita = reviewers
    enrol("OBAMA-REF", OBAMA)
    first = open_case(OBAMA_2, reference="Q-1").candidates.get()
    second = open_case("face_recognition/obama__tests_test_images_obama3.jpg", reference="Q-2").candidates.get()
    decide(first, bob)
    client.force_login(bob)

    bobs = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()
    client.force_login(rita)
    ritas = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()

    assert change_url(first) not in bobs and change_url(second) in bobs
    assert ritas.index(change_url(first)) < ritas.index(change_url(second))
    assert "waiting-fresh" in ritas


def test_previous_and_next_take_the_reviewer_through_his_queue(client, reviewers, erin, enrol, open_case):
    # Given two candidates in bob's queue, oldest first
    bob, _ = reviewers
    enrol("OBAMA-REF", OBAMA)
    first, second = (open_case(OBAMA_2, reference=f"N-{n}").candidates.get() for n in range(2))
    client.force_login(bob)

    # When he opens the first, the page leads to the next and the previous items
    page = client.get(change_url(first)).content.decode()
    next_of, previous_of = "admin:reviews_reviewitem_next", "admin:reviews_reviewitem_previous"
    assert reverse(next_of, args=[first.pk]) in page and reverse(previous_of, args=[first.pk]) in page

    # Then "next" and "previous" take him to the neighbouring items
    assert client.get(reverse(next_of, args=[first.pk])).url == change_url(second)
    assert client.get(reverse(previous_of, args=[second.pk])).url == change_url(first)

    # and past either end he stays on the item, and is told why
    response = client.get(reverse(next_of, args=[second.pk]), follow=True)
    assert response.redirect_chain == [(change_url(second), 302)]
    assert "No later item in your queue." in response.content.decode()
    response = client.get(reverse(previous_of, args=[first.pk]), follow=True)
    assert "No earlier item in your queue." in response.content.decode()

    # When another organisation's admin asks from one of them, there is nothing there
    client.force_login(erin)
    assert client.get(reverse(next_of, args=[first.pk])).status_code == 404


@pytest.mark.parametrize("scores", ["shown", "hidden"])
def test_the_queues_rows_are_those_the_admins_own_list_would_write(
    client, request, reviewers, enrol, open_case, audit_run, scores
):
    from django.contrib.admin.templatetags.admin_list import result_list
    from django.template.loader import render_to_string
    from django.test.html import parse_html

    from reviews.tasks import refresh_warnings

    # Given three candidates: one analysed by bob and claimed by rita, one with its warning stored, one bare
    bob, rita = reviewers
    if scores == "shown":
        request.getfixturevalue("scores_shown")
    enrol("OBAMA-REF", OBAMA)
    first = open_case(OBAMA_2, reference="R-1").candidates.get()
    open_case("face_recognition/obama__tests_test_images_obama3.jpg", reference="R-2")
    refresh_warnings(first.organisation_id)
    open_case(OBAMA_2, reference="R-3")
    analyse(first, bob)
    client.force_login(rita)
    client.post(
        reverse("admin:reviews_reviewitem_changelist"), {"action": "claim", "_selected_action": [first.pk], "index": 0}
    )
    client.force_login(bob)

    # When bob opens the queue with filters that its links must carry on
    response = client.get(reverse("admin:reviews_reviewitem_changelist") + "?items=open&waiting=day&o=4")
    page = response.content.decode()

    # Then the table is, tag for tag, what the admin's {% result_list %} writes for the same changelist
    admins = render_to_string("admin/change_list_results.html", result_list(response.context["cl"]))
    (ours,) = re.findall(r'<div class="results">.*?</table>\s*</div>', page, re.S)
    (theirs,) = re.findall(r'<div class="results">.*?</table>\s*</div>', admins, re.S)
    assert parse_html(ours) == parse_html(theirs)
    assert ours.count("<tr>") == 4 and "_changelist_filters=" in ours and ">rita<" in ours
    assert ('class="field-distance_display">hidden</td>' in ours) == (scores == "hidden")


def test_queue_filters_by_severity_and_claims(client, reviewers, candidate, audit_run, scores_shown):
    from reviews.tasks import refresh_warnings

    bob, rita = reviewers
    refresh_warnings(candidate.organisation_id)
    client.force_login(bob)
    client.post(
        reverse("admin:reviews_reviewitem_changelist"),
        {"action": "claim", "_selected_action": [candidate.pk], "index": 0},
    )
    client.force_login(rita)

    severity = bias_panel(candidate).severity
    other = "standard" if severity != "standard" else "elevated"
    url = reverse("admin:reviews_reviewitem_changelist")
    stored = client.get(f"{url}?severity={severity}").content.decode()
    elsewhere = client.get(f"{url}?severity={other}").content.decode()
    claimed = client.get(url + "?claimed=others").content.decode()

    assert change_url(candidate) in stored and change_url(candidate) not in elsewhere
    assert change_url(candidate) in claimed and ">bob<" in claimed


# Insiders: the attacks a reviewer in a hurry or an org admin who wants a result would try. Candidates are
# built from rows: these tests are about the workflow, not about finding faces.


@pytest.fixture
def row_candidate(org, alice):
    from tests.factories import candidate_with

    return candidate_with(organisation=org, created_by=alice, distance=0.4321)


def _escalate(candidate, confirming, rejecting):
    decide(candidate, confirming, reason="Ears, nose and jaw agree.")
    decide(candidate, rejecting, conclusion="exclusion", reason="The chin differs clearly.")
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.ESCALATED


def test_a_participant_cannot_settle_an_escalation_by_correcting_their_own_decision(
    client, reviewers, dana, trained, row_candidate
):
    # Given bob confirmed and dana, an org admin, rejected: the candidate is escalated
    trained(dana)
    _escalate(row_candidate, reviewers[0], dana)
    own = ReviewDecision.objects.get(reviewer=dana)
    client.force_login(dana)

    # When dana "corrects" her rejection into a confirmation
    page = client.get(change_url(row_candidate) + f"?correct={own.pk}").content.decode()
    client.post(change_url(row_candidate) + f"?correct={own.pk}", review_post(corrects=own.pk), follow=True)

    # Then the escalation stays open for someone who took no part
    row_candidate.refresh_from_db()
    assert row_candidate.outcome == Outcome.ESCALATED
    assert ReviewDecision.objects.filter(reviewer=dana).count() == 1
    assert "You took part in the disagreement" in page


def test_an_org_admin_who_may_still_decide_sees_no_decision_in_the_decisions_admin_or_the_log(
    client, reviewers, dana, trained, row_candidate
):
    # Given bob has decided, and dana (an org admin who may still decide) has not
    trained(dana)
    decision = decide(row_candidate, reviewers[0], conclusion="probable", reason="A distinctive scar on the chin.")
    event = AuditEvent.objects.get(action="review.decide")
    client.force_login(dana)

    # When she opens the decision, the list of decisions, the activity log and the log entry
    change = client.get(reverse("admin:reviews_reviewdecision_change", args=[decision.pk]))
    listing = client.get(reverse("admin:reviews_reviewdecision_changelist")).content.decode()
    log_listing = client.get(reverse("admin:portal_auditevent_changelist")).content.decode()
    log = client.get(reverse("admin:portal_auditevent_change", args=[event.pk]))

    # Then none of them shows bob's conclusion or reason, nor even that someone has decided
    assert change.status_code == 404
    assert reverse("admin:reviews_reviewdecision_change", args=[decision.pk]) not in listing
    assert reverse("admin:portal_auditevent_change", args=[event.pk]) not in log_listing
    assert "review.decide" not in log_listing
    assert log.status_code == 404  # as a row that does not exist
    # And once she has decided, she sees them
    decide(row_candidate, dana, conclusion="identification", reason="Ears and jaw agree.")
    assert (
        "distinctive scar"
        in client.get(reverse("admin:reviews_reviewdecision_change", args=[decision.pk])).content.decode()
    )
    assert "probable" in client.get(reverse("admin:portal_auditevent_change", args=[event.pk])).content.decode()


@pytest.mark.parametrize("lookup", ["distance__lte=0.5", "distance__gt=0.4", "rank=1", "rank__lte=2", "outcome=x"])
def test_the_queue_accepts_only_its_declared_filters(client, reviewers, dana, org, row_candidate, lookup):
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    client.force_login(reviewers[0])

    response = client.get(reverse("admin:reviews_reviewitem_changelist") + f"?items=all&{lookup}")

    assert response.status_code == 400
    assert change_url(row_candidate) not in response.content.decode()


def test_the_queue_still_takes_its_declared_filters(client, reviewers, row_candidate):
    client.force_login(reviewers[0])

    response = client.get(reverse("admin:reviews_reviewitem_changelist") + "?items=open&waiting=day&claimed=nobody")

    assert response.status_code == 200 and change_url(row_candidate) in response.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "admin:reviews_reviewdecision_changelist?candidate__distance__lte=0.5",
        "admin:portal_auditevent_changelist?detail__distance__lte=0.5",
        "admin:portal_auditevent_changelist?detail__conclusion=probable",
    ],
)
def test_the_decisions_admin_and_the_log_refuse_lookups_on_scores_and_conclusions(
    client, reviewers, dana, trained, row_candidate, url
):
    trained(dana)
    decide(row_candidate, reviewers[0], conclusion="probable")
    client.force_login(dana)
    name, _, query = url.partition("?")

    response = client.get(reverse(name) + "?" + query)

    assert response.status_code == 400


def test_hidden_scores_stay_hidden_from_the_senior_decider_in_the_log(
    client, reviewers, dana, trained, org, row_candidate
):
    # Given scores hidden until compared, and an escalation dana may settle but has not yet compared
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    trained(dana)
    _escalate(row_candidate, *reviewers)
    event = AuditEvent.objects.filter(action="review.decide").first()
    decision = ReviewDecision.objects.first()
    client.force_login(dana)

    log = client.get(reverse("admin:portal_auditevent_change", args=[event.pk])).content.decode()
    snapshot = client.get(reverse("admin:reviews_reviewdecision_change", args=[decision.pk]))
    page = client.get(change_url(row_candidate)).content.decode()

    assert "0.4321" not in log and '"distance"' not in log and '"rank"' not in log
    assert snapshot.status_code == 404
    assert "0.432" not in page and 'name="conclusion"' not in page


def test_the_maker_of_an_api_key_cannot_review_a_case_filed_with_it(client, dana, org, trained, faces):
    from portal.keys import api_key_create
    from tests.factories import candidate_with

    # Given dana made a caseworker key and filed a case with it
    trained(dana)
    _, secret = api_key_create(organisation=org, name="Intake", role="caseworker", acting_user=dana)
    filed = client.post(
        "/api/cases/",
        {
            "reference": "KEY-1",
            "title": "Filed by key",
            "purpose": "Locate a missing child",
            "photos": faces.upload(OBAMA_2),
        },
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert filed.status_code == 201, filed.content
    case = Case.objects.get(reference="KEY-1")
    candidate = candidate_with(organisation=org, case=case)
    client.force_login(dana)

    # When dana opens the queue and tries to confirm the case's candidate
    queue = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()
    page = client.get(change_url(candidate)).content.decode()
    client.post(change_url(candidate), review_post(), follow=True)

    # Then the key's maker is kept away from it, as its creator would be
    assert not ReviewDecision.objects.exists()
    assert change_url(candidate) not in queue
    assert "separation of duties" in page
    case.refresh_from_db()
    assert case.accountable_by == dana


def test_an_org_admin_cannot_attest_their_own_training(client, dana, alice, bob):
    from reviews.models import TrainingAttestation

    client.force_login(dana)
    form = client.get(reverse("admin:reviews_trainingattestation_add")).content.decode()

    response = client.post(
        reverse("admin:reviews_trainingattestation_add"),
        {"reviewer": dana.pk, "trained_on": "2026-01-05", "course": "Self-taught", "_save": "Save"},
    )

    assert response.status_code == 200 and not TrainingAttestation.objects.exists()
    # The form offers reviewers only: neither dana herself nor alice, a caseworker
    assert f'value="{bob.pk}"' in form
    assert f'value="{dana.pk}"' not in form and f'value="{alice.pk}"' not in form


def test_a_second_org_admin_attests_an_org_admins_training(client, dana, org):
    from reviews.models import TrainingAttestation
    from tests.conftest import _second_admin

    olga = _second_admin(org)
    client.force_login(olga)

    response = client.post(
        reverse("admin:reviews_trainingattestation_add"),
        {"reviewer": dana.pk, "trained_on": "2026-01-05", "course": "FISWG", "_save": "Save"},
    )

    assert response.status_code == 302
    assert TrainingAttestation.objects.get().recorded_by == olga


def test_the_queue_leaves_out_what_an_untrained_reviewer_may_not_decide(client, bob, rita, trained, row_candidate):
    # Given rita's training is current and bob's expired two years ago
    trained(rita)
    trained(bob, days_ago=730)

    queues = {}
    for user in (bob, rita):
        client.force_login(user)
        queues[user.username] = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()

    # Then only rita, who may decide it, has it in her queue
    assert change_url(row_candidate) in queues["rita"]
    assert change_url(row_candidate) not in queues["bob"]


def test_an_untrained_reviewer_sees_save_disabled_with_the_reason_beside_it(client, bob, candidate):
    client.force_login(bob)

    page = client.get(change_url(candidate)).content.decode()

    save = re.search(r'<button[^>]*id="review-save"[^>]*>', page).group(0)
    assert " disabled" in save and 'aria-describedby="save-disabled"' in save
    reason = re.search(r'<span class="disabled-reason" id="save-disabled">([^<]*)</span>', page).group(1)
    assert "no recorded facial-comparison training" in reason
    # and the blocker is said at the top of the page, before the faces
    assert page.index("The decision controls are disabled") < page.index('id="face-viewer"')


def test_a_trained_reviewer_sees_save_enabled_and_no_disabled_reason(client, reviewers, candidate):
    client.force_login(reviewers[0])

    page = client.get(change_url(candidate)).content.decode()

    save = re.search(r'<button[^>]*id="review-save"[^>]*>', page).group(0)
    assert " disabled" not in save and 'id="save-disabled"' not in page


def test_a_decided_open_item_shows_the_reviewers_own_recorded_worksheet(client, reviewers, candidate):
    # Given bob's decision, with the nose marked dissimilar, on a candidate still waiting for a second reviewer
    bob, _ = reviewers
    features = {**ALL_SIMILAR, "nose": "dissimilar", "ears": "not_visible"}
    decide(candidate, bob, conclusion="probable", reason="Jaw and hairline agree; nose differs.", features=features)
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.PENDING
    client.force_login(bob)

    page = client.get(change_url(candidate)).content.decode()

    # Then the page shows his own worksheet, read-only, rather than an empty greyed form
    assert "Your recorded worksheet" in page and "Jaw and hairline agree; nose differs." in page
    assert "Probable: probably the same person" in page
    assert 'name="feature_' not in page
    grid = re.search(r'<table class="worksheet-grid readonly".*?</table>', page, re.S).group(0)
    rows = dict(re.findall(r'<th scope="row">([^<]+)</th>(.*?)</tr>', grid, re.S))
    marked = {
        label: re.findall(r"<td>(.*?)</td>", cells).index('<span class="mark-on" aria-label="marked">●</span>')
        for label, cells in rows.items()
    }
    assert marked["Nose"] == 1 and marked["Ears"] == 2 and marked["Eyes"] == 0 and len(marked) == 10
    # and Save says why it is off
    assert re.search(
        r'<button type="button" disabled>Save</button>\s*<span class="disabled-reason done">You have recorded', page
    )


# Reads: opening the queue or a candidate writes nothing but the activity log.

WRITE = re.compile(r'^\s*(INSERT INTO|UPDATE|DELETE FROM)\s+"?(\w+)"?', re.IGNORECASE)
ACTIVITY_LOG_TABLES = {"portal_auditevent", "portal_auditchainhead", "portal_auditviewcounter"}


def test_opening_the_queue_and_a_candidate_writes_only_the_activity_log(client, reviewers, candidate, audit_run):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # Given a reviewer with a candidate waiting, and an organisation that never saved its review policy
    bob, _ = reviewers
    client.force_login(bob)
    from reviews.models import ReviewPolicy

    ReviewPolicy.objects.filter(organisation=candidate.organisation).delete()

    # When they open the queue and the candidate's page
    with CaptureQueriesContext(connection) as queries:
        queue = client.get(reverse("admin:reviews_reviewitem_changelist"))
        page = client.get(change_url(candidate))

    # Then both pages render, and the only rows written are the activity log's
    assert queue.status_code == 200 and page.status_code == 200
    written = {m.group(2).lower() for q in queries.captured_queries if (m := WRITE.match(q["sql"]))}
    assert written <= ACTIVITY_LOG_TABLES, written
    assert not ReviewPolicy.objects.filter(organisation=candidate.organisation).exists()


def test_while_scores_are_hidden_the_queue_shows_no_severity_to_sort_by(
    client, org, dana, reviewers, candidate, audit_run
):
    from reviews.services import warnings_refresh

    # Given a policy that hides scores until compared, and a candidate whose severity (from the error rate
    # at its own distance) is stored as elevated
    bob, _ = reviewers
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    warnings_refresh(organisation=org)
    client.force_login(bob)

    # When the reviewer opens the queue, and tries the severity filter both ways
    queue = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()
    elevated = client.get(reverse("admin:reviews_reviewitem_changelist") + "?severity=elevated")
    standard = client.get(reverse("admin:reviews_reviewitem_changelist") + "?severity=standard")

    # Then no severity is shown, and the filter cannot tell the two apart
    assert change_url(candidate) in queue
    assert "severity-" not in queue and "warning severity" not in queue
    assert (change_url(candidate) in elevated.content.decode()) == (change_url(candidate) in standard.content.decode())


def test_a_decided_or_closed_item_reads_as_done_not_as_blocked(client, reviewers, candidate):
    # Given a candidate bob has decided, which rita then confirms
    bob, rita = reviewers
    decide(candidate, bob)
    client.force_login(bob)
    decided = client.get(change_url(candidate)).content.decode()
    decide(candidate, rita)
    confirmed = client.get(change_url(candidate)).content.decode()

    # Then bob's page states what he did in the plain "finished" style, with no "disabled" alarm
    status = re.search(r'<div class="review-status([^"]*)" id="review-status">(.*?)</nav>', decided, re.S)
    assert status.group(1).strip() == "finished"
    assert "You have already decided this candidate" in status.group(2)
    assert "The decision controls are disabled" not in status.group(2)
    # And once it is confirmed, the status no longer says how many confirmations it needs
    status = re.search(r'<div class="review-status([^"]*)" id="review-status">(.*?)</nav>', confirmed, re.S)
    assert "Confirmed" in status.group(2) and "needs 2 confirmations" not in status.group(2)
    assert "needs 2 confirmations" in decided


def _case_filter(client, query: str = "") -> set[str]:
    """The case references the queue's case filter lists."""
    page = client.get(reverse("admin:reviews_reviewitem_changelist") + query).content.decode()
    filter_block = page[page.index('id="changelist-filter"') :]
    return set(re.findall(r'<a href="\?[^"]*case=\d+[^"]*">([^<]+)</a>', filter_block))


@pytest.fixture
def two_cases_listed(client, reviewers, candidate, open_case):
    """bob has opened his queue, whose case filter lists C-1 (the candidate's case) and C-2; gives (bob, C-2)."""
    bob, _ = reviewers
    second = open_case(OBAMA_2, reference="C-2")
    client.force_login(bob)
    assert _case_filter(client) == {"C-1", "C-2"}
    return bob, second


def test_the_case_filter_lists_only_cases_the_reviewer_may_still_decide_in_his_queue(
    client, reviewers, candidate, open_case
):
    # Given bob has decided the candidate on case C-1, and another case, C-2, has one waiting for him
    bob, _ = reviewers
    decide(candidate, bob)
    open_case(OBAMA_2, reference="C-2")
    client.force_login(bob)

    # When he opens his queue, and then all open items
    # Then his queue's case filter offers only C-2 (C-1 would lead to an empty list); all open items offer both
    assert _case_filter(client) == {"C-2"}
    assert _case_filter(client, "?items=open") == {"C-1", "C-2"}


def test_the_case_filter_drops_a_case_at_once_when_the_reviewer_decides_its_last_item(
    client, candidate, two_cases_listed, django_capture_on_commit_callbacks
):
    # Given bob has opened his queue, whose case filter lists C-1 and C-2
    bob, _ = two_cases_listed

    # When he decides C-1's only candidate
    with django_capture_on_commit_callbacks(execute=True):
        decide(candidate, bob)

    # Then his next queue page lists only C-2: his own decision does not wait for the list to be looked up again
    assert _case_filter(client) == {"C-2"}


def test_the_case_filter_lists_a_new_case_within_half_a_minute_while_the_rows_show_it_at_once(
    client, reviewers, candidate, open_case, monkeypatch
):
    from reviews import selectors

    # Given bob has opened his queue, with C-1 in its case filter
    bob, _ = reviewers
    client.force_login(bob)
    assert _case_filter(client) == {"C-1"}
    started = selectors._clock()

    # When a new case, C-2, brings a candidate for him
    open_case(OBAMA_2, reference="C-2")
    page = client.get(reverse("admin:reviews_reviewitem_changelist")).content.decode()

    # Then its row is in the queue at once, while the case filter still lists what it found before
    assert page.count('class="action-select"') == 2
    assert _case_filter(client) == {"C-1"}
    # And once QUEUE_CASES_SECONDS have passed, the filter lists C-2 too
    monkeypatch.setattr(selectors, "_clock", lambda: started + selectors.QUEUE_CASES_SECONDS + 1)
    assert _case_filter(client) == {"C-1", "C-2"}


def test_the_case_filter_shows_a_listed_case_as_it_is_now(client, candidate, two_cases_listed):
    # Given bob has opened his queue, whose case filter lists C-1 and C-2
    _, second = two_cases_listed

    # When C-2 is renamed and C-1 is deleted
    Case.objects.filter(pk=second.pk).update(reference="C-2-renamed")
    Case.objects.filter(pk=candidate.case_id).delete()

    # Then the filter, which has not looked for cases again, shows C-2 under its new name and C-1 not at all
    assert _case_filter(client) == {"C-2-renamed"}


def test_the_case_filter_lists_a_reviewers_cases_at_once_when_his_training_is_recorded(
    client, bob, trained, candidate, django_capture_on_commit_callbacks
):
    # Given bob, with no training recorded yet, has opened his queue: he may decide nothing, so no case is listed
    client.force_login(bob)
    assert _case_filter(client) == set()

    # When his org admin records his training
    with django_capture_on_commit_callbacks(execute=True):
        trained(bob)

    # Then his next queue page lists C-1
    assert _case_filter(client) == {"C-1"}


def test_the_case_filter_drops_a_case_at_once_when_the_reviewer_judges_its_probe_of_no_value(
    client, candidate, two_cases_listed, django_capture_on_commit_callbacks
):
    # Given bob has opened his queue, whose case filter lists C-1 and C-2
    bob, _ = two_cases_listed

    # When he judges C-1's probe of no value, which closes its candidate
    with django_capture_on_commit_callbacks(execute=True):
        analyse(candidate, bob, value="none", note="Motion blur across the whole face.")

    # Then his next queue page lists only C-2
    assert _case_filter(client) == {"C-2"}
