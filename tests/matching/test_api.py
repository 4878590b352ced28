from __future__ import annotations

import datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from rest_framework.pagination import PageNumberPagination

from matching import services
from matching.models import Candidate, Case, Photo
from portal.models import AuditEvent
from tests.conftest import OBAMA, OBAMA_2, decide
from tests.factories import CaseFactory, audit_run_rows, candidate_with
from tests.matching.test_bulk import csv_bytes, make_zip


def test_caseworker_creates_a_case_with_photos_in_one_request(client, alice, faces):
    client.force_login(alice)

    response = client.post(
        reverse("case-list"),
        {
            "reference": "API-1",
            "title": "From the API",
            "purpose": "Locate a missing child",
            "photos": [faces.upload(OBAMA)],
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["reference"] == "API-1"
    assert [p["status"] for p in body["photos"]] == ["queued"]
    assert body["confirmed_matches"] == [] and body["candidates"] == {
        "pending": 0,
        "confirmed": 0,
        "rejected": 0,
        "not_comparable": 0,
    }


def test_bad_photo_gives_a_clear_400_and_stores_nothing(client, alice):
    client.force_login(alice)

    response = client.post(
        reverse("case-list"),
        {"reference": "API-2", "title": "t", "purpose": "p", "photos": [SimpleUploadedFile("x.jpg", b"GIF89a....")]},
    )

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["field"], error["code"]) == ("photos", "invalid")
    assert "not a JPEG, PNG or WebP" in error["message"]
    assert not Case.objects.exists() and not Photo.objects.exists()


def test_pending_candidates_never_appear_in_the_api(client, alice, enrol, open_case):
    enrol("OBAMA-REF", OBAMA)
    case = open_case(OBAMA_2)
    client.force_login(alice)

    body = client.get(reverse("case-detail", args=[case.pk])).content.decode()

    assert case.candidates.count() == 1
    assert "OBAMA-REF" not in body and '"pending":1' in body.replace(" ", "")


def test_reviewer_and_anonymous_users_cannot_use_the_case_api(client, bob):
    assert client.get(reverse("case-list")).status_code in (401, 403)
    client.force_login(bob)
    assert client.get(reverse("case-list")).status_code == 403


# Helpers for the tests below


def _decided(candidate, outcome: str):
    Candidate.objects.filter(pk=candidate.pk).update(
        outcome=outcome, outcome_reason="Checked.", outcome_at=timezone.now()
    )
    return candidate


@pytest.fixture
def four_outcomes(org, alice):
    """One candidate per outcome, each on its own case, with a subject code naming the outcome."""
    candidates = {}
    for outcome in ["pending", "escalated", "rejected", "confirmed"]:
        candidate = candidate_with(organisation=org, created_by=alice, subject={"code": f"SUBJ-{outcome}"})
        candidates[outcome] = _decided(candidate, outcome) if outcome != "pending" else candidate
    return candidates


# Cases and their photos


def test_case_list_filters_by_reference_and_creation_time(client, alice, org):
    # given: a case from January and one from September
    for reference, month in [("JAN-1", 1), ("SEP-1", 9)]:
        case = CaseFactory(organisation=org, reference=reference)
        Case.objects.filter(pk=case.pk).update(created_at=datetime.datetime(2026, month, 1, tzinfo=datetime.UTC))
    client.force_login(alice)

    def references(**query):
        return [c["reference"] for c in client.get(reverse("case-list"), query).json()["results"]]

    assert references() == ["SEP-1", "JAN-1"]
    assert references(reference="JAN-1") == ["JAN-1"]
    assert references(created_after="2026-06-01") == ["SEP-1"]
    assert references(created_before="2026-06-01T00:00:00Z") == ["JAN-1"]


def test_case_list_is_paginated(client, alice, org, monkeypatch):
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    for number in range(3):
        CaseFactory(organisation=org, reference=f"P-{number}")
    client.force_login(alice)

    first = client.get(reverse("case-list")).json()
    second = client.get(first["next"]).json()

    assert (first["count"], len(first["results"]), len(second["results"]), second["next"]) == (3, 2, 1, None)


def test_case_list_and_detail_say_whether_a_case_is_closed_and_when_it_is_purged(client, alice, org):
    # Given an organisation keeping closed cases' biometrics for 30 days, an open case and a closed one
    org.retention_days = 30
    org.save(update_fields=["retention_days"])
    CaseFactory(organisation=org, reference="OPEN-1")
    shut = services.case_close(case=CaseFactory(organisation=org, reference="SHUT-1"), acting_user=alice, reason="Safe")
    due = (shut.closed_at + datetime.timedelta(days=30)).isoformat().replace("+00:00", "Z")
    client.force_login(alice)

    # When alice lists the cases and reads each one
    listed = {c["reference"]: c for c in client.get(reverse("case-list")).json()["results"]}
    detail = {ref: client.get(reverse("case-detail", args=[c["id"]])).json() for ref, c in listed.items()}

    # Then both say which is closed, since when, and when its biometrics go
    state = ("closed", "closed_at", "purge_due_at", "purged_at")
    for cases in (listed, detail):
        assert [cases["OPEN-1"][k] for k in state] == [False, None, None, None]
        assert [cases["SHUT-1"][k] for k in state] == [True, cases["SHUT-1"]["closed_at"], due, None]
        assert cases["SHUT-1"]["closed_at"].startswith(f"{shut.closed_at:%Y-%m-%dT%H:%M}")


def test_the_schema_describes_a_case_s_closing_and_purge(client):
    schema = client.get(reverse("api-schema"), {"format": "json"}).json()

    for name in ("Case", "CaseDetail"):
        fields = schema["components"]["schemas"][name]["properties"]
        assert fields["closed"]["type"] == "boolean" and "closed" in fields["closed"]["description"]
        assert fields["purge_due_at"]["nullable"] and "purged" in fields["purge_due_at"]["description"]
        assert "retention period" in fields["purge_due_at"]["description"]
        assert {"closed_at", "purged_at"} <= set(fields)


def test_case_photos_show_status_failure_reason_and_faces_but_no_subject(client, alice, org):
    # given: a case whose first photo was searched (one face, one candidate) and a second photo that failed
    candidate = candidate_with(organisation=org, created_by=alice, subject={"code": "SECRET-SUBJECT"})
    case = candidate.case
    failed = Photo.objects.create(
        organisation=org,
        kind="probe",
        case=case,
        image="f.jpg",
        width=10,
        height=10,
        status="failed",
        failure_reason="No face was found in this photo.",
    )
    client.force_login(alice)

    # when
    listing = client.get(reverse("case-photos", args=[case.pk]))
    detail = client.get(reverse("case-photo", args=[case.pk, failed.pk]))
    case_detail = client.get(reverse("case-detail", args=[case.pk]))

    # then
    assert [(p["status"], p["faces"]) for p in listing.json()["results"]] == [("done", 1), ("failed", 0)]
    assert detail.json()["failure_reason"] == "No face was found in this photo."
    assert [p["status"] for p in case_detail.json()["photos"]] == ["done", "failed"]
    assert all("SECRET-SUBJECT" not in r.content.decode() for r in (listing, detail, case_detail))


def test_a_photo_is_found_only_under_its_own_case(client, alice, org):
    one, other = candidate_with(organisation=org), candidate_with(organisation=org)
    client.force_login(alice)

    response = client.get(reverse("case-photo", args=[one.case_id, other.search.face.photo_id]))

    assert response.status_code == 404


# Confirmed matches


def test_caseworker_sees_only_confirmed_matches_per_case_and_overall(client, alice, four_outcomes):
    client.force_login(alice)

    per_case = {
        outcome: [m["subject_code"] for m in client.get(reverse("case-matches", args=[c.case_id])).json()["results"]]
        for outcome, c in four_outcomes.items()
    }
    overall = client.get(reverse("match-list")).json()["results"]

    assert per_case == {"pending": [], "escalated": [], "rejected": [], "confirmed": ["SUBJ-confirmed"]}
    assert [(m["subject_code"], m["case"]) for m in overall] == [("SUBJ-confirmed", four_outcomes["confirmed"].case_id)]


def test_no_case_detail_names_an_unconfirmed_subject(client, alice, four_outcomes):
    client.force_login(alice)

    bodies = {
        o: client.get(reverse("case-detail", args=[c.case_id])).content.decode() for o, c in four_outcomes.items()
    }

    assert {o for o, body in bodies.items() if "SUBJ-" in body} == {"confirmed"}


def test_match_list_filters_by_case(client, alice, org, four_outcomes):
    another = _decided(candidate_with(organisation=org, subject={"code": "SUBJ-another"}), "confirmed")
    client.force_login(alice)

    body = client.get(reverse("match-list"), {"case": another.case_id}).json()

    assert [m["subject_code"] for m in body["results"]] == ["SUBJ-another"]


def test_a_match_names_every_reviewer_who_confirmed_it(client, alice, reviewers, org):
    # Given a candidate that bob and then rita confirmed under the two-reviewer policy
    candidate = candidate_with(organisation=org, created_by=alice)
    decide(candidate, reviewers[0])
    decide(candidate, reviewers[1], conclusion="probable", reason="Nose and eyebrows agree.")
    client.force_login(alice)

    # When the caseworker reads it through the API, per case and overall
    per_case = client.get(reverse("case-matches", args=[candidate.case_id])).json()["results"]
    overall = client.get(reverse("match-list")).json()["results"]

    # Then both name both reviewers; `reviewer` stays the one who settled it
    for (match,) in (per_case, overall):
        assert (match["confirmed_by"], match["reviewer"]) == (["bob", "rita"], "rita")


# Galleries, subjects, imports (org admins)


def test_org_admin_creates_and_lists_galleries(client, dana):
    client.force_login(dana)

    created = client.post(
        reverse("gallery-list"),
        {"name": "Missing 2026", "description": "Reported missing"},
        content_type="application/json",
    )
    listing = client.get(reverse("gallery-list")).json()

    assert created.status_code == 201 and created.json()["subjects"] == 0
    assert [g["name"] for g in listing["results"]] == ["Missing 2026"]
    assert AuditEvent.objects.filter(action="gallery.create", actor=dana).exists()


def test_org_admin_enrols_a_subject_with_photos_and_finds_it_listed(client, dana, org, faces):
    gallery = services.gallery_create(organisation=org, name="Register", acting_user=dana)
    client.force_login(dana)

    enrolled = client.post(
        reverse("gallery-subjects", args=[gallery.pk]),
        {"code": "S-1", "display_name": "Barack", "sex": "M", "age_band": "45-59", "photos": [faces.upload(OBAMA)]},
    )
    listing = client.get(reverse("gallery-subjects", args=[gallery.pk]), {"code": "S-1"}).json()

    assert enrolled.status_code == 201
    assert (enrolled.json()["code"], [p["status"] for p in enrolled.json()["photos"]]) == ("S-1", ["queued"])
    assert [(s["code"], s["photos"]) for s in listing["results"]] == [("S-1", 1)]


def test_bulk_import_answers_with_the_batch_and_its_status_endpoint(client, dana, org, faces):
    gallery = services.gallery_create(organisation=org, name="Register", acting_user=dana)
    client.force_login(dana)

    # when: a zip and a CSV are posted, and later the worker processes them
    response = client.post(
        reverse("gallery-imports", args=[gallery.pk]),
        {
            "archive": SimpleUploadedFile("photos.zip", make_zip({"obama.jpg": faces.read(OBAMA)})),
            "manifest": SimpleUploadedFile("manifest.csv", csv_bytes("code,file", "P-1,obama.jpg")),
        },
    )
    queued = client.get(response["Location"]).json()
    services.enrolment_batch_process(batch_id=response.json()["id"])
    done = client.get(response["Location"]).json()

    # then
    assert response.status_code == 202 and response.json()["url"] == response["Location"]
    assert (queued["status"], queued["rows_total"], queued["report"]) == ("queued", 1, [])
    assert (done["status"], done["enrolled"], done["report"][0]["code"]) == ("done", 1, "P-1")


def test_erasing_a_subject_takes_it_out_of_the_api_and_is_recorded(client, dana, enrol):
    subject = enrol("OBAMA-REF", OBAMA)
    client.force_login(dana)

    erased = client.delete(reverse("subject-detail", args=[subject.pk]))
    after = client.get(reverse("subject-detail", args=[subject.pk]))
    listing = client.get(reverse("gallery-subjects", args=[subject.gallery_id])).json()

    assert (erased.status_code, after.status_code, listing["count"]) == (204, 404, 0)
    assert AuditEvent.objects.filter(action="subject.erase", actor=dana).exists()


# Audit results


def test_reviewers_read_their_organisations_audit_runs_and_documents(client, bob, org):
    run = audit_run_rows(org)
    client.force_login(bob)

    listing = client.get(reverse("audit-run-list")).json()
    document = client.get(reverse("audit-run-detail", args=[run.pk])).json()

    assert [r["id"] for r in listing["results"]] == [run.pk]
    assert document["run"]["id"] == run.pk and [g["key"] for g in document["groups"]] == ["all"]


def test_another_organisation_sees_no_audit_run(client, erin, org):
    run = audit_run_rows(org)
    client.force_login(erin)

    listing = client.get(reverse("audit-run-list")).json()
    detail = client.get(reverse("audit-run-detail", args=[run.pk]))

    assert (listing["count"], detail.status_code) == (0, 404)
