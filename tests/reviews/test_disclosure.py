from __future__ import annotations

import io

import pytest
from django.urls import reverse
from pypdf import PdfReader

from reviews.disclosure import LEAD_ONLY
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
