"""The request-size guard: an over-large body is refused before any of it is read or stored."""

from __future__ import annotations

import os

from django.urls import reverse

from matching.models import Case, Photo
from tests.conftest import OBAMA_2


def _stored_files(root) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def _case_post(client, faces, reference: str, path: str):
    return client.post(
        path,
        {
            "reference": reference,
            "title": "Missing child",
            "purpose": "Locate a missing child",
            "photos": [faces.upload(OBAMA_2)],
        },
    )


def test_a_case_upload_over_the_request_limit_is_refused_and_stores_nothing(client, alice, faces, settings, media_root):
    # Given a request limit smaller than one photo
    settings.REQUEST_MAX_BYTES = 16 * 1024
    client.force_login(alice)
    before = _stored_files(media_root)

    # When a caseworker uploads a case with that photo
    response = _case_post(client, faces, "BIG-1", reverse("matching:case_create"))

    # Then it is refused with the sizes, and nothing is stored
    assert response.status_code == 413
    assert "the limit is 16 KB per request" in response.content.decode()
    assert not response.has_header("Connection")  # hop-by-hop: a WSGI server refuses it from the app
    assert not Case.objects.exists() and not Photo.objects.exists()
    assert _stored_files(media_root) == before


def test_an_api_upload_over_the_request_limit_gets_a_json_413(client, alice, faces, settings):
    settings.REQUEST_MAX_BYTES = 16 * 1024
    client.force_login(alice)

    response = _case_post(client, faces, "BIG-2", reverse("case-list"))

    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "request_too_large"
    assert not Case.objects.exists()


def test_an_upload_within_the_limit_goes_through(client, alice, faces, settings, django_capture_on_commit_callbacks):
    settings.REQUEST_MAX_BYTES = 2 * 1024 * 1024
    client.force_login(alice)

    assert _case_post(client, faces, "OK-1", reverse("matching:case_create")).status_code == 302
    assert Case.objects.filter(reference="OK-1").exists()


def test_a_content_length_that_is_not_a_number_is_not_taken_for_a_size(client, alice, settings):
    settings.REQUEST_MAX_BYTES = 10
    client.force_login(alice)

    response = client.get(reverse("matching:case_list"), CONTENT_LENGTH="lots")

    assert response.status_code == 200


# Cache-Control: nothing the portal renders may be kept by a browser or a proxy


def test_every_page_with_case_or_subject_data_says_no_store(client, org, alice, bob, dana):
    from tests.factories import candidate_with

    # given: a case with a candidate, seen by its caseworker, a reviewer and the org admin
    candidate = candidate_with(organisation=org, created_by=alice)
    pages = [
        (alice, reverse("matching:case_list")),
        (alice, reverse("matching:case_detail", args=[candidate.case_id])),
        (dana, reverse("matching:gallery_detail", args=[candidate.subject.gallery_id])),
        (bob, reverse("admin:reviews_reviewitem_changelist")),
        (bob, reverse("admin:reviews_reviewitem_change", args=[candidate.pk])),
    ]
    for user, path in pages:
        client.force_login(user)

        # when
        response = client.get(path)

        # then: the admin's own never_cache says more, and no-store too
        cache_control = {part.strip() for part in response.get("Cache-Control", "").split(",")}
        assert (path, response.status_code) == (path, 200) and {"private", "no-store"} <= cache_control, cache_control


def test_every_api_answer_with_case_or_subject_data_says_no_store(client, org, alice, dana):
    from tests.factories import candidate_with

    candidate = candidate_with(organisation=org, created_by=alice)
    calls = [
        (alice, reverse("case-list"), 200),
        (alice, reverse("case-detail", args=[candidate.case_id]), 200),
        (alice, reverse("match-list"), 200),
        (dana, reverse("subject-detail", args=[candidate.subject_id]), 200),
        (dana, reverse("gallery-subjects", args=[candidate.subject.gallery_id]), 200),
        # refusals and errors too: they say which ids exist
        (alice, reverse("case-list") + "?case=1", 400),
        (alice, "/api/cases/999999/", 404),
    ]
    for user, path, status in calls:
        client.force_login(user)

        response = client.get(path)

        assert response["Content-Type"] == "application/json"
        assert (path, response.status_code, response.get("Cache-Control")) == (path, status, "private, no-store")
