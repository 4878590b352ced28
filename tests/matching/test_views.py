from __future__ import annotations

import io
import os
import re
import struct
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from matching import views
from matching.models import Candidate, Case, Outcome, Photo
from tests.conftest import BIDEN, OBAMA, OBAMA_2, decide
from tests.factories import CaseFactory, candidate_with


def _stored_files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def _case_post(photo: SimpleUploadedFile, reference: str = "C-9") -> dict:
    return {
        "reference": reference,
        "title": "Missing teenager",
        "purpose": "Locate a missing child",
        "photos": [photo],
    }


def _truncated_jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(out, format="JPEG")
    return out.getvalue()[:3000]


def _bomb_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 1_000_000, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


BAD_UPLOADS = {
    "wrong-type": (b"%PDF-1.4 a document, not a photo", "not a JPEG, PNG or WebP"),
    "truncated": (_truncated_jpeg(), "damaged or truncated"),
    "zero-bytes": (b"", "empty"),
    "decompression-bomb": (_bomb_png(), "pixels"),
}


@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_bad_upload_is_refused_on_the_form_and_nothing_is_stored(client, alice, media_root, kind):
    data, message = BAD_UPLOADS[kind]
    client.force_login(alice)
    before = _stored_files(media_root)

    response = client.post(reverse("matching:case_create"), _case_post(SimpleUploadedFile("photo.jpg", data)))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Case.objects.exists() and not Photo.objects.exists()
    assert _stored_files(media_root) == before


def test_file_over_the_size_limit_is_refused(client, alice, media_root, settings, faces):
    settings.UPLOAD_MAX_BYTES = 10_000
    client.force_login(alice)

    response = client.post(reverse("matching:case_create"), _case_post(faces.upload(OBAMA)))

    assert response.status_code == 400
    assert "the limit is 10 KB" in response.content.decode()
    assert not Case.objects.exists() and not Photo.objects.exists()


def test_one_bad_photo_among_good_ones_refuses_the_whole_upload(client, alice, faces):
    client.force_login(alice)
    post = _case_post(faces.upload(OBAMA))
    post["photos"].append(SimpleUploadedFile("notes.jpg", b"just text"))

    response = client.post(reverse("matching:case_create"), post)

    assert response.status_code == 400
    assert "notes.jpg" in response.content.decode()
    assert not Photo.objects.exists()


def test_creating_a_case_returns_at_once_with_queued_photos(client, alice, faces, django_capture_on_commit_callbacks):
    client.force_login(alice)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("matching:case_create"), _case_post(faces.upload(OBAMA)))

    case = Case.objects.get()
    assert response.status_code == 302 and response.url == reverse("matching:case_detail", args=[case.pk])
    assert list(case.photos.values_list("status", flat=True)) == ["queued"]
    assert len(callbacks) == 1  # one task, queued only once the case is committed


def test_duplicate_reference_is_refused_with_a_message(client, alice, faces, open_case):
    open_case(OBAMA_2, reference="C-9", process=False)
    client.force_login(alice)

    response = client.post(reverse("matching:case_create"), _case_post(faces.upload(OBAMA), reference="C-9"))

    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert Case.objects.count() == 1


@pytest.mark.parametrize("reference", ["a/../../b.exe;", "safe\u202efdp.exe"], ids=["path", "right-to-left"])
def test_a_reference_outside_the_safe_characters_is_refused_on_the_form(client, alice, faces, media_root, reference):
    client.force_login(alice)
    before = _stored_files(media_root)

    response = client.post(reverse("matching:case_create"), _case_post(faces.upload(OBAMA), reference=reference))

    assert response.status_code == 400
    assert "A reference may hold only letters A-Z and a-z, digits 0-9, spaces and - _ . /" in response.content.decode()
    assert not Case.objects.exists() and not Photo.objects.exists() and _stored_files(media_root) == before


def test_case_page_shows_counts_but_never_a_pending_subject(client, alice, enrol, open_case):
    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    enrol("BIDEN-REF", BIDEN, display_name="Joe Biden")
    case = open_case(OBAMA_2)
    candidate = case.candidates.get()
    client.force_login(alice)

    page = client.get(reverse("matching:case_detail", args=[case.pk])).content.decode()
    status = client.get(reverse("matching:case_status", args=[case.pk])).json()

    assert "OBAMA-REF" not in page and "Barack Obama" not in page
    assert reverse("matching:face_crop", args=[candidate.reference_face_id]) not in page
    assert status["counts"] == {"pending": 1, "confirmed": 0, "rejected": 0, "not_comparable": 0}
    assert "OBAMA" not in str(status)


def test_caseworker_cannot_fetch_a_pending_candidates_reference_photo(client, alice, enrol, open_case):
    enrol("OBAMA-REF", OBAMA)
    case = open_case(OBAMA_2)
    candidate = case.candidates.get()
    client.force_login(alice)

    crop = client.get(reverse("matching:face_crop", args=[candidate.reference_face_id]))
    photo = client.get(reverse("matching:photo_image", args=[candidate.reference_face.photo_id]))

    assert (crop.status_code, photo.status_code) == (404, 404)


def test_confirmed_match_is_shown_with_reviewer_reason_and_photo(client, alice, reviewers, enrol, open_case):
    bob, rita = reviewers

    enrol("OBAMA-REF", OBAMA, display_name="Barack Obama")
    case = open_case(OBAMA_2)
    candidate = case.candidates.get()
    decide(candidate, bob, reason="Same nose, ears and scar.")
    decide(candidate, rita, conclusion="probable", reason="Ears and hairline agree.")
    client.force_login(alice)

    page = client.get(reverse("matching:case_detail", args=[case.pk])).content.decode()
    crop = client.get(reverse("matching:face_crop", args=[candidate.reference_face_id]))

    assert "OBAMA-REF" in page and "Barack Obama" in page
    assert "Same nose, ears and scar." in page and "bob" in page
    assert crop.status_code == 200 and crop["Content-Type"] == "image/jpeg"
    assert candidate.__class__.objects.get(pk=candidate.pk).outcome == Outcome.CONFIRMED


def test_media_is_private_and_uncached(client, alice, open_case):
    case = open_case(OBAMA_2, process=False)
    photo = case.photos.get()
    client.force_login(alice)

    response = client.get(reverse("matching:photo_image", args=[photo.pk]))

    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    client.logout()
    assert client.get(reverse("matching:photo_image", args=[photo.pk])).status_code == 302


# The case list


def _references(response) -> list[str]:
    return [row["case"].reference for row in response.context["rows"]]


def test_every_case_is_reachable_through_the_case_list_pages(client, alice, org, monkeypatch):
    # Given more cases than one page holds
    monkeypatch.setattr(views, "CASES_PER_PAGE", 2)
    for number in range(5):
        CaseFactory(organisation=org, created_by=alice, reference=f"P-{number}")
    client.force_login(alice)

    # When the caseworker walks through the pages, newest first
    pages = [_references(client.get(reverse("matching:case_list"), {"page": n})) for n in (1, 2, 3)]

    # Then every case appears once, the oldest on the last page
    assert pages == [["P-4", "P-3"], ["P-2", "P-1"], ["P-0"]]
    assert "Page 3 of 3 · 5 cases" in client.get(reverse("matching:case_list"), {"page": 3}).content.decode()


@pytest.mark.parametrize("page", ["abc", "-1", "999", "1.5", "\x00", "9" * 400])
def test_a_page_number_that_is_not_one_shows_the_nearest_page(client, alice, org, monkeypatch, page):
    monkeypatch.setattr(views, "CASES_PER_PAGE", 2)
    for number in range(3):
        CaseFactory(organisation=org, created_by=alice, reference=f"P-{number}")
    client.force_login(alice)

    response = client.get(reverse("matching:case_list"), {"page": page})

    assert response.status_code == 200
    assert len(_references(response)) in (1, 2)


def test_the_case_list_finds_cases_by_reference_or_title_in_one_organisation(client, alice, org, other_org):
    CaseFactory(organisation=org, created_by=alice, reference="TR-2026-17", title="Girl, 14, last seen at Dover")
    CaseFactory(organisation=org, created_by=alice, reference="MP-2026-03", title="Boy, 9")
    CaseFactory(organisation=other_org, reference="TR-2026-99", title="Other organisation's case")
    client.force_login(alice)

    def found(query: str) -> list[str]:
        return sorted(_references(client.get(reverse("matching:case_list"), {"q": query})))

    assert found("tr-2026") == ["TR-2026-17"]
    assert found("dover") == ["TR-2026-17"]
    assert found("2026") == ["MP-2026-03", "TR-2026-17"]
    assert found("%") == [] and found("' OR 1=1 --") == []
    response = client.get(reverse("matching:case_list"), {"q": "<script>x</script>" + "y" * 500})
    assert response.status_code == 200 and b"<script>x" not in response.content
    assert "contains “&lt;script&gt;x&lt;/script&gt;yyy" in response.content.decode()


def test_the_case_list_shows_photo_progress_and_review_counts_but_no_subject(client, alice, bob, org):
    # Given one case with a pending and a confirmed candidate, and a failed photo
    pending = candidate_with(organisation=org, created_by=alice, subject={"code": "SECRET-SUBJECT"})
    confirmed = candidate_with(organisation=org)
    Candidate.objects.filter(pk=confirmed.pk).update(
        case=pending.case, outcome=Outcome.CONFIRMED, outcome_by=bob, outcome_at=timezone.now(), outcome_reason="Agree."
    )
    Photo.objects.filter(pk=confirmed.search.face.photo_id).update(
        case=pending.case, status="failed", failure_reason="No face could be read."
    )
    confirmed.case.delete()
    client.force_login(alice)

    response = client.get(reverse("matching:case_list"))

    (row,) = response.context["rows"]
    assert (row["photos_done"], row["photos_failed"], row["photos_working"]) == (1, 1, 0)
    assert (row["pending"], row["confirmed"]) == (1, 1)
    assert b"SECRET-SUBJECT" not in response.content


def test_a_photo_with_no_face_shows_a_warning_not_a_finished_search(client, alice, org):
    # Given a case whose only photo finished with no face found, and another case with a searched photo
    empty = CaseFactory(organisation=org, created_by=alice, reference="NF-1")
    Photo.objects.create(organisation=org, kind="probe", case=empty, image="p.jpg", width=10, height=10, status="done")
    searched = candidate_with(organisation=org, created_by=alice)
    client.force_login(alice)

    # When the caseworker opens the case, its live status and the case list
    page = client.get(reverse("matching:case_detail", args=[empty.pk])).content.decode()
    status = client.get(reverse("matching:case_status", args=[empty.pk])).json()["photos"][0]
    listing = client.get(reverse("matching:case_list")).content.decode()

    # Then each says that no face was found and no search ran, in the warning style, never "Done · 0 faces"
    assert 'class="status status-noface"' in page and "No face found" in page
    assert "No search ran; try a clearer photo." in page
    assert "status-done" not in page and "0 faces" not in page
    assert (status["no_face"], status["status_display"]) == (True, "No face found")
    assert status["failure_reason"] == "No search ran; try a clearer photo."
    row = next(r for r in listing.split("<tr>") if "NF-1" in r)
    assert "1 no face found" in row and "status-done" not in row
    other = next(r for r in listing.split("<tr>") if searched.case.reference in r)
    assert "1 done" in other and "no face" not in other


def test_a_confirmed_match_lists_every_confirming_reviewer(client, alice, reviewers, org):
    # Given a candidate that bob and then rita confirmed under the two-reviewer policy
    bob, rita = reviewers
    candidate = candidate_with(organisation=org, created_by=alice)
    decide(candidate, bob, reason="Ears and jaw agree.")
    decide(candidate, rita, conclusion="probable", reason="Nose and eyebrows agree.")
    candidate.refresh_from_db()
    assert candidate.outcome == Outcome.CONFIRMED

    # When the caseworker opens the case
    client.force_login(alice)
    page = client.get(reverse("matching:case_detail", args=[candidate.case_id])).content.decode()

    # Then the match names both reviewers, not only rita, who settled it
    (cell,) = re.findall(r'<td class="reviewers">(.*?)</td>', page, re.S)
    assert cell.split("<br>") == ["bob", "rita"]
