"""The reviewer's comparison page in headless Chromium: one screen to compare and decide."""

from __future__ import annotations

from pathlib import Path

import pytest

from matching.models import Photo
from tests.browser.conftest import log_in
from tests.conftest import OBAMA, OBAMA_2, analysed, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/work/shots/c14")


def _in_viewport(page, selector: str, width: int, height: int) -> bool:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


def _candidate(enrol, open_case):
    """A candidate for OBAMA_2 against OBAMA-REF. A worker left running by an earlier test may claim a photo
    before this process does, so wait until every photo is finished."""
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", sex="M", age_band="45-59", ethnicity="Black")
    wait_for(lambda: all(p.is_finished for p in Photo.objects.filter(kind="reference")), message="gallery")
    case = open_case(OBAMA_2)
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    candidate = case.candidates.get()
    # These tests are about the comparison: each trained reviewer has recorded the probe's analysis
    # (the analysis step itself is in test_examiner_bench.py).
    from django.contrib.auth import get_user_model

    for reviewer in get_user_model().objects.filter(username__in=["bob", "rita"]):
        analysed(candidate, reviewer)
    return candidate


def _open_as_bob(page, live_server, candidate, password) -> None:
    """bob, signed in, on the candidate's page at 1440x900, with every face image loaded."""
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)
    page.goto(f"{live_server.url}/admin/reviews/reviewitem/{candidate.pk}/change/")
    page.wait_for_function(
        "[...document.querySelectorAll('.face-img')].every(img => img.complete && img.naturalWidth > 0)"
    )


def _transform(page, selector: str) -> str:
    return page.eval_on_selector(selector, "img => getComputedStyle(img).transform")


def test_reviewer_compares_and_marks_in_one_screen(page, live_server, reviewers, enrol, open_case, password):
    # Given a candidate bob may decide, opened at 1440x900
    candidate = _candidate(enrol, open_case)
    _open_as_bob(page, live_server, candidate, password)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "compare-1440x900.png"))

    # Then both faces, the whole worksheet grid and the save button are on screen without scrolling
    assert page.evaluate("window.scrollY") == 0
    for selector in ["#face-probe", "#face-gallery", "#worksheet-grid", "#review-save", "#review-status"]:
        assert _in_viewport(page, selector, 1440, 900), selector
    assert page.is_enabled("#review-save")
    assert page.is_visible("#key-legend")

    # When bob zooms one face with the wheel, the other follows
    before = _transform(page, "#face-gallery")
    page.hover(".face-view:has(#face-probe)")
    page.mouse.wheel(0, -300)
    page.wait_for_function("getComputedStyle(document.querySelector('#face-gallery')).transform !== 'none'")
    probe, gallery = _transform(page, "#face-probe"), _transform(page, "#face-gallery")
    assert probe == gallery != before and probe != "matrix(1, 0, 0, 1, 0, 0)"

    # And a keyboard mark lands on the focused row: "2" marks the first feature dissimilar, then the next row
    page.keyboard.press("2")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("3")
    assert page.is_checked("input[name=feature_face_shape][value=dissimilar]")
    assert page.is_checked("input[name=feature_forehead][value=not_visible]")
    page.screenshot(path=str(SHOTS / "compare-1440x900-zoomed-marked.png"))

    # At 1280x800 it still fits
    page.set_viewport_size({"width": 1280, "height": 800})
    page.keyboard.press("0")  # reset the zoom
    page.mouse.move(5, 5)
    page.screenshot(path=str(SHOTS / "compare-1280x800.png"))
    for selector in ["#face-probe", "#face-gallery", "#worksheet-grid", "#review-save"]:
        assert _in_viewport(page, selector, 1280, 800), selector


def test_blocked_and_decided_pages_say_why_save_is_off(
    page, live_server, bob, rita, trained, enrol, open_case, password
):
    from tests.conftest import decide

    # Given an untrained bob, and rita (trained) who has decided the candidate
    candidate = _candidate(enrol, open_case)
    trained(rita)
    decide(candidate, rita, reason="Jaw and hairline agree; ears hidden.")
    page.set_viewport_size({"width": 1440, "height": 900})
    SHOTS.mkdir(parents=True, exist_ok=True)
    url = f"{live_server.url}/admin/reviews/reviewitem/{candidate.pk}/change/"

    # When bob opens it, Save is disabled and the reason sits beside it, on screen
    log_in(page, live_server, "bob", password)
    page.goto(url)
    page.wait_for_selector("#review-save")
    page.screenshot(path=str(SHOTS / "compare-untrained-1440x900.png"))
    assert page.is_disabled("#review-save")
    assert "no recorded facial-comparison training" in page.inner_text("#save-disabled")
    assert _in_viewport(page, "#save-disabled", 1440, 900) and _in_viewport(page, "#review-status", 1440, 900)

    # And rita sees her own recorded worksheet, read-only
    page.context.clear_cookies()
    log_in(page, live_server, "rita", password)
    page.goto(url)
    page.wait_for_selector("#worksheet-grid.readonly")
    page.screenshot(path=str(SHOTS / "compare-decided-1440x900.png"))
    assert "Jaw and hairline agree; ears hidden." in page.inner_text("#worksheet")
    assert page.locator("#worksheet-grid .mark-on").count() == 10


def test_with_hidden_scores_the_page_shows_no_distance_or_rank_until_the_comparison(
    page, live_server, reviewers, dana, org, enrol, open_case, password
):
    from reviews.services import review_policy_update

    # Given a policy that hides the scores until the comparison is recorded
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=True)
    candidate = _candidate(enrol, open_case)
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When bob opens it, neither distance nor rank shows anywhere on the page, breadcrumbs included
    page.goto(f"{live_server.url}/admin/reviews/reviewitem/{candidate.pk}/change/")
    page.wait_for_selector("#review-save")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "compare-hidden-scores-1440x900.png"))
    text = page.inner_text("body")
    assert f"{candidate.distance:.3f}" not in text and "rank" not in text.lower()
    assert page.inner_text("#review-save") == "Record comparison"

    # and marking every row by keyboard and recording it opens the decision
    for _ in range(10):
        page.keyboard.press("1")
    page.click("#review-save")
    page.wait_for_selector("input[name=conclusion]")
    assert f"{candidate.distance:.3f}" in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "compare-after-comparison-1440x900.png"))


def test_drag_pans_both_faces_and_the_overlay_fades_and_flickers(
    page, live_server, reviewers, enrol, open_case, password
):
    # Given bob on a candidate's page, with the faces zoomed in
    candidate = _candidate(enrol, open_case)
    _open_as_bob(page, live_server, candidate, password)
    page.hover(".face-view:has(#face-probe)")
    page.mouse.wheel(0, -600)
    page.wait_for_function("getComputedStyle(document.querySelector('#face-gallery')).transform !== 'none'")
    zoomed = _transform(page, "#face-gallery")

    # When he drags the probe face 60 px right and 40 px down
    box = page.locator(".face-view:has(#face-probe)").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 30, y + 20, steps=3)
    page.mouse.move(x + 60, y + 40, steps=3)
    page.mouse.up()

    # Then both faces moved by exactly that, and stay at the same zoom as each other
    probe, gallery = _transform(page, "#face-probe"), _transform(page, "#face-gallery")
    assert probe == gallery != zoomed

    def translation(matrix: str) -> tuple[float, float]:
        values = [float(v) for v in matrix[len("matrix(") : -1].split(",")]
        return values[4], values[5]

    moved = translation(gallery)
    before = translation(zoomed)
    assert moved[0] - before[0] == pytest.approx(60, abs=1) and moved[1] - before[1] == pytest.approx(40, abs=1)

    # When he sets the fade slider to 70 %, the gallery face lies over the probe at that opacity
    page.eval_on_selector("#face-fade", "el => { el.value = 70; el.dispatchEvent(new Event('input')); }")
    assert page.eval_on_selector("#face-overlay", "el => getComputedStyle(el).opacity") == "0.7"
    assert page.inner_text("#face-fade-value") == "70%"

    # And flicker (the button, then `f`) alternates the overlay between hidden and shown, and stops at the fade
    page.click("#face-flicker")
    assert page.get_attribute("#face-flicker", "aria-pressed") == "true"
    seen = set()
    for _ in range(12):
        seen.add(page.eval_on_selector("#face-overlay", "el => el.style.opacity"))
        page.wait_for_timeout(150)
    assert {"0", "1"} <= seen
    page.keyboard.press("f")
    assert page.get_attribute("#face-flicker", "aria-pressed") == "false"
    assert page.eval_on_selector("#face-overlay", "el => el.style.opacity") == "0.7"
    page.screenshot(path=str(SHOTS / "compare-panned-faded.png"))
