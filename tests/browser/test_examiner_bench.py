"""The examiner's bench in headless Chromium: blind by default, the probe's analysis before any comparison (and a
probe of no value closing its candidates), the image tools, every reference photo with its date, marks on the
faces hidden from the second reviewer until their own decision, and the bias warning beside Save.

Each test asserts what the examiner sees; the screenshots named in SHOTS are for a person to look at.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from matching.models import Outcome, Photo
from portal.models import AuditEvent
from reviews.models import ProbeAnalysis, ReviewDecision, ReviewPolicy
from tests.browser.conftest import images_loaded, log_in
from tests.conftest import OBAMA, OBAMA_2, analyse, decide, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/work/shots/bench")
QUEUE = "/admin/reviews/reviewitem/"
OBAMA_3 = "face_recognition/obama__tests_test_images_obama3.jpg"
OBAMA_KNN = "face_recognition/obama__examples_knn_examples_test_obama1.jpg"


def _shot(page, name: str, full_page: bool = False) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _in_viewport(page, selector: str, width: int, height: int) -> bool:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


def _item_url(live_server, candidate) -> str:
    return f"{live_server.url}{QUEUE}{candidate.pk}/change/"


def _gallery_done() -> None:
    wait_for(lambda: all(p.is_finished for p in Photo.objects.filter(kind="reference")), message="gallery")


@pytest.fixture
def obama_case(enrol, open_case):
    """One subject with three dated reference photos (born 1961-08-04) and a probe photo taken 2013-06-01."""

    def make(**case_fields):
        born = datetime.date(1961, 8, 4)
        for name, taken in ((OBAMA, "2008-11-04"), (OBAMA_3, "2011-05-02"), (OBAMA_KNN, None)):
            enrol(
                "OBAMA-REF",
                name,
                display_name="Barack Obama",
                sex="M",
                age_band="45-59",
                ethnicity="Black",
                born_on=born,
                captured_on=datetime.date.fromisoformat(taken) if taken else None,
            )
        _gallery_done()
        fields = {"captured_on": datetime.date(2013, 6, 1), **case_fields}
        case = open_case(OBAMA_2, **fields)
        wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
        return case.candidates.order_by("rank").first()

    return make


def _open(page, live_server, candidate, selector: str = "#review-status") -> None:
    page.goto(_item_url(live_server, candidate))
    page.wait_for_selector(selector)
    page.wait_for_function(
        "[...document.querySelectorAll('.face-img')].every(img => img.complete && img.naturalWidth > 0)"
    )


def _record_analysis(page, value: str = "value", limits: tuple[str, ...] = (), note: str = "") -> None:
    page.check(f"input[name=analysis_value][value={value}]")
    for limit in limits:
        page.check(f"input[name=analysis_limits][value={limit}]")
    if note:
        page.fill("textarea[name=analysis_note]", note)
    page.click("#review-save")
    page.wait_for_load_state()


def _mark_all_similar(page) -> None:
    page.click("#worksheet-grid tr.feature-row >> nth=0")
    for _ in range(10):
        page.keyboard.press("1")


# 1. Blind by default


def test_a_new_organisation_reviews_blind_until_the_comparison_and_the_policy_says_what_showing_costs(
    page, live_server, reviewers, dana, org, obama_case, password
):
    # Given a new organisation whose admin never saved a review policy, and a candidate waiting
    assert not ReviewPolicy.objects.filter(organisation=org).exists()
    candidate = obama_case()
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When bob opens the queue, rank and distance read "hidden", and the severity column is not offered
    page.goto(f"{live_server.url}{QUEUE}")
    row = page.locator("#result_list tbody tr").first
    assert row.locator("td.field-rank_display").inner_text() == "hidden"
    assert row.locator("td.field-distance_display").inner_text() == "hidden"
    assert page.locator("th.column-severity").count() == 0
    _shot(page, "blind-queue-before-1440x900")

    # and through the analysis and the comparison, no distance or rank is anywhere on the page
    _open(page, live_server, candidate, "#analysis")
    assert f"{candidate.distance:.3f}" not in page.inner_text("body") and "rank" not in page.inner_text("body").lower()
    _record_analysis(page)
    page.wait_for_selector("#worksheet-grid")
    text = page.inner_text("body")
    assert f"{candidate.distance:.3f}" not in text and "rank" not in text.lower()
    assert page.inner_text("#review-save") == "Record comparison"
    _mark_all_similar(page)
    page.click("#review-save")
    page.wait_for_selector("input[name=conclusion]")

    # Then once his worksheet is recorded the page and the queue show them
    assert f"{candidate.distance:.3f}" in page.inner_text("body")
    page.goto(f"{live_server.url}{QUEUE}")
    row = page.locator("#result_list tbody tr").first
    assert row.locator("td.field-distance_display").inner_text() == f"{candidate.distance:.3f}"
    assert row.locator("td.field-rank_display").inner_text() == str(candidate.rank)
    _shot(page, "blind-queue-after-comparison-1440x900")

    # And the org admin's policy page starts with scores hidden and says what showing them costs
    page.context.clear_cookies()
    log_in(page, live_server, "dana", password)
    page.goto(f"{live_server.url}/admin/reviews/reviewpolicy/add/")
    assert page.is_checked("input[name=hide_scores_until_compared]")
    help_text = page.inner_text(".field-hide_scores_until_compared")
    assert "anchor" in help_text and "confirmation bias" in help_text
    _shot(page, "blind-policy-page", full_page=True)

    # and when she turns it off, the next reviewer sees the scores at once (after the probe's analysis)
    page.uncheck("input[name=hide_scores_until_compared]")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    assert ReviewPolicy.objects.get(organisation=org).hide_scores_until_compared is False
    assert AuditEvent.objects.filter(action="review_policy.update").exists()
    page.context.clear_cookies()
    log_in(page, live_server, "rita", password)
    page.goto(f"{live_server.url}{QUEUE}")
    assert page.locator("#result_list td.field-distance_display").first.inner_text() == f"{candidate.distance:.3f}"


# 2. Analysis before comparison


def test_the_probe_is_analysed_before_any_candidate_and_no_value_closes_its_candidates(
    page, live_server, reviewers, alice, enrol, obama_case, password
):
    # Given two subjects who both come up for one probe photo (two photos of one man, enrolled apart)
    enrol("OBAMA-OTHER", OBAMA_3, display_name="Second record", sex="M")
    candidate = obama_case()
    case = candidate.case
    candidates = list(case.candidates.order_by("rank"))
    assert len(candidates) == 2
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When bob opens the first, he sees the probe alone with the portal's measures, and no gallery face
    _open(page, live_server, candidate, "#analysis")
    assert page.locator("#face-gallery").count() == 0 and page.locator("#reference-strip").count() == 0
    measures = page.locator("#probe-quality tbody tr")
    assert measures.count() == 4
    names = [measures.nth(i).get_attribute("data-measure") for i in range(4)]
    assert names == ["eye_distance", "sharpness", "yaw", "roll"]
    for i in range(4):
        assert measures.nth(i).locator(".verdict").inner_text() in ("Good", "Limited", "Poor")
    assert " px" in page.inner_text("[data-measure=eye_distance]")
    assert "Obama" not in page.inner_text("body")  # nothing of the subject before the analysis
    _shot(page, "analysis-step-1440x900")

    # and the queue hides the gallery faces until then
    page.goto(f"{live_server.url}{QUEUE}")
    assert page.locator("#result_list .thumbnail-hidden").count() == 2

    # When he calls it "of no value" without a reason, the page asks for one and nothing is stored
    _open(page, live_server, candidate, "#analysis")
    _record_analysis(page, "none")
    assert "Say why the probe is of no value" in page.inner_text("#analysis")
    assert not ProbeAnalysis.objects.exists()

    # and with reasons, both candidates of the photo are closed as not comparable
    _record_analysis(
        page, "none", limits=("blur", "occlusion"), note="Motion blur across the eyes; a hand covers the mouth."
    )
    page.wait_for_selector(".messagelist")
    assert "2 candidates of it were closed as not comparable" in page.inner_text(".messagelist")
    assert page.url.endswith(QUEUE)
    for c in candidates:
        c.refresh_from_db()
        assert c.outcome == Outcome.UNSUITABLE
        assert "judged it of no value (blur, occlusion)" in c.outcome_reason
    assert page.locator("#result_list tbody tr").count() == 0  # nothing left to compare
    _shot(page, "analysis-no-value-queue-1440x900")
    events = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"probe.analyse", "candidate.unsuitable"} <= events

    # Then alice's case page says the photo was judged unsuitable, with the reason
    page.context.clear_cookies()
    log_in(page, live_server, "alice", password)
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    unsuitable = page.inner_text("[data-role=unsuitable]")
    assert "Photo judged unsuitable for comparison" in unsuitable and "blur, occlusion" in unsuitable
    assert "2 not comparable" in page.inner_text(".counts").replace("\n", " ")
    _shot(page, "caseworker-photo-unsuitable", full_page=True)


# 3. Image tools


def test_image_tools_change_only_the_view_for_both_faces_or_one_and_the_worksheet_records_them(
    page, live_server, reviewers, dana, org, obama_case, password
):
    from reviews.services import review_policy_update

    # Given bob past the analysis, on a candidate with scores shown (the tools are what this is about)
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=False)
    candidate = obama_case()
    bob, _ = reviewers
    analyse(candidate, bob)
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)
    _open(page, live_server, candidate)
    probe_src = page.get_attribute("#face-probe", "src")

    def filter_of(selector: str) -> str:
        return page.eval_on_selector(selector, "el => el.style.filter")

    def set_range(selector: str, value: int) -> None:
        page.eval_on_selector(selector, f"el => {{ el.value = {value}; el.dispatchEvent(new Event('input')); }}")

    # When he turns up the brightness for both faces, both are drawn brighter
    set_range("#tool-brightness", 160)
    assert "brightness(1.6)" in filter_of("#face-probe") and "brightness(1.6)" in filter_of("#face-gallery")
    # and gamma and greyscale on the probe alone leave the gallery face as it was
    page.check("input[name=tool-target][value=probe]")
    set_range("#tool-gamma", 180)
    page.click("#tool-greyscale")
    assert "grayscale(1)" in filter_of("#face-probe") and 'url("#gamma-probe")' in filter_of("#face-probe")
    assert "grayscale" not in filter_of("#face-gallery") and "gamma" not in filter_of("#face-gallery")
    exponent = page.eval_on_selector("#gamma-probe feFuncR", "el => el.getAttribute('exponent')")
    assert float(exponent) == pytest.approx(1 / 1.8, abs=0.001)
    # and contrast and mirror on the gallery face alone
    page.check("input[name=tool-target][value=gallery]")
    set_range("#tool-contrast", 140)
    page.click("#tool-mirror")
    assert "contrast(1.4)" in filter_of("#face-gallery") and "contrast(1)" in filter_of("#face-probe")
    gallery_matrix = page.eval_on_selector("#face-gallery", "el => getComputedStyle(el).transform")
    assert gallery_matrix.startswith("matrix(-1, 0, 0, 1,")  # mirrored
    assert page.eval_on_selector("#face-probe", "el => getComputedStyle(el).transform") in (
        "none",
        "matrix(1, 0, 0, 1, 0, 0)",
    )
    _shot(page, "tools-in-use-1440x900")

    # When he asks for 1:1 pixels on the probe, its crop shows at its true size, centred, not stretched
    page.check("input[name=tool-target][value=probe]")
    page.click("#tool-pixels")
    wait_for(
        lambda: page.eval_on_selector(
            "[data-side=probe] .face-pixels", "i => !i.hidden && i.complete && i.naturalWidth > 0"
        ),
        timeout=30,
        message="the probe's crop at 1:1",
    )
    natural = page.eval_on_selector("[data-side=probe] .face-pixels", "i => [i.naturalWidth, i.naturalHeight]")
    box = page.locator("[data-side=probe] .face-pixels").bounding_box()
    ratio = page.evaluate("window.devicePixelRatio")
    assert box["width"] == pytest.approx(natural[0] / ratio, abs=1)
    assert box["height"] == pytest.approx(natural[1] / ratio, abs=1)
    pane = page.locator("[data-side=probe]").bounding_box()
    assert box["width"] < pane["width"]  # a small crop stays small: not scaled up to the pane
    assert page.eval_on_selector("#face-probe", "el => getComputedStyle(el).visibility") == "hidden"
    _shot(page, "tools-pixels-1to1-1440x900")

    # Then the stored images are untouched (the same URL, the same bytes), and the decision records the tools
    assert page.get_attribute("#face-probe", "src") == probe_src
    recorded = json.loads(page.eval_on_selector("input[name=tools]", "el => el.value"))
    assert recorded == {
        "probe": ["brightness", "gamma", "greyscale", "pixels"],
        "gallery": ["brightness", "contrast", "mirror"],
    }
    _mark_all_similar(page)
    page.check("input[name=conclusion][value=identification]")
    page.fill("textarea[name=reason]", "Ears, nose and jaw agree; checked mirrored and at 1:1.")
    page.check("input[name=bias_acknowledged]")
    page.click("#review-save")
    page.wait_for_selector(".messagelist")
    decision = ReviewDecision.objects.get(reviewer=bob)
    assert decision.tools == recorded


# 4. Every reference photo, with dates


def test_every_reference_photo_of_the_subject_is_shown_with_its_date_and_can_be_compared(
    page, live_server, reviewers, dana, org, obama_case, password
):
    from reviews.services import review_policy_update

    # Given a subject recorded as a child (born 2001-06-01), three photos of whom two are dated, and a dated probe
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=False)
    candidate = obama_case()
    subject = candidate.subject
    subject.born_on = datetime.date(2001, 6, 1)
    subject.save(update_fields=["born_on"])
    bob, _ = reviewers
    analyse(candidate, bob)
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server, "bob", password)

    # When bob opens the candidate
    _open(page, live_server, candidate)
    images_loaded(page, ".strip-photo img")

    # Then every reference photo is in the strip, the search's own first, each with its date and the age then
    buttons = page.locator(".strip-photo")
    assert buttons.count() == 3
    labels = [buttons.nth(i).inner_text() for i in range(3)]
    assert "found by the search" in labels[0]
    joined = " | ".join(labels)
    assert "taken 2008-11-04, age 7" in joined and "taken 2011-05-02, age 9" in joined
    assert "date taken unknown" in joined
    assert "probe photo taken 2013-06-01" in page.inner_text(".strip-head")
    # and, for a child, how many years lie between the photos
    assert "2 to 4 years between the probe photo and the dated reference photos" in page.inner_text("#child-gap")
    _shot(page, "reference-strip-1440x900")

    # When he chooses another photo, it takes the gallery pane (and the overlay)
    other = buttons.nth(1)
    face_id = other.get_attribute("data-face-id")
    other.click()
    assert page.get_attribute("#face-gallery", "src") == f"/media/faces/{face_id}/aligned/"
    assert page.get_attribute("#face-overlay", "src") == f"/media/faces/{face_id}/aligned/"
    assert other.get_attribute("aria-pressed") == "true"
    wait_for(lambda: page.eval_on_selector("#face-gallery", "img => img.complete && img.naturalWidth > 0"), 30)
    assert page.inner_text("#gallery-taken") == other.get_attribute("data-label")
    _shot(page, "reference-strip-other-photo-1440x900")


# 5. Marks on the faces, blind until one's own decision


def _mark(page, side: str, kind: str, at: tuple[float, float], to: tuple[float, float] | None = None) -> None:
    page.click(f"#mark-{kind}")
    box = page.locator(f"[data-side={side}]").bounding_box()
    x, y = box["x"] + box["width"] * at[0], box["y"] + box["height"] * at[1]
    page.mouse.move(x, y)
    page.mouse.down()
    if to is not None:
        page.mouse.move(box["x"] + box["width"] * to[0], box["y"] + box["height"] * to[1], steps=4)
    page.mouse.up()
    page.click(f"#mark-{kind}")  # mark mode off again


def test_marks_are_stored_with_the_worksheet_and_shown_to_the_second_reviewer_only_after_their_decision(
    page, live_server, reviewers, dana, org, obama_case, password
):
    from reviews.services import review_policy_update

    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=False)
    candidate = obama_case()
    bob, rita = reviewers
    analyse(candidate, rita)
    analyse(candidate, bob)
    page.set_viewport_size({"width": 1440, "height": 900})

    # Given rita marks a point on the probe's left eyebrow and a region round the gallery face's nose
    log_in(page, live_server, "rita", password)
    _open(page, live_server, candidate)
    _mark(page, "probe", "point", (0.38, 0.33))
    _mark(page, "gallery", "region", (0.42, 0.45), (0.58, 0.62))
    items = page.locator("#mark-list li")
    assert items.count() == 2
    items.nth(0).locator("select").select_option("eyebrows")
    items.nth(0).locator("input").fill("Scar splits the left eyebrow")
    items.nth(1).locator("select").select_option("nose")
    items.nth(1).locator("input").fill("Broad nose tip, same nostril shape")
    assert page.locator("[data-side=probe] .face-marks .mark.own").count() == 1
    assert page.locator("[data-side=gallery] .face-marks .mark.own").count() == 1
    _shot(page, "annotated-comparison-rita-1440x900")
    _mark_all_similar(page)
    page.check("input[name=conclusion][value=probable]")
    page.fill("textarea[name=reason]", "Eyebrow scar and nose agree.")
    page.check("input[name=bias_acknowledged]")
    page.click("#review-save")
    page.wait_for_selector(".messagelist")
    marks = ReviewDecision.objects.get(reviewer=rita).annotations
    assert [(m["side"], m["kind"], m["feature"]) for m in marks] == [
        ("probe", "point", "eyebrows"),
        ("gallery", "region", "nose"),
    ]
    assert 0.2 < marks[0]["x"] < 0.6 and 0.1 < marks[0]["y"] < 0.5  # in the aligned image, round the eyebrow
    assert 0.05 < marks[1]["w"] < 0.5 and 0.05 < marks[1]["h"] < 0.5

    # When bob opens it before deciding, none of rita's marks is drawn or even in the page
    page.context.clear_cookies()
    log_in(page, live_server, "bob", password)
    _open(page, live_server, candidate)
    assert page.locator(".face-marks .mark").count() == 0
    assert "Scar splits" not in page.content() and "nostril" not in page.content()
    _shot(page, "annotated-comparison-bob-before-1440x900")

    # Then once he has decided, her marks are drawn over the faces with her name and notes
    decide(candidate, bob, reason="Jaw and ears agree.")
    candidate.refresh_from_db()
    _open(page, live_server, candidate)
    assert page.locator(".face-marks .mark.other").count() == 2
    assert "rita 1: Eyebrows — Scar splits the left eyebrow" in page.inner_text("#mark-others")
    _shot(page, "annotated-comparison-bob-after-1440x900")


# 6. The warning beside the decision, at 1280x800


def test_the_compact_bias_warning_sits_beside_the_conclusion_and_save_at_1280x800(
    page, live_server, reviewers, dana, org, audit_run, obama_case, password
):
    from reviews.bias import panel_for
    from reviews.services import review_policy_update

    # Given a candidate with a valid audit and the scores shown
    review_policy_update(organisation=org, acting_user=dana, hide_scores_until_compared=False)
    candidate = obama_case()
    bob, _ = reviewers
    analyse(candidate, bob)
    log_in(page, live_server, "bob", password)

    # When bob opens it at 1280x800
    page.set_viewport_size({"width": 1280, "height": 800})
    _open(page, live_server, candidate)
    _shot(page, "compact-warning-1280x800")

    # Then the panel's headline, compact, is on screen beside the conclusion and Save, without scrolling
    assert page.evaluate("window.scrollY") == 0
    for selector in ["#bias-compact", "#review-save", "input[name=bias_acknowledged]", ".conclusions", "#face-probe"]:
        assert _in_viewport(page, selector, 1280, 800), selector
    panel = panel_for(candidate, hide_scores=False)
    compact = page.inner_text("#bias-compact")
    assert panel.headline and panel.headline in compact
    expected = {"elevated": "Elevated risk of a false match", "standard": "Standard caution"}[panel.severity]
    assert expected in compact
    assert f"severity-{panel.severity}" in page.get_attribute("#bias-compact", "class")
    # and the acknowledgement speaks of what is on screen
    ack = page.inner_text("label.ack")
    assert "shown here" in ack and "below" not in ack
