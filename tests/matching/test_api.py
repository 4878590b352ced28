from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from matching.models import Case, Photo
from tests.conftest import OBAMA, OBAMA_2


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
    assert body["confirmed_matches"] == [] and body["candidates"] == {"pending": 0, "confirmed": 0, "rejected": 0}


def test_bad_photo_gives_a_clear_400_and_stores_nothing(client, alice):
    client.force_login(alice)

    response = client.post(
        reverse("case-list"),
        {"reference": "API-2", "title": "t", "purpose": "p", "photos": [SimpleUploadedFile("x.jpg", b"GIF89a....")]},
    )

    assert response.status_code == 400
    assert "not a JPEG, PNG or WebP" in response.json()["errors"]["photos"][0]["message"]
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
