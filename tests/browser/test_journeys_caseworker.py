"""The caseworker's journeys in headless Chromium, as alice sees them: her own case pages, and nothing of a
candidate until trained reviewers have confirmed it.

Closing a case and reading its purge date is in test_flows.py; the first confirmed match of a fresh demo is in
test_first_hour.py.
"""

from __future__ import annotations

import pytest

from matching.models import Candidate, Photo
from tests.browser.conftest import images_loaded, log_in
from tests.conftest import BIDEN, OBAMA, OBAMA_2, decide, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NO_FACE = "compreface/017_0.jpg"  # an empty room: the detector finds no face in it


@pytest.fixture
def gallery(enrol):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", sex="M", age_band="45-59", ethnicity="Black")
    enrol("BIDEN-REF", BIDEN, display_name="Joe Biden", sex="M", age_band="60+", ethnicity="White")
    wait_for(lambda: all(p.is_finished for p in Photo.objects.filter(kind="reference")), message="gallery")


def _pending_candidate(open_case, reference: str) -> Candidate:
    """A case whose probe photo has been searched, with one candidate (OBAMA-REF) awaiting review."""
    case = open_case(OBAMA_2, reference=reference)
    # A worker left running by an earlier test may claim the photo first; either way it finishes.
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    return case.candidates.get()


def _new_case(page, live_server, faces, reference: str, *photos: str) -> None:
    page.goto(f"{live_server.url}/cases/new/")
    page.fill("input[name=reference]", reference)
    page.fill("input[name=title]", "Missing girl, last seen at the bus station")
    page.fill("input[name=purpose]", "Locate a missing child reported on 2026-11-28")
    page.set_input_files("input[name=photos]", [str(faces.path(name)) for name in photos])
    page.click("button[type=submit]")
    page.wait_for_selector(f"h1:has-text('{reference}')")


@pytest.mark.worker
def test_caseworker_opens_a_case_with_a_probe_photo_and_watches_its_progress(
    page, journey_shot, live_server, celery_worker_process, gallery, alice, password, faces
):
    # Given alice, signed in, and a gallery the worker searches
    log_in(page, live_server, "alice", password)

    # When she opens a case with one probe photo
    _new_case(page, live_server, faces, "J-C1", OBAMA_2)

    # Then the page shows her photo at once, and its status moves on by itself, without a reload, until done
    images_loaded(page, "figure.photo img")
    seen = []

    def done() -> bool:
        text = page.inner_text("[data-role=status]")
        if not seen or seen[-1] != text:
            seen.append(text)
        return text == "Done"

    wait_for(done, timeout=90, interval=0.1, message="the photo to be done")
    assert set(seen) <= {"Queued", "Detecting faces", "Matching", "Done"}, seen
    assert page.inner_text("[data-role=faces]") == "1 face"
    assert "status-done" in page.get_attribute("[data-role=status]", "class")
    wait_for(lambda: page.inner_text("[data-count=pending]") == "1", timeout=30, message="one pending candidate")
    assert page.inner_text("[data-count=confirmed]") == "0"
    assert page.locator("table.matches").count() == 0 and "No confirmed matches." in page.inner_text("main")
    journey_shot()


@pytest.mark.worker
def test_a_photo_with_no_face_says_no_search_ran(
    page, journey_shot, live_server, celery_worker_process, gallery, alice, password, faces
):
    # Given alice, signed in
    log_in(page, live_server, "alice", password)

    # When she opens a case with a photo of a face and a photo in which there is none
    _new_case(page, live_server, faces, "J-C2", OBAMA_2, NO_FACE)

    # Then, once the worker has looked, the empty photo is flagged: no face found, no search ran; the other is done
    empty = page.locator("figure.photo").nth(1)
    wait_for(lambda: empty.locator("[data-role=status]").inner_text() == "No face found", timeout=90)
    assert "status-noface" in empty.locator("[data-role=status]").get_attribute("class")
    assert empty.locator("[data-role=reason]").inner_text() == "No search ran; try a clearer photo."
    assert empty.locator("[data-role=faces]").inner_text() == ""
    first = page.locator("figure.photo").nth(0)
    wait_for(lambda: first.locator("[data-role=status]").inner_text() == "Done", timeout=90)
    assert images_loaded(page, "figure.photo img") == 2
    journey_shot("live")

    # and a reload renders the same from the server, not only from the page's polling (its script held back)
    page.route("**/js/case.js", lambda route: route.abort())
    page.reload()
    empty = page.locator("figure.photo").nth(1)
    assert empty.locator("[data-role=status]").inner_text() == "No face found"
    assert empty.locator("[data-role=reason]").inner_text() == "No search ran; try a clearer photo."
    journey_shot("reloaded")


def test_caseworker_sees_nothing_of_an_unconfirmed_candidate(
    page, journey_shot, live_server, gallery, open_case, reviewers, password
):
    # Given a candidate that one of the two reviewers the policy needs has confirmed
    candidate = _pending_candidate(open_case, "J-C3")
    decide(candidate, reviewers[0], reason="Ears and hairline agree.")

    # When alice opens her case
    log_in(page, live_server, "alice", password)
    page.goto(f"{live_server.url}/cases/{candidate.case_id}/")

    # Then she sees that one candidate awaits review, but no subject, no gallery photo and no reviewer's reason
    assert page.inner_text("[data-count=pending]") == "1"
    assert page.inner_text("[data-count=confirmed]") == "0"
    assert "No confirmed matches." in page.inner_text("main")
    body = page.inner_text("body")
    for secret in ["OBAMA-REF", "Barack Obama", "Ears and hairline agree.", "bob"]:
        assert secret not in body, secret
    assert page.locator("img[alt='reference face']").count() == 0
    images_loaded(page, "figure.photo img")
    journey_shot("case")

    # and the candidate's gallery face, asked for by its address, is a page-not-found, not the face
    response = page.goto(f"{live_server.url}/media/faces/{candidate.reference_face_id}/")
    assert response.status == 404
    assert "Page not found" in page.inner_text("h1")
    journey_shot("gallery-face")

    # and the review queue is not open to her
    response = page.goto(f"{live_server.url}/admin/reviews/reviewitem/")
    assert response.status in (403, 404)
    assert "OBAMA-REF" not in page.inner_text("body")


def test_caseworker_sees_a_confirmed_match_with_every_confirming_reviewer(
    page, journey_shot, live_server, gallery, open_case, reviewers, password
):
    # Given a candidate that both reviewers confirmed
    candidate = _pending_candidate(open_case, "J-C4")
    bob, rita = reviewers
    decide(candidate, bob, reason="Ears and hairline agree.")
    decide(candidate, rita, reason="Nose, mouth and jaw agree; no dissimilar feature.")

    # When alice opens her case
    log_in(page, live_server, "alice", password)
    page.goto(f"{live_server.url}/cases/{candidate.case_id}/")

    # Then the match shows the subject, both faces, both confirming reviewers, and the lead-only warning
    row = page.locator("table.matches tbody tr")
    assert row.count() == 1
    assert "OBAMA-REF" in row.inner_text() and "Barack Obama" in row.inner_text()
    assert page.inner_text("table.matches td.reviewers").split() == ["bob", "rita"]
    assert images_loaded(page, "table.matches img.thumb") == 2
    assert page.inner_text("[data-count=confirmed]") == "1" and page.inner_text("[data-count=pending]") == "0"
    assert "A confirmed match is an investigative lead." in page.inner_text("main")
    journey_shot()


def test_in_the_demo_closing_a_case_says_when_its_biometrics_are_purged(page, journey_shot, live_server, faces):
    import io

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from matching import services
    from reviews.management.commands.seed_demo import DEMO_PASSWORD, DEMO_PROBE

    # Given a fresh demo and a case its caseworker opened
    call_command("seed_demo", "--no-evaluation-set", stdout=io.StringIO())
    alice = get_user_model().objects.get(username="alice")
    case = services.case_create(
        organisation=alice.membership.organisation,
        acting_user=alice,
        reference="DEMO-C1",
        title="Missing person, first demo case",
        purpose="Locate a missing person (demonstration)",
        photos=[services.uploaded_image_read(faces.upload(DEMO_PROBE))],
    )
    log_in(page, live_server, "alice", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    assert "purged 30 days later" in page.inner_text("form.close-case")

    # When alice closes it
    page.fill("textarea[name=reason]", "Found safe; the family confirmed it.")
    page.click("form.close-case button[type=submit]")

    # Then the page says on which day its photos, crops and encodings go
    page.wait_for_selector("[data-role=purge-date] strong")
    case.refresh_from_db()
    due = f"{case.purge_due_at:%Y-%m-%d}"
    assert due in page.inner_text("[data-role=purge-date]") and "will be purged on" in page.inner_text("main")
    assert due in page.inner_text("p.message.success")
    journey_shot("closed")
