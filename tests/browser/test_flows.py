"""Caseworker and reviewer flows in headless Chromium, against a live server and a real worker."""

from __future__ import annotations

import pytest

from matching.models import Candidate, Case, EnrolmentBatch, Outcome, Photo
from reviews.bias import bias_panel
from tests.browser.conftest import log_in
from tests.conftest import ALL_SIMILAR, BIDEN, OBAMA, OBAMA_2, decide, wait_for
from tests.factories import CaseFactory, GalleryFactory

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def gallery_ready(celery_worker_process, enrol):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", sex="M", age_band="45-59", ethnicity="Black")
    enrol("BIDEN-REF", BIDEN, display_name="Joe Biden", sex="M", age_band="60+", ethnicity="White")
    wait_for(lambda: all(p.is_finished for p in Photo.objects.filter(kind="reference")), message="gallery")


def test_caseworker_creates_a_case_and_watches_it_process(
    page, screenshot, live_server, gallery_ready, alice, password, faces
):
    log_in(page, live_server, "alice", password)
    page.click("text=New case")
    page.fill("input[name=reference]", "B-1")
    page.fill("input[name=title]", "Missing boy, last seen at the station")
    page.fill("input[name=purpose]", "Locate a missing child reported on 2026-11-20")
    page.fill("textarea[name=description]", "Photo supplied by the family.")
    page.set_input_files("input[name=photos]", str(faces.path(OBAMA_2)))
    page.click("button[type=submit]")

    # The page returns at once and the status updates itself, without a reload.
    page.wait_for_selector("h1:has-text('B-1')")
    page.wait_for_selector(".status-done", timeout=90_000)
    assert page.inner_text("[data-count=pending]") == "1"
    assert "OBAMA-REF" not in page.content()
    shot = screenshot("caseworker-case-page")
    assert shot.stat().st_size > 10_000

    # Among many older cases, the list pages them and finds this one by its title.
    for number in range(60):
        CaseFactory(organisation=alice.membership.organisation, created_by=alice, reference=f"OLD-{number:02}")
    page.click("header.top >> text=Cases")
    assert "Page 1 of 2 · 61 cases" in page.inner_text("nav.pager")
    screenshot("caseworker-case-list")
    page.fill("input[name=q]", "station")
    page.click("form.search button")
    row = page.locator("table.cases tbody tr")
    assert row.count() == 1 and "B-1" in row.inner_text() and "1 done" in row.inner_text()
    screenshot("caseworker-case-list-search")


def test_reviewer_sees_the_bias_panel_and_confirms_in_the_admin(
    page, screenshot, live_server, gallery_ready, audit_run, open_case, reviewers, password
):
    # Given a candidate that rita has already confirmed, so bob's is the second, deciding confirmation
    case = open_case(OBAMA_2, reference="B-2")
    # The worker and this process race for the photo; whichever claims it first processes it.
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    candidate = Candidate.objects.get()
    decide(candidate, reviewers[1], reason="Ears and hairline agree.")

    log_in(page, live_server, "bob", password)
    page.goto(f"{live_server.url}/admin/reviews/reviewitem/")
    page.click(f"a[href='/admin/reviews/reviewitem/{candidate.pk}/change/']")
    page.wait_for_selector(".face-view img")
    # The probe's analysis first (nothing of the candidate, its bias panel included, is shown before it) ...
    assert page.locator(".bias-panel").count() == 0
    page.check("input[name=analysis_value][value=value]")
    page.click("#review-save")
    page.wait_for_selector("#worksheet-grid")
    # The panel's label and sentence come from the audit's figure for the probe's groups (Obama is recorded as a
    # Black man), and the compact warning beside Save says the same
    shown = bias_panel(candidate).hidden()
    assert page.is_visible(f".bias-panel.severity-{shown.severity}")
    assert shown.headline in page.inner_text(".bias-panel") and "Black" in shown.headline
    screenshot("reviewer-review-item")
    assert "Ears and hairline agree." not in page.content()  # blind review
    # ... then the comparison, blind to the score, then the decision
    for name, mark in ALL_SIMILAR.items():
        page.check(f"input[name=feature_{name}][value={mark}]")
    page.click("#review-save")
    page.wait_for_selector("input[name=conclusion]")
    # (now that the comparison is recorded, at the candidate's distance)
    revealed = bias_panel(candidate)
    assert page.is_visible(f"#bias-compact.severity-{revealed.severity}")
    assert revealed.headline in page.inner_text("#bias-compact") and "at least this close" in revealed.headline
    page.check("input[name=conclusion][value=identification]")
    page.fill("textarea[name=reason]", "Hairline, eyebrows, nose and ears agree; no dissimilar features.")
    page.check("input[name=bias_acknowledged]")
    screenshot("reviewer-worksheet-filled")
    page.click("#review-save")

    page.wait_for_selector(".messagelist")
    assert f"Your decision on candidate {candidate.pk} is recorded; it is now confirmed" in page.inner_text(
        ".messagelist"
    )
    screenshot("reviewer-after-decision")
    candidate.refresh_from_db()
    assert (candidate.outcome, candidate.outcome_by.username) == (Outcome.CONFIRMED, "bob")
    assert candidate.decisions.get(reviewer__username="bob").bias_snapshot["run_id"] == audit_run.pk


def test_org_admin_reads_a_finished_bulk_enrolment_report(page, screenshot, live_server, dana, password):
    # Given a batch the worker has finished: two rows enrolled, one refused
    gallery = GalleryFactory(organisation=dana.membership.organisation, name="Reference photos 2026")
    report = [
        {"line": 2, "code": "S-1", "file": "a.jpg", "status": "enrolled", "detail": "new subject"},
        {"line": 3, "code": "S-2", "file": "b.jpg", "status": "refused", "detail": "no face was found"},
        {"line": 4, "code": "S-1", "file": "c.jpg", "status": "enrolled", "detail": "photo added to existing subject"},
    ]
    batch = EnrolmentBatch.objects.create(
        gallery=gallery, archive="x.zip", manifest="x.csv", status="done", rows_total=3, rows_done=3, report=report
    )

    # When the org admin opens it
    log_in(page, live_server, "dana", password)
    page.goto(f"{live_server.url}/galleries/batches/{batch.pk}/")

    # Then the page says what happened to each row, and stops polling
    assert "3 of 3 rows processed: 2 enrolled, 1 refused." in page.inner_text("#batch")
    assert page.get_attribute("#batch", "data-finished") == "1"
    assert "no face was found" in page.inner_text("tr.row-refused")
    screenshot("org-admin-bulk-enrolment-report")


def test_an_upload_over_the_request_limit_gets_a_readable_page(page, live_server, alice, password, faces, settings):
    # Given a request limit smaller than one photo, behind a real WSGI server
    settings.REQUEST_MAX_BYTES = 16 * 1024
    log_in(page, live_server, "alice", password)

    # When a caseworker submits a case with that photo
    page.goto(f"{live_server.url}/cases/new/")
    page.fill("input[name=reference]", "BIG-1")
    page.fill("input[name=title]", "Missing child")
    page.fill("input[name=purpose]", "Locate a missing child")
    page.set_input_files("input[name=photos]", str(faces.path(OBAMA_2)))
    page.click("button[type=submit]")

    # Then the browser shows why, not a server error, and no case was made
    page.wait_for_selector("h1:has-text('Upload too large')")
    assert "the limit is 16 KB per request" in page.inner_text("body")
    assert not Case.objects.filter(reference="BIG-1").exists()


def test_caseworker_closes_a_case_and_sees_when_it_will_be_purged(
    page, screenshot, live_server, open_case, alice, password
):
    organisation = alice.membership.organisation
    organisation.retention_days = 30
    organisation.save(update_fields=["retention_days"])
    case = open_case(OBAMA_2, reference="B-9")
    log_in(page, live_server, "alice", password)
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    assert "30 days after the case is closed" in page.inner_text("[data-role=purge-date]")
    screenshot("caseworker-case-close-control")

    page.fill("textarea[name=reason]", "The child was found safe and is back with the family.")
    page.click("form.close-case button[type=submit]")

    page.wait_for_selector("[data-role=purge-date] strong")
    case.refresh_from_db()
    assert case.closed_at is not None and case.close_reason.startswith("The child was found safe")
    assert "will be purged on" in page.inner_text("[data-role=purge-date]")
    assert page.locator("form.close-case").count() == 0
    screenshot("caseworker-case-closed-purge-date")
