from __future__ import annotations

import io

from django.urls import reverse
from pypdf import PdfReader

from reviews.disclosure import LEAD_ONLY
from reviews.models import DisclosureReport
from tests.conftest import OBAMA, OBAMA_2, decide


def test_disclosure_lists_rejected_candidates_and_null_results(
    client, reviewers, dana, enrol, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a case with one rejected candidate and one photo that found nobody
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    case = open_case(OBAMA_2, "lfw/Abdullah_Gul_0001.jpg", reference="D-1")
    candidate = case.candidates.get()
    decide(candidate, reviewers[0], conclusion="exclusion", reason="The ear lobes differ clearly.")
    decide(candidate, reviewers[1], conclusion="probable_exclusion", reason="Jaw line differs.")

    # When a reviewer asks for the disclosure report and the task runs
    client.force_login(reviewers[0])
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


def test_caseworkers_and_other_organisations_cannot_get_disclosures(
    client, alice, charlie, reviewers, open_case, eager_tasks, django_capture_on_commit_callbacks
):
    case = open_case(OBAMA_2, reference="D-2")
    client.force_login(reviewers[0])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:reviews_disclosurereport_add"), {"case": case.pk, "_save": "Save"})
    report = DisclosureReport.objects.get()

    for user in (alice, charlie):
        client.force_login(user)
        assert client.get(reverse("reviews:disclosure_download", args=[report.pk, "pdf"])).status_code == 404


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
