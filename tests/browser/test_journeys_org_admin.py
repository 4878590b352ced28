"""The org admin's journeys in headless Chromium: inviting (and withdrawing), recording reviewers' training,
confirming the threshold, changing the retention period, enrolling a gallery, requesting a disclosure report,
reading the activity log and reopening a closed case.

Reading a finished bulk-enrolment report is in test_flows.py; here the batch is uploaded through the page and
processed by the worker.
"""

from __future__ import annotations

import csv
import datetime
import io
import zipfile

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from matching.models import Case, Photo
from matching.services import case_close
from portal.models import Invitation
from reviews.models import TrainingAttestation
from tests.browser.conftest import JOURNEY_SHOTS, images_loaded, log_in
from tests.conftest import BIDEN, OBAMA, OBAMA_2, decide, wait_for
from tests.factories import CaseFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def gallery(enrol):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", sex="M", age_band="45-59", ethnicity="Black")
    wait_for(lambda: all(p.is_finished for p in Photo.objects.filter(kind="reference")), message="gallery")


def _messages(page) -> str:
    page.wait_for_selector(".messagelist, p.message")
    return page.inner_text("body")


def test_org_admin_invites_a_reviewer_and_withdraws_the_invitation(
    page, browser, journey_shot, live_server, dana, password
):
    # Given dana, the org admin, signed in
    log_in(page, live_server, "dana", password)

    # When she invites a reviewer by e-mail
    page.goto(f"{live_server.url}/admin/portal/invitation/add/")
    page.fill("input[name=email]", "nadia@acme.example.org")
    page.select_option("select[name=role]", "reviewer")
    page.click("input[name=_save]")

    # Then she is told the mail is on its way, with the single-use link, and the invitation is listed
    message = page.inner_text(".messagelist")
    assert "Invitation created; the mail to nadia@acme.example.org is on its way." in message
    assert page.locator(".messagelist li").count() == 1, message
    link = message.split("The link works once: ")[1].split()[0]
    assert "/accounts/invitations/" in link
    row = page.locator("#result_list tbody tr", has_text="nadia@acme.example.org")
    expect(row).to_have_count(1)
    assert "Reviewer" in row.inner_text()
    journey_shot("invited")

    # and the link opens the invitation to whoever holds it
    stranger = browser.new_context()
    invitee = stranger.new_page()
    # (the mail's link carries the portal's configured address; here the live server answers instead)
    invitee.goto(live_server.url + "/accounts/invitations/" + link.split("/accounts/invitations/")[1])
    assert invitee.locator("input[name=username]").count() == 1

    # When she withdraws it
    page.check(f"input[name=_selected_action][value='{Invitation.objects.get().pk}']")
    page.select_option("select[name=action]", "revoke")
    page.click("button[name=index]")
    assert "The invitation of nadia@acme.example.org is withdrawn." in page.inner_text(".messagelist")
    journey_shot("withdrawn")

    # Then the link no longer works
    invitee.reload()
    assert "This invitation link is not valid, has been used, or has expired." in invitee.inner_text("main")
    stranger.close()


def test_org_admin_records_a_reviewers_training_but_not_her_own(
    page, journey_shot, live_server, dana, bob, rita, alice, password
):
    # Given dana, the org admin, and two reviewers without a training record
    log_in(page, live_server, "dana", password)

    # When she opens the form, it offers the reviewers, and neither herself nor the caseworker
    page.goto(f"{live_server.url}/admin/reviews/trainingattestation/add/")
    offered = page.locator("select[name=reviewer] option").all_inner_texts()
    assert "bob" in offered and "rita" in offered
    assert "dana" not in offered and "alice" not in offered
    journey_shot("form")

    # and records bob's training
    page.select_option("select[name=reviewer]", label="bob")
    page.fill("input[name=trained_on]", (timezone.localdate() - datetime.timedelta(days=3)).isoformat())
    page.fill("input[name=course]", "FISWG facial comparison, level 1")
    page.click("input[name=_save]")

    # Then it is listed with who recorded it
    row = page.locator("#result_list tbody tr", has_text="bob")
    expect(row).to_have_count(1)
    assert "FISWG facial comparison, level 1" in row.inner_text() and "dana" in row.inner_text()
    attestation = TrainingAttestation.objects.get()
    assert (attestation.reviewer.username, attestation.recorded_by.username) == ("bob", "dana")
    journey_shot("recorded")


def test_org_admin_confirms_the_threshold_on_the_settings_page(
    page, journey_shot, live_server, dana, org, gallery, password
):
    # Given an organisation whose threshold nobody has confirmed yet
    org.threshold_confirmed_at = None
    org.save(update_fields=["threshold_confirmed_at"])
    log_in(page, live_server, "dana", password)

    # When dana opens the settings page, it says matching is on hold until she confirms
    page.goto(f"{live_server.url}/settings/")
    hold = page.locator("#threshold-confirm")
    expect(hold).to_be_visible()
    assert "Matching is on hold until you confirm the threshold" in hold.inner_text()
    assert "No audit exists yet" in hold.inner_text()  # nothing here can say what a threshold means
    expect(page.locator("#operating-point")).to_contain_text("No audit has been run")
    confirm = page.locator("#threshold-confirm button:has-text('Confirm threshold and start matching')")
    journey_shot("on-hold")

    # and confirming without ticking that she has read the consequences is refused
    page.locator("#threshold-confirm input[name=understood]").uncheck()
    page.locator("#threshold-confirm input[name=understood]").evaluate("el => el.removeAttribute('required')")
    confirm.click()
    expect(page.locator("#threshold-confirm .errorlist")).to_be_visible()
    org.refresh_from_db()
    assert org.threshold_confirmed_at is None

    # When she ticks it and confirms
    page.locator("#threshold-confirm input[name=understood]").check()
    page.locator("#threshold-confirm button:has-text('Confirm threshold and start matching')").click()

    # Then matching is on, she is told so, and the hold notice has gone
    assert "Threshold confirmed; matching is on." in _messages(page)
    expect(page.locator("#threshold-confirm")).to_have_count(0)
    org.refresh_from_db()
    assert org.threshold_confirmed_at is not None and org.threshold_confirmed_by == dana
    # and the page says what is in use, by whom, and that changing it is confirming another
    change = page.locator("#threshold-change")
    expect(change).to_contain_text(f"Threshold in use: {org.distance_threshold}, at most 5 candidates per face")
    expect(change).to_contain_text("Confirmed by dana")
    expect(change.locator("button:has-text('Confirm this threshold')")).to_have_count(1)
    journey_shot("confirmed")


def test_org_admin_shortens_the_retention_after_seeing_what_it_does_to_closed_cases(
    page, journey_shot, live_server, dana, alice, org, password
):
    # Given a 30-day retention, a case closed 20 days ago and one closed 2 days ago
    org.retention_days = 30
    org.save(update_fields=["retention_days"])
    now = timezone.now()
    for reference, days in (("OLD-1", 20), ("RECENT-1", 2)):
        case = CaseFactory(organisation=org, created_by=alice, reference=reference)
        Case.objects.filter(pk=case.pk).update(closed_at=now - datetime.timedelta(days=days))
    log_in(page, live_server, "dana", password)

    # When dana asks the settings page what 7 days would do
    page.goto(f"{live_server.url}/settings/")
    retention = page.locator("#retention")
    expect(retention).to_contain_text("purged 30 days after it is closed")
    retention.locator("input[name=retention_days]").first.fill("7")
    retention.locator("button:has-text('Show what this does')").click()

    # Then it lists the case that becomes due now and the one purged earlier, with dates, and nothing has changed
    expect(page.locator("#retention-due-now")).to_contain_text("1 closed case becomes due now")
    expect(page.locator("#retention-due-now")).to_contain_text("OLD-1")
    expect(page.locator("#retention-earlier")).to_contain_text("RECENT-1")
    org.refresh_from_db()
    assert org.retention_days == 30
    journey_shot("preview")

    # and confirming without ticking that she has read it is refused
    understood = page.locator("#retention-preview input[name=understood]")
    understood.evaluate("el => el.removeAttribute('required')")
    page.locator("#retention-preview button:has-text('Change the retention period to 7 days')").click()
    expect(page.locator("#retention-preview .errorlist")).to_be_visible()
    org.refresh_from_db()
    assert org.retention_days == 30

    # When she ticks it and confirms
    page.locator("#retention-preview input[name=understood]").check()
    page.locator("#retention-preview button:has-text('Change the retention period to 7 days')").click()

    # Then she is told what it did, and the page shows the new period
    message = _messages(page)
    assert "Retention period changed from 30 days to 7 days. 1 closed case is purged by the next sweep." in message
    expect(page.locator("#retention")).to_contain_text("purged 7 days after it is closed")
    org.refresh_from_db()
    assert org.retention_days == 7
    journey_shot("changed")


@pytest.mark.worker
def test_org_admin_creates_a_gallery_and_enrols_a_subject(
    page, journey_shot, live_server, celery_worker_process, dana, password, faces
):
    # Given dana, signed in
    log_in(page, live_server, "dana", password)

    # When she creates a gallery and enrols a subject with one photo
    page.goto(f"{live_server.url}/galleries/")
    page.fill("input[name=name]", "Missing persons 2026")
    page.click("main button:has-text('Create gallery')")
    page.wait_for_selector("h1:has-text('Missing persons 2026')")
    page.fill("input[name=subject-code]", "MP-0001")
    page.fill("input[name=subject-display_name]", "Joe Biden")
    page.select_option("select[name=subject-sex]", "M")
    page.set_input_files("input[name=subject-photos]", str(faces.path(BIDEN)))
    page.click("form:has(input[name=subject-code]) button[type=submit]")

    # Then she is told it is being processed, and once the worker has encoded the face the table says so
    assert "Subject enrolled. The photos are being processed." in _messages(page)
    wait_for(lambda: Photo.objects.filter(kind="reference", status="done").exists(), timeout=90, message="face")
    page.reload()
    row = page.locator("main table tbody tr", has_text="MP-0001")
    expect(row).to_have_count(1)
    cells = row.locator("td").all_inner_texts()
    assert cells[:3] == ["MP-0001", "Joe Biden", "Male"] and cells[5:] == ["1", "1", "0"], cells
    journey_shot()


@pytest.mark.worker
def test_org_admin_bulk_enrols_a_zip_with_a_csv(
    page, journey_shot, live_server, celery_worker_process, dana, password, faces, tmp_path
):
    from matching.models import Gallery

    # Given a gallery, and a zip of two photos with a manifest, one row naming a photo of no face
    Gallery.objects.create(organisation=dana.membership.organisation, name="Bulk 2026")
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("obama.jpg", faces.read(OBAMA))
        bundle.writestr("room.jpg", faces.read("compreface/017_0.jpg"))
    manifest = tmp_path / "manifest.csv"
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerows([["code", "file", "display_name"], ["B-1", "obama.jpg", "Barack Obama"], ["B-2", "room.jpg", ""]])
    manifest.write_text(text.getvalue())
    log_in(page, live_server, "dana", password)

    # When she uploads them on the gallery's page
    page.goto(f"{live_server.url}/galleries/")
    page.click("main a:has-text('Bulk 2026')")
    page.set_input_files("input[name=bulk-archive]", str(archive))
    page.set_input_files("input[name=bulk-manifest]", str(manifest))
    page.click("form:has(input[name=bulk-archive]) button[type=submit]")

    # Then the batch page follows the worker until every row is done, and says what became of each
    page.wait_for_selector("#batch[data-finished='1']", timeout=120_000)
    assert "2 of 2 rows processed: 1 enrolled, 1 refused." in page.inner_text("#batch")
    assert "room.jpg" in page.inner_text("tr.row-refused")
    journey_shot()


@pytest.mark.worker
def test_org_admin_requests_a_disclosure_report_and_downloads_it(
    page, request, journey_shot, live_server, celery_worker_process, gallery, open_case, reviewers, dana, password
):
    # Given a case whose candidate two reviewers confirmed
    case = open_case(OBAMA_2, reference="J-D1")
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    candidate = case.candidates.get()
    decide(candidate, reviewers[0], reason="Ears and hairline agree.")
    decide(candidate, reviewers[1], reason="Nose, mouth and jaw agree.")
    log_in(page, live_server, "dana", password)

    # When dana requests a disclosure report of it
    page.goto(f"{live_server.url}/admin/reviews/disclosurereport/add/")
    page.select_option("select[name=case]", label=str(case))
    page.click("input[name=_save]")

    # Then the worker writes it and the list offers the HTML and the PDF
    row = page.locator("#result_list tbody tr", has_text="J-D1")
    expect(row).to_have_count(1)

    def finished() -> bool:
        page.reload()
        return row.locator("a:has-text('PDF')").count() == 1

    wait_for(finished, timeout=120, interval=1, message="the report")
    journey_shot("list")

    # and the HTML report, a download, names the case, both reviewers and their reasons, with its faces
    with page.expect_download() as html_download:
        row.locator("a:has-text('HTML')").click()
    assert html_download.value.suggested_filename.endswith(".html")
    html = open(html_download.value.path(), encoding="utf-8").read()
    report = page.context.new_page()
    report.set_content(html)
    text = report.inner_text("body")
    assert "J-D1" in text and "OBAMA-REF" in text
    for expected in ["bob", "rita", "Ears and hairline agree.", "Nose, mouth and jaw agree.", "investigative lead"]:
        assert expected in text, expected
    assert images_loaded(report, "img") >= 2
    report.screenshot(path=str(JOURNEY_SHOTS / f"{request.node.name}-html.png"), full_page=True)

    # and the PDF is a PDF
    with page.expect_download() as pdf_download:
        row.locator("a:has-text('PDF')").click()
    assert pdf_download.value.suggested_filename.endswith(".pdf")
    pdf = open(pdf_download.value.path(), "rb").read()
    assert pdf[:5] == b"%PDF-" and len(pdf) > 10_000

    # and "View" opens the same report in a tab of its own, shown rather than saved, its faces drawn
    with page.expect_popup() as popup:
        row.locator("a.disclosure-view").click()
    shown = popup.value
    shown.wait_for_load_state()
    assert "J-D1" in shown.inner_text("body") and "Nose, mouth and jaw agree." in shown.inner_text("body")
    assert images_loaded(shown, "img") >= 2
    shown.screenshot(path=str(JOURNEY_SHOTS / f"{request.node.name}-view.png"), full_page=True)


# A machine without Pango, as `make run` leaves it when apt is locked: cffi cannot open the library, just as the
# dynamic loader answers there. The rest of the process is the real worker code.
NO_PANGO = """
import cffi

_dlopen = cffi.FFI.dlopen


def dlopen(self, name, flags=0):
    if "pango" in str(name):
        raise OSError(f"cannot load library '{name}': {name}: cannot open shared object file: No such file")
    return _dlopen(self, name, flags)


cffi.FFI.dlopen = dlopen
"""


def _generate_without_pango(report_id: int) -> str:
    """Run the disclosure task in a process of its own on a machine without Pango; its state and output."""
    import os
    import subprocess
    import sys

    from django.conf import settings
    from django.db import connection

    from tests.conftest import ROOT, _database_url

    script = NO_PANGO + (
        "import django\n"
        "django.setup()\n"
        "from reviews.tasks import generate_disclosure\n"
        f"print('task state:', generate_disclosure.apply(args=[{report_id}]).state)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": _database_url(connection.settings_dict),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CELERY_BROKER_URL": "memory://",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    return done.stdout + done.stderr


def test_without_pango_the_org_admin_gets_the_html_report_and_a_message_instead_of_the_pdf(
    page, request, journey_shot, live_server, gallery, open_case, reviewers, dana, password
):
    from reviews.models import DisclosureReport

    # Given a case whose candidate two reviewers confirmed, and dana's request for its report
    case = open_case(OBAMA_2, reference="J-D2")
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    candidate = case.candidates.get()
    decide(candidate, reviewers[0], reason="Ears and hairline agree.")
    decide(candidate, reviewers[1], reason="Nose, mouth and jaw agree.")
    # Stored directly rather than through the service, whose outbox would also hand it to any worker (with
    # Pango) left running by an earlier test.
    report = DisclosureReport.objects.create(case=case, requested_by=dana)

    # When a worker on a machine without Pango generates it
    output = _generate_without_pango(report.pk)

    # Then the report is done, with its HTML and without a PDF, and says why
    assert "task state: SUCCESS" in output, output
    report.refresh_from_db()
    assert report.status == "done" and report.html and not report.pdf, output
    assert report.pdf_failure_reason.startswith("No PDF: the worker could not load Pango"), report.pdf_failure_reason

    # and dana's list of reports says so beside the HTML, and offers no PDF
    log_in(page, live_server, "dana", password)
    page.goto(f"{live_server.url}/admin/reviews/disclosurereport/")
    row = page.locator("#result_list tbody tr", has_text="J-D2")
    message = row.locator(".pdf-missing").inner_text()
    assert "No PDF: the worker could not load Pango" in message and "The HTML report is complete" in message
    assert "libpango-1.0-0" in message and "request the report again" in message
    assert row.locator("a.disclosure-pdf").count() == 0
    journey_shot("list")

    # and the HTML report opens, whole
    with page.expect_popup() as popup:
        row.locator("a.disclosure-view").click()
    shown = popup.value
    shown.wait_for_load_state()
    assert "J-D2" in shown.inner_text("body") and "Ears and hairline agree." in shown.inner_text("body")
    assert images_loaded(shown, "img") >= 2
    # and the PDF's address answers "not found" rather than failing
    missing = page.request.get(f"{live_server.url}/review/disclosures/{report.pk}/download.pdf")
    assert missing.status == 404


def test_org_admin_reads_the_activity_log(page, journey_shot, live_server, dana, alice, open_case, faces, password):
    # Given a case alice opened
    case = open_case(OBAMA_2, reference="J-L1")
    # A worker left running by an earlier test may claim the photo first; either way it finishes.
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    log_in(page, live_server, "dana", password)

    # When dana opens the activity log
    page.goto(f"{live_server.url}/admin/portal/auditevent/")

    # Then it lists, newest first, her own sign-in and alice's case, and offers filters by action and date
    rows = page.locator("#result_list tbody tr")
    assert rows.count() >= 2
    texts = rows.all_inner_texts()
    assert any("dana" in text and "login" in text.lower() for text in texts), texts
    assert any("alice" in text and str(case.pk) in text for text in texts), texts
    # and filtering by an action leaves only those rows
    page.click("#changelist-filter a:has-text('case.create')")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    assert "alice" in page.inner_text("#result_list tbody tr")
    # It is read-only: nothing to add, and no action to delete rows with
    assert page.locator(".object-tools .addlink").count() == 0
    assert page.locator("select[name=action] option[value=delete_selected]").count() == 0
    journey_shot()


def test_org_admin_reopens_a_closed_case(page, journey_shot, live_server, dana, alice, open_case, password, org):
    # Given a case alice closed, with its purge date set
    org.retention_days = 30
    org.save(update_fields=["retention_days"])
    case = open_case(OBAMA_2, reference="J-O1")
    # A worker left running by an earlier test may claim the photo first; either way it finishes.
    wait_for(lambda: all(p.is_finished for p in case.photos.all()), message="probe photo")
    case_close(case=case, acting_user=alice, reason="Found safe.")
    log_in(page, live_server, "dana", password)

    # When dana opens it, it shows when it will be purged and offers to reopen it
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    assert "Closed" in page.inner_text("[data-role=case-state]") and "Found safe." in page.inner_text("main")
    assert "will be purged on" in page.inner_text("[data-role=purge-date]")
    journey_shot("closed")

    # and reopens it with a reason
    page.fill("input[name=reason]", "New sighting reported by the family.")
    page.click("form.reopen-case button[type=submit]")

    # Then it is open again, no purge is due, and it can be closed again
    expect(page.locator("[data-role=case-state]")).to_have_text("Open")
    assert "30 days after the case is closed" in page.inner_text("[data-role=purge-date]")
    assert page.locator("form.close-case").count() == 1
    case.refresh_from_db()
    assert case.closed_at is None and case.purge_due_at is None
    journey_shot("reopened")
