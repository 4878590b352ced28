from __future__ import annotations

import io
import os
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from matching import services
from matching.models import Case
from portal.models import AuditEvent
from reviews import disclosure
from reviews.disclosure import LEAD_ONLY, disclosure_request
from reviews.models import DisclosureReport
from reviews.services import review_policy_update
from tests.conftest import OBAMA, OBAMA_2, decide
from tests.factories import candidate_with


def test_disclosure_lists_rejected_candidates_and_null_results(
    client, reviewers, dana, enrol, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a case with one rejected candidate and one photo that found nobody
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    case = open_case(OBAMA_2, "lfw/Abdullah_Gul_0001.jpg", reference="D-1")
    candidate = case.candidates.get()
    decide(candidate, reviewers[0], conclusion="exclusion", reason="The ear lobes differ clearly.")
    decide(candidate, reviewers[1], conclusion="probable_exclusion", reason="Jaw line differs.")

    # When the org admin asks for the disclosure report and the task runs
    client.force_login(dana)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:reviews_disclosurereport_add"), {"case": case.pk, "_save": "Save"})
    report = DisclosureReport.objects.get()

    # Then both the HTML and the PDF carry every candidate, decision and null result
    assert response.status_code == 302 and report.status == "done"
    pdf = client.get(reverse("reviews:disclosure_download", args=[report.pk, "pdf"]))
    html = b"".join(client.get(reverse("reviews:disclosure_download", args=[report.pk, "html"])).streaming_content)
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(b"".join(pdf.streaming_content))).pages)
    text = " ".join(text.split())
    for document in (text, " ".join(html.decode().split())):
        assert "OBAMA-REF" in document and "Rejected" in document
        assert "The ear lobes differ clearly." in document and "Jaw line differs." in document
        assert "No candidate: no gallery face was within the threshold." in document
        assert "face_recognition 1.3.0" in document and "0.6" in document
        assert LEAD_ONLY in document
        assert "Training valid until" in document or "training valid until" in document
        assert "As the reviewer saw it when deciding (stored snapshot)" in document
        # Photos are counted in the case, not named by their database ids; one face is one face
        assert "Probe photo 1 of 2" in document and "Probe photo 2 of 2" in document
        assert "against 1 gallery face at threshold" in document


def test_caseworkers_and_other_organisations_cannot_get_disclosures(
    client, alice, charlie, dana, reviewers, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    case = open_case(OBAMA_2, reference="D-2")
    client.force_login(dana)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:reviews_disclosurereport_add"), {"case": case.pk, "_save": "Save"})
    report = DisclosureReport.objects.get()

    for user in (alice, charlie):
        client.force_login(user)
        assert client.get(reverse("reviews:disclosure_download", args=[report.pk, "pdf"])).status_code == 404


def test_the_html_report_can_be_viewed_in_the_browser_with_the_download_s_checks_and_log_row(
    client, alice, charlie, erin, dana, reviewers, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a finished report of a case of dana's organisation
    case = open_case(OBAMA_2, reference="D-V")
    client.force_login(dana)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:reviews_disclosurereport_add"), {"case": case.pk, "_save": "Save"})
    report = DisclosureReport.objects.get()
    view_url = reverse("reviews:disclosure_view", args=[report.pk])

    # When dana views it
    response = client.get(view_url)

    # Then it is shown inline, as the same HTML the download saves
    assert response.status_code == 200 and response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Disposition"].startswith("inline;")
    assert f"disclosure-D-V-{report.pk}.html" in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    download = client.get(reverse("reviews:disclosure_download", args=[report.pk, "html"]))
    assert download["Content-Disposition"].startswith("attachment;")
    assert body == b"".join(download.streaming_content) and b"Disclosure report: case D-V" in body
    assert response["Cache-Control"] == "private, no-store"
    # under a policy stricter than the portal's: no script at all, images only inlined, sandboxed, not framed
    policy = {d.split()[0]: d.split()[1:] for d in response["Content-Security-Policy"].split("; ")}
    assert policy["default-src"] == ["'none'"] and policy["script-src"] == ["'none'"]
    assert policy["img-src"] == ["data:"] and policy["frame-ancestors"] == ["'none'"]
    assert "sandbox" in policy and "'self'" not in response["Content-Security-Policy"]
    # and each view is in the activity log, told apart from a download
    rows = AuditEvent.objects.filter(action="disclosure.download", target_id=str(report.pk)).order_by("id")
    assert [(r.actor_id, r.detail) for r in rows] == [
        (dana.pk, {"format": "html", "inline": True}),
        (dana.pk, {"format": "html", "inline": False}),
    ]

    # and nobody else sees it: not the caseworker, not another organisation's caseworker or admin
    for user in (alice, charlie, erin):
        client.force_login(user)
        assert client.get(view_url).status_code == 404
    assert AuditEvent.objects.filter(action="disclosure.download").count() == 2


def test_a_report_without_a_pdf_answers_not_found_for_its_pdf(client, dana, open_case):
    # Given a finished report whose worker could not print the PDF
    case = open_case(OBAMA_2, reference="D-NP")
    report = DisclosureReport.objects.create(
        case=case, status="done", requested_by=dana, pdf_failure_reason=disclosure.PDF_UNAVAILABLE.format(error="x")
    )
    report.html.save("r.html", ContentFile(b"<p>report</p>"))
    client.force_login(dana)

    # Then its PDF is not found (not a server error), its HTML is there, and its list row says why
    assert client.get(reverse("reviews:disclosure_download", args=[report.pk, "pdf"])).status_code == 404
    assert client.get(reverse("reviews:disclosure_view", args=[report.pk])).status_code == 200
    listing = client.get(reverse("admin:reviews_disclosurereport_changelist")).content.decode()
    assert "No PDF: the worker could not load Pango" in listing and "download.pdf" not in listing


@pytest.mark.parametrize(
    ("reference", "in_name"),
    [("a/../../b.exe;", "a-b-exe-"), ("report\u202efdp.exe", "report-fdp-exe-"), ("\u202e;", "")],
    ids=["path", "right-to-left", "nothing-left"],
)
def test_a_report_downloads_under_a_safe_name_whatever_its_case_reference(client, dana, org, reference, in_name):
    # Given a finished report of a case whose reference was stored before references were limited
    from tests.factories import CaseFactory

    case = CaseFactory(organisation=org, reference=reference)
    report = DisclosureReport.objects.create(case=case, status="done", requested_by=dana)
    report.html.save("r.html", ContentFile(b"<p>report</p>"))
    report.pdf.save("r.pdf", ContentFile(b"%PDF-1.4"))
    client.force_login(dana)

    # When it is downloaded and viewed
    pdf = client.get(reverse("reviews:disclosure_download", args=[report.pk, "pdf"]))
    html = client.get(reverse("reviews:disclosure_download", args=[report.pk, "html"]))
    shown = client.get(reverse("reviews:disclosure_view", args=[report.pk]))

    # Then each file name holds only ASCII letters, digits and hyphens before its extension
    assert pdf["Content-Disposition"] == f'attachment; filename="disclosure-{in_name}{report.pk}.pdf"'
    assert html["Content-Disposition"] == f'attachment; filename="disclosure-{in_name}{report.pk}.html"'
    assert shown["Content-Disposition"] == f'inline; filename="disclosure-{in_name}{report.pk}.html"'


# Who may request a report, and what it shows while candidates are open. Rows stand in for real searches.


@pytest.fixture
def stored_photos(settings):
    """The tiny JPEGs the row-built candidates' photos point at, so that the report can embed them."""
    from pathlib import Path

    from PIL import Image

    for name in ("p.jpg", "r.jpg"):
        path = Path(settings.MEDIA_ROOT) / name
        if not path.exists():
            Image.new("RGB", (10, 10), (120, 90, 60)).save(path, "JPEG")


def _report_text(client, report) -> list[str]:
    pdf = client.get(reverse("reviews:disclosure_download", args=[report.pk, "pdf"]))
    html = b"".join(client.get(reverse("reviews:disclosure_download", args=[report.pk, "html"])).streaming_content)
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(b"".join(pdf.streaming_content))).pages)
    return [" ".join(text.split()), " ".join(html.decode().split())]


def test_a_disclosure_of_a_purged_case_says_the_photos_were_purged(
    client, alice, reviewers, dana, org, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a case closed and purged under the retention policy
    org.retention_days = 1
    org.save(update_fields=["retention_days"])
    case = open_case(OBAMA_2, reference="D-3")
    services.case_close(case=case, acting_user=alice, reason="Found.")
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=2))
    assert services.cases_purge_expired() == 1

    # When the org admin asks for its disclosure report
    with django_capture_on_commit_callbacks(execute=True):
        report = disclosure_request(case=case, acting_user=dana)
    report.refresh_from_db()

    # Then it is generated, without the photo, saying why
    assert report.status == "done", report.failure_reason
    client.force_login(dana)
    for document in _report_text(client, report):
        assert "The photo was purged on" in document and "retention policy" in document
    assert b"data:image/jpeg" not in report.html.open("rb").read()


def test_a_disclosure_made_before_an_erasure_is_regenerated_without_the_subject(
    client, reviewers, dana, enrol, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a disclosure that names a gallery subject
    subject = enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    case = open_case(OBAMA_2, reference="D-4")
    for reviewer in reviewers:
        decide(case.candidates.get(), reviewer)
    with django_capture_on_commit_callbacks(execute=True):
        report = disclosure_request(case=case, acting_user=dana)
    report.refresh_from_db()
    old_files = [report.html.path, report.pdf.path]
    client.force_login(dana)
    assert all("Barack Obama" in document for document in _report_text(client, report))

    # When the subject is erased
    with django_capture_on_commit_callbacks(execute=True):
        services.subject_erase(subject=subject, acting_user=dana)

    # Then the old files are gone, the new ones do not name the subject, and the log says it was regenerated
    report.refresh_from_db()
    assert report.status == "done" and report.regenerated_at is not None
    assert not any(os.path.exists(path) for path in old_files)
    for document in _report_text(client, report):
        assert "Barack Obama" not in document and "erased from the gallery" in document
    event = AuditEvent.objects.get(action="disclosure.regenerate", target_id=str(report.pk))
    assert event.actor == dana and event.detail == {
        "because": "subject.erase",
        "case": case.pk,
        "subject_code": "OBAMA-REF",
    }


def test_a_generation_running_across_an_erasure_keeps_nothing_it_read(reviewers, dana, enrol, open_case, monkeypatch):
    from reviews.disclosure import disclosure_generate, disclosures_after_biometrics_removed

    # Given a report being generated (claimed as running) when an erasure regenerates it
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    case = open_case(OBAMA_2, reference="D-5")
    report = DisclosureReport.objects.create(case=case, requested_by=reviewers[0], status="running")
    real_context = disclosure.disclosure_context

    def context_then_erasure(case):
        context = real_context(case)
        disclosures_after_biometrics_removed(
            services.BiometricsRemoved(
                kind="subject.erase", organisation_id=case.organisation_id, case_ids=[case.pk], acting_user=dana
            )
        )
        return context

    # When the generation that started before the erasure finishes
    monkeypatch.setattr(disclosure, "disclosure_context", context_then_erasure)
    disclosure_generate(report_id=report.pk)

    # Then nothing of it was stored: the report waits for its new generation
    report.refresh_from_db()
    assert report.status == "queued" and not report.html and not report.pdf


def _path_points(page) -> list[tuple[float, float]]:
    """Every corner of every rectangle and line the page draws (table borders among them), in page space."""
    points: list[tuple[float, float]] = []

    def visit(operator, operands, cm, tm) -> None:
        if operator in (b"re", b"m", b"l"):
            a, b, c, d, e, f = (float(v) for v in cm)
            numbers = [float(v) for v in operands]
            corners = (
                [(numbers[0], numbers[1]), (numbers[0] + numbers[2], numbers[1] + numbers[3])]
                if operator == b"re"
                else [(numbers[0], numbers[1])]
            )
            points.extend((a * x + c * y + e, b * x + d * y + f) for x, y in corners)

    page.extract_text(visitor_operand_before=visit)
    return points


def test_disclosure_pdf_is_the_html_printed_with_its_face_images_inside_the_margins(
    reviewers, dana, enrol, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    from reviews.disclosure import disclosure_request

    # Given a confirmed candidate whose subject has a long name without spaces, which a fixed table overflows
    long_name = "BarackHusseinObama" * 11
    enrol("OBAMA-REFERENCE-CODE-OF-SOME-LENGTH-2026", OBAMA, display_name=long_name)
    case = open_case(OBAMA_2, reference="D-3")
    candidate = case.candidates.get()
    decide(candidate, reviewers[0], reason="Ears, nose and jaw agree; the hairline agrees.")
    decide(candidate, reviewers[1], conclusion="probable", reason="Nose and eyebrows agree.")

    # When the org admin's report is generated in the task
    with django_capture_on_commit_callbacks(execute=True):
        report = disclosure_request(case=case, acting_user=dana)
    report.refresh_from_db()
    reader = PdfReader(report.pdf.open("rb"))

    # Then it is A4, carries the text of the HTML and the probe photo, probe face and gallery face as images
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    assert "Disclosure report: case D-3" in text and "Nose and eyebrows agree." in text and "Gallery face" in text
    assert LEAD_ONLY in text
    images = [image for page in reader.pages for image in page.images]
    assert len(images) >= 3, f"expected the probe photo, its face and the gallery face, found {len(images)}"
    assert all(image.image.width > 0 for image in images)
    # and nothing is drawn outside the 14 mm side margins (table borders included)
    margin = 14 * 72 / 25.4
    for page in reader.pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (round(width), round(height)) == (595, 842)
        xs = [x for x, _ in _path_points(page)]
        assert xs, "the page draws no table borders"
        assert min(xs) >= margin - 1 and max(xs) <= width - margin + 1, (min(xs), max(xs), width - margin)


def test_each_decision_states_the_panel_it_stored_and_whether_the_current_audit_differs():
    from reviews.disclosure import _bias_summary

    snapshot = {
        "valid": True,
        "run_id": 4,
        "severity": "elevated",
        "run_label": "audit 4",
        "involved": [],
        "headline": "A stranger in group race Asian would have about 9 (4–17) subjects at least this close.",
    }

    same, newer = _bias_summary(snapshot, 4), _bias_summary(snapshot, 7)

    assert same.startswith("As the reviewer saw it when deciding (stored snapshot).") and "differs" not in same
    assert "the current audit differs (now audit 7)" in newer
    assert snapshot["headline"] in same


def test_a_reviewer_cannot_request_a_disclosure_report(client, reviewers, alice, org, stored_photos):
    candidate = candidate_with(organisation=org, created_by=alice)
    decide(candidate, reviewers[1], reason="Open reason of rita.")
    client.force_login(reviewers[0])

    response = client.post(reverse("admin:reviews_disclosurereport_add"), {"case": candidate.case_id, "_save": "Save"})

    assert response.status_code == 403
    assert not DisclosureReport.objects.exists()


def test_an_org_admin_who_could_still_decide_an_open_candidate_cannot_request_a_report(
    client, reviewers, dana, alice, org, trained
):
    trained(dana)
    candidate = candidate_with(organisation=org, created_by=alice)
    decide(candidate, reviewers[0], reason="Open reason of bob.")
    client.force_login(dana)

    response = client.post(
        reverse("admin:reviews_disclosurereport_add"), {"case": candidate.case_id, "_save": "Save"}, follow=True
    )

    assert "You could still decide open candidates on this case" in response.content.decode()
    assert not DisclosureReport.objects.exists()


def test_a_report_made_while_candidates_are_open_holds_only_the_closed_record(
    client, reviewers, dana, alice, org, trained, stored_photos, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a case with a rejected candidate and one still open (two of three confirmations, dana's included)
    review_policy_update(organisation=org, acting_user=dana, required_confirmations=3)
    trained(dana)
    bob, rita = reviewers
    closed = candidate_with(organisation=org, created_by=alice, distance=0.5561, subject={"code": "CLOSED-1"})
    still_open = candidate_with(organisation=org, case=closed.case, distance=0.4321, rank=2, subject={"code": "OPEN-2"})
    for reviewer in (bob, rita, dana):
        decide(closed, reviewer, conclusion="exclusion", reason=f"Closed reason of {reviewer.username}.")
    decide(still_open, bob, reason="Open reason of bob.")
    decide(still_open, dana, reason="Open reason of dana.")

    # When dana, who can no longer decide anything on it, requests the report
    client.force_login(dana)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:reviews_disclosurereport_add"), {"case": closed.case_id, "_save": "Save"})
    report = DisclosureReport.objects.get()

    # Then the closed candidate is there in full, and the open one only as a count
    assert response.status_code == 302 and report.status == "done"
    for document in _report_text(client, report):
        assert "CLOSED-1" in document and "Closed reason of rita." in document and "0.556" in document
        assert "1 candidate(s) still under review" in document
        assert "OPEN-2" not in document and "Open reason" not in document and "0.432" not in document


def test_disclosure_prints_the_analyses_a_photo_judged_unsuitable_the_tools_and_the_marks(
    client, reviewers, dana, enrol, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    import datetime

    from tests.conftest import analyse

    # Given a case of two dated probe photos: one judged of no value, the other confirmed with marks on both faces
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama", captured_on=datetime.date(2008, 11, 4))
    case = open_case(OBAMA_2, reference="D-9", captured_on=datetime.date(2013, 6, 1))
    services.case_add_photos(
        case=case, photos=[services.uploaded_image_read(_faces_upload(OBAMA))], acting_user=case.created_by
    )
    for photo in case.photos.all():
        services.photo_process(photo_id=photo.id)
    first, second = case.candidates.order_by("id")
    bob, rita = reviewers
    analyse(first, bob, value="none", limits=["blur"], note="Motion blur across the eyes.")
    marks = [
        {"face": second.search.face_id, "kind": "point", "x": 0.4, "y": 0.35, "feature": "eyebrows", "note": "Arch"},
        {"face": second.reference_face_id, "kind": "region", "x": 0.4, "y": 0.5, "w": 0.2, "h": 0.15,
         "feature": "nose", "note": "Same nostril shape"},
    ]  # fmt: skip
    decide(second, bob, annotations=marks, tools={"gallery": ["mirror", "greyscale"]})
    decide(second, rita)

    # When the org admin asks for the report
    client.force_login(dana)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:reviews_disclosurereport_add"), {"case": case.pk, "_save": "Save"})
    report = DisclosureReport.objects.get()

    # Then the HTML and the PDF carry each analysis, the unsuitable photo, the dates, the tools and the marks
    assert report.status == "done", report.failure_reason
    pdf = client.get(reverse("reviews:disclosure_download", args=[report.pk, "pdf"]))
    html = b"".join(client.get(reverse("reviews:disclosure_download", args=[report.pk, "html"])).streaming_content)
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(b"".join(pdf.streaming_content))).pages)
    for document in (" ".join(text.split()), " ".join(html.decode().split())):
        assert "Analysis (before any comparison): Of no value" in document
        assert "Motion blur across the eyes." in document and "Photo judged unsuitable for comparison" in document
        assert "Not comparable: probe photo unsuitable" in document
        assert "Analysis (before any comparison): Of value" in document and "eye distance" in document
        assert "Date taken: 2013-06-01" in document and "photo taken 2008-11-04" in document
        assert "Image tools used: gallery: greyscale, mirror" in document
        assert "Same nostril shape" in document and "Eyebrows" in document
    assert html.decode().count("<circle") == 1 and html.decode().count('<image href="data:image/jpeg') == 2


def _faces_upload(name):
    from pathlib import Path

    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile

    path = Path(settings.FACES_DIR) / name
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")
