"""The reviewer's journeys in headless Chromium: signing in with a second factor, working the queue, comparing
with the keyboard, deciding blind, being told why a control is off, and correcting a decision.

The comparison page's layout, zoom and hidden scores are in test_review_compare.py (with the untrained
reviewer's disabled Save); enrolling the second factor at first login is in test_first_hour.py.
"""

from __future__ import annotations

import time

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from matching.models import Candidate, Outcome, Photo
from reviews.models import ReviewDecision
from tests.browser.conftest import JOURNEY_SHOTS, images_loaded, log_in, totp_code
from tests.conftest import ALL_SIMILAR, OBAMA, OBAMA_2, analysed, decide, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUEUE = "/admin/reviews/reviewitem/"


@pytest.fixture(autouse=True)
def scores_shown(org):
    """These journeys decide in one step: scores shown from the start. Blind by default, and the probe's analysis
    step, are walked in test_examiner_bench.py and test_first_hour.py."""
    from reviews.models import ReviewPolicy

    ReviewPolicy.objects.create(organisation=org, hide_scores_until_compared=False)


@pytest.fixture
def gallery(enrol):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", sex="M", age_band="45-59", ethnicity="Black")
    wait_for(lambda: all(p.is_finished for p in Photo.objects.filter(kind="reference")), message="gallery")


@pytest.fixture
def candidate_for(gallery, open_case):
    """One pending candidate (OBAMA-REF) per case opened with OBAMA_2."""

    def make(reference: str) -> Candidate:
        case = open_case(OBAMA_2, reference=reference)
        # A worker left running by an earlier test may claim the photo first; either way it finishes.
        wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
        candidate = case.candidates.get()
        from django.contrib.auth import get_user_model

        for reviewer in get_user_model().objects.filter(username__in=["bob", "rita"]):
            analysed(candidate, reviewer)  # the probe's analysis, by each reviewer who may record it
        return candidate

    return make


def _item_url(live_server, candidate: Candidate) -> str:
    return f"{live_server.url}{QUEUE}{candidate.pk}/change/"


def _open_item(page, live_server, candidate: Candidate) -> None:
    page.goto(_item_url(live_server, candidate))
    page.wait_for_selector("#review-status")
    images_loaded(page, "#face-probe, #face-gallery")


def test_reviewer_confirms_a_second_factor_at_login(page, journey_shot, live_server, reviewers, password, settings):
    # Given bob, a reviewer whose authenticator app was enrolled earlier, and a portal that requires it
    settings.REQUIRE_TWO_FACTOR = True
    bob = reviewers[0]
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)

    # When he signs in with his password, he is asked for the code, not let into the queue
    log_in(page, live_server, "bob", password)
    page.wait_for_selector("h1:has-text('Two-factor authentication')")
    assert "/accounts/2fa/" in page.url
    assert page.is_visible("label:has-text('Code from your authenticator app')")
    assert "QR" not in page.inner_text("main")  # already enrolled: no new code to scan
    journey_shot("asked")

    # and a wrong code is refused, saying what to check
    page.fill("input[name=token]", "000000" if totp_code(device) != "000000" else "111111")
    page.click("main button[type=submit]")
    page.wait_for_selector(".errorlist")
    assert "That code is not valid. Check the time on your phone and try again." in page.inner_text("main")
    journey_shot("wrong-code")

    # Then, after the second's wait that a wrong code costs, the code from his app lets him in, to his own start
    # page, and on to the queue
    time.sleep(2.1)
    page.fill("input[name=token]", totp_code(device))
    page.click("main button[type=submit]")
    page.wait_for_selector("#site-name")
    assert page.url == f"{live_server.url}/admin/"
    assert "Face search portal: review and administration" in page.inner_text("#site-name")
    page.goto(f"{live_server.url}{QUEUE}")
    assert page.inner_text("h1") == "Review queue: candidates waiting for a decision"


def test_a_reviewer_who_signs_in_again_with_the_same_code_is_told_to_wait_for_the_next(
    page, browser, journey_shot, live_server, reviewers, password, settings
):
    # Given bob, signed in with the code on his phone
    settings.REQUIRE_TWO_FACTOR = True
    bob = reviewers[0]
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    code = totp_code(device)
    log_in(page, live_server, "bob", password)
    page.fill("input[name=token]", code)
    page.click("main button[type=submit]")
    page.wait_for_selector("#site-name")
    # (at a step's edge the phone's next code is taken early; mark that one taken too, so "now" is deterministic)
    device.refresh_from_db()
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=device.last_t + 1)

    # When he signs in in a second browser within the same 30 seconds, with the code still on his phone
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    second = other.new_page()
    log_in(second, live_server, "bob", password)
    second.fill("input[name=token]", totp_code(device))
    second.click("main button[type=submit]")

    # Then he is told the code was used, and to wait for the next one, not that it is wrong
    second.wait_for_selector(".errorlist")
    message = second.inner_text(".errorlist")
    assert "This code was already used; wait for the next one" in message and "not valid" not in message
    second.screenshot(path=str(JOURNEY_SHOTS / "test_totp_code_already_used.png"), full_page=True)
    other.close()


def test_reviewer_works_the_queue_with_filters_claims_the_keyboard_and_decides(
    page, journey_shot, live_server, candidate_for, reviewers, password
):
    # Given two candidates waiting, from two cases
    first, second = candidate_for("J-R1"), candidate_for("J-R2")
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When bob opens the queue, both wait for him, oldest first, with their faces
    page.goto(f"{live_server.url}{QUEUE}")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "J-R1" in rows.nth(0).inner_text() and "J-R2" in rows.nth(1).inner_text()
    assert images_loaded(page, "#result_list img") == 4
    journey_shot("queue")

    # and filtering by case leaves the one case's item
    page.click("#changelist-filter a:has-text('J-R2')")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    assert "J-R2" in page.inner_text("#result_list tbody")

    # and claiming it tells the others he is on it
    page.check(f"input[name=_selected_action][value='{second.pk}']")
    page.select_option("select[name=action]", "claim")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    assert "Claimed 1 item(s)." in page.inner_text(".messagelist")
    page.goto(f"{live_server.url}{QUEUE}?claimed=me")
    assert page.locator("#result_list tbody tr").count() == 1
    assert "bob" in page.inner_text("#result_list tbody tr")
    journey_shot("claimed")

    # When he opens the first item, j takes him to the next one and k back
    _open_item(page, live_server, first)
    assert "case J-R1" in page.inner_text("#review-status")
    page.keyboard.press("j")
    page.wait_for_url(f"**{QUEUE}{second.pk}/change/")
    assert "case J-R2" in page.inner_text("#review-status")
    page.keyboard.press("k")
    page.wait_for_url(f"**{QUEUE}{first.pk}/change/")
    images_loaded(page, "#face-probe, #face-gallery")

    # and marks every feature row from the keyboard: 1 similar, 2 dissimilar, 3 not visible, moving down
    keys = {"similar": "1", "dissimilar": "2", "not_visible": "3"}
    for mark in ALL_SIMILAR.values():
        page.keyboard.press(keys[mark])
    for name, mark in ALL_SIMILAR.items():
        assert page.is_checked(f"input[name=feature_{name}][value={mark}]"), name
    page.check("input[name=conclusion][value=identification]")
    page.fill("textarea[name=reason]", "Hairline, eyebrows, nose and ears agree; no dissimilar feature.")
    page.check("input[name=bias_acknowledged]")
    journey_shot("marked")
    page.click("#review-save")

    # Then he is told what became of the candidate, and it has left his queue
    page.wait_for_selector(".messagelist")
    assert (
        f"Your decision on candidate {first.pk} is recorded; it needs more confirmations before the caseworker "
        "sees it." in page.inner_text(".messagelist")
    )
    journey_shot("decided")
    page.goto(f"{live_server.url}{QUEUE}")
    assert page.locator("#result_list tbody tr").count() == 1
    assert "J-R2" in page.inner_text("#result_list tbody")
    decision = ReviewDecision.objects.get(candidate=first, reviewer__username="bob")
    assert decision.features == ALL_SIMILAR and decision.conclusion == "identification"


def test_blind_review_hides_the_other_decision_until_the_reviewer_records_his_own(
    page, journey_shot, live_server, candidate_for, reviewers, password
):
    # Given a candidate that rita has confirmed, with her reason
    candidate = candidate_for("J-R3")
    rita = reviewers[1]
    decide(candidate, rita, reason="Jaw line and left ear agree closely.")
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When bob opens it, he is told neither whether anyone has decided, nor who, what or why
    _open_item(page, live_server, candidate)
    body = page.inner_text("body")
    assert "Blind review: whether other reviewers have decided, and what, is shown once you record yours." in body
    assert "other reviewer has decided" not in body
    assert "Jaw line and left ear agree closely." not in body
    assert "rita" not in body
    journey_shot("before")

    # and when he records his own decision
    for name, mark in ALL_SIMILAR.items():
        page.check(f"input[name=feature_{name}][value={mark}]")
    page.check("input[name=conclusion][value=probable]")
    page.fill("textarea[name=reason]", "Nose and mouth agree; the photo is small.")
    page.check("input[name=bias_acknowledged]")
    page.click("#review-save")
    page.wait_for_selector(".messagelist")
    assert "it is now confirmed, and the caseworker sees it" in page.inner_text(".messagelist")

    # Then the item shows him rita's decision and reason beside his own
    _open_item(page, live_server, candidate)
    body = page.inner_text("body")
    assert "Blind review" not in body
    assert "Jaw line and left ear agree closely." in body and "rita" in body
    assert "Your reason: Nose and mouth agree; the photo is small." in page.inner_text("#worksheet")
    journey_shot("after")


def test_a_reviewer_with_lapsed_training_is_told_why_beside_the_disabled_save(
    page, journey_shot, live_server, candidate_for, bob, trained, password
):
    # Given bob, whose only training record is more than 12 months old, and a candidate waiting
    trained(bob, days_ago=400)
    candidate = candidate_for("J-R4")
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When he opens the queue, the item is not in it
    page.goto(f"{live_server.url}{QUEUE}")
    assert page.locator("#result_list tbody tr").count() == 0

    # and when he opens the item by its address, the decision controls are off and say why, beside Save
    _open_item(page, live_server, candidate)
    assert page.is_disabled("#review-save")
    beside = page.inner_text("#save-disabled")
    assert "training" in beside.lower() and "expired" in beside.lower(), beside
    assert page.get_attribute("#review-save", "aria-describedby") == "save-disabled"
    save, why = page.locator("#review-save").bounding_box(), page.locator("#save-disabled").bounding_box()
    assert abs(save["y"] - why["y"]) < save["height"] and why["x"] > save["x"]  # on the same line, to its right
    assert "The decision controls are disabled:" in page.inner_text("#review-status")
    journey_shot()


def test_reviewer_corrects_his_own_decision(page, journey_shot, live_server, candidate_for, reviewers, password):
    # Given a candidate bob has called inconclusive, which is still pending
    candidate = candidate_for("J-R5")
    bob = reviewers[0]
    first = decide(candidate, bob, conclusion="inconclusive", reason="The probe photo is too small to judge.")
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When he opens it, he sees his recorded worksheet, read-only, and a way to correct it
    _open_item(page, live_server, candidate)
    assert "Your reason: The probe photo is too small to judge." in page.inner_text("#worksheet")
    assert page.locator("#worksheet button[disabled]").count() == 1
    assert "to change it, record a correction" in page.inner_text("#worksheet .disabled-reason")
    journey_shot("recorded")

    # and follows "Record a correction", marks the worksheet again and saves a new conclusion
    page.click("#review-status a:has-text('Record a correction')")
    page.wait_for_selector("#review-save:not([disabled])")
    for name, mark in ALL_SIMILAR.items():
        page.check(f"input[name=feature_{name}][value={mark}]")
    page.check("input[name=conclusion][value=identification]")
    page.fill("textarea[name=reason]", "On the full photo, ears, nose and jaw agree.")
    page.check("input[name=bias_acknowledged]")
    journey_shot("correcting")
    page.click("#review-save")
    page.wait_for_selector(".messagelist")
    assert f"Your decision on candidate {candidate.pk} is recorded" in page.inner_text(".messagelist")

    # Then the first decision stays on record and the new one refers to it
    decisions = list(ReviewDecision.objects.filter(candidate=candidate, reviewer=bob).order_by("created_at", "id"))
    assert [d.conclusion for d in decisions] == ["inconclusive", "identification"]
    assert decisions[1].corrects_id == first.pk
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.PENDING
    _open_item(page, live_server, candidate)
    assert "Your reason: On the full photo, ears, nose and jaw agree." in page.inner_text("#worksheet")
    journey_shot("corrected")


def test_reviewer_mints_an_api_token_after_the_second_factor_and_revokes_it(
    page, browser, journey_shot, live_server, reviewers, password, settings
):
    from portal.models import ApiKey

    # Given bob, a reviewer with an enrolled authenticator, signed in with his password and his code
    settings.REQUIRE_TWO_FACTOR = True
    bob = reviewers[0]
    device = TOTPDevice.objects.create(user=bob, name="phone", confirmed=True)
    log_in(page, live_server, "bob", password)
    # (the token page is behind the second factor too: asked for it, he confirms it first)
    page.goto(f"{live_server.url}/token/")
    page.wait_for_selector("h1:has-text('Two-factor authentication')")
    page.fill("input[name=token]", totp_code(device))
    page.click("main button[type=submit]")
    page.wait_for_selector("h1:has-text('Your API token')")
    assert page.inner_text("#token-none") == "You have no API token."

    # When he goes there from the admin, and creates a token with a name
    page.goto(f"{live_server.url}{QUEUE}")
    page.click("#api-token-link")
    page.fill("input[name=name]", "Queue report script")
    page.click("#token-create button[type=submit]")

    # Then the page shows its secret once, its name and when it was made
    secret = page.inner_text("#token-secret").strip()
    key = ApiKey.objects.get(user=bob, kind="personal", revoked_at__isnull=True)
    assert secret.startswith(f"fsp_{key.prefix}_")
    assert "Queue report script" in page.inner_text("#token-current")
    assert page.inner_text("[data-role=token-created]").startswith(f"{key.created_at:%Y-%m-%d %H:%M}")
    journey_shot("minted")
    # and the API answers to it, from a client that holds nothing but the token
    script = browser.new_context()
    answer = script.request.get(f"{live_server.url}/api/audit-runs/", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status == 200

    # and a reload shows the token without its secret
    page.goto(f"{live_server.url}/token/")
    assert secret not in page.content() and "Queue report script" in page.inner_text("#token-current")

    # When he revokes it
    page.click(".token-revoke button[type=submit]")

    # Then the page says so, and the API refuses it
    page.wait_for_selector("#token-none")
    assert "Your API token is revoked" in page.inner_text("main")
    journey_shot("revoked")
    answer = script.request.get(f"{live_server.url}/api/audit-runs/", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status == 401
    script.close()
