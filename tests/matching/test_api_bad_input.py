"""Malformed input to the API: a clear 4xx in the common error shape, and nothing half-stored."""

from __future__ import annotations

import json
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from matching import services
from matching.models import Case, EnrolmentBatch, Gallery, Photo, Subject
from portal.models import AuditEvent
from tests.conftest import OBAMA
from tests.matching.test_bulk import BAD_BULK, GOOD_CSV, make_zip


def stored_files(media_root) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(media_root) for f in fs)


def errors_of(response) -> list[tuple]:
    """(field, code) of each error; also asserts the body has the common shape and nothing more."""
    body = response.json()
    assert set(body) == {"errors"} and body["errors"], body
    assert all(set(e) == {"field", "code", "message"} and e["message"] for e in body["errors"]), body
    return [(e["field"], e["code"]) for e in body["errors"]]


@pytest.fixture
def gallery(org, dana):
    return services.gallery_create(organisation=org, name="Register", acting_user=dana)


def case_post(**fields) -> dict:
    return {"reference": "API-9", "title": "Missing child", "purpose": "Locate a missing child", **fields}


# JSON bodies: galleries


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "G", "colour": "red"}, [("colour", "unknown_field")]),
        ({"name": 123}, [("name", "invalid")]),
        ({"name": ["G"]}, [("name", "invalid")]),
        ({"name": None}, [("name", "invalid")]),
        ({"name": "G" * 201}, [("name", "max_length")]),
        ({"name": "G", "description": "d" * 5_001}, [("description", "max_length")]),
        ({"name": "   "}, [("name", "blank")]),
        ({}, [("name", "required")]),
        (["G"], [(None, "invalid")]),
        ("G", [(None, "invalid")]),
    ],
    ids=["unknown", "number", "list", "null", "long-name", "long-description", "blank", "empty", "array", "string"],
)
def test_gallery_create_refuses_malformed_json_and_stores_nothing(client, dana, body, expected):
    client.force_login(dana)

    response = client.post(reverse("gallery-list"), json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert errors_of(response) == expected
    assert not Gallery.objects.exists() and not AuditEvent.objects.filter(action="gallery.create").exists()


def test_unparseable_json_is_a_400(client, dana):
    client.force_login(dana)

    response = client.post(reverse("gallery-list"), '{"name": "G",', content_type="application/json")

    assert response.status_code == 400 and errors_of(response) == [(None, "parse_error")]


def test_a_json_body_over_the_memory_limit_is_refused_unread(client, dana, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    client.force_login(dana)

    response = client.post(
        reverse("gallery-list"), json.dumps({"name": "G", "description": "d" * 2_000}), content_type="application/json"
    )

    assert response.status_code == 413 and errors_of(response) == [(None, "too_large")]


def test_duplicate_gallery_name_is_refused_on_the_name(client, dana, gallery):
    client.force_login(dana)

    response = client.post(reverse("gallery-list"), {"name": "Register"}, content_type="application/json")

    assert response.status_code == 400 and errors_of(response) == [("name", "invalid")]
    assert Gallery.objects.count() == 1


# The wrong content type


@pytest.mark.parametrize(
    ("route", "content_type"),
    [
        ("gallery-list", "multipart"),
        ("gallery-list", "text/plain"),
        ("case-list", "application/json"),
        ("gallery-subjects", "application/json"),
        ("gallery-imports", "application/x-www-form-urlencoded"),
    ],
)
def test_the_wrong_content_type_is_a_415(client, dana, gallery, route, content_type):
    client.force_login(dana)
    url = reverse(route, args=[gallery.pk] if route.startswith("gallery-") and route != "gallery-list" else [])

    if content_type == "multipart":
        response = client.post(url, {"name": "G"})
    else:
        response = client.post(url, "name=G", content_type=content_type)

    assert response.status_code == 415 and errors_of(response) == [(None, "unsupported_media_type")]
    assert Gallery.objects.count() == 1 and not Case.objects.exists() and not Subject.objects.exists()


# Multipart bodies: cases and subjects


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"priority": "high"}, [("priority", "unknown_field")]),
        ({"reference": "R" * 101}, [("reference", "max_length")]),
        ({"reference": "a/../../b.exe;"}, [("reference", "invalid")]),
        ({"reference": "safe\u202efdp.exe"}, [("reference", "invalid")]),
        ({"purpose": ""}, [("purpose", "required")]),
        ({"probe_sex": "X"}, [("probe_sex", "invalid_choice")]),
        ({"probe_age_band": "12"}, [("probe_age_band", "invalid_choice")]),
        ({"photos": "not a file"}, [("photos", "invalid")]),
        ({"description": "\x00"}, [("description", "null_characters_not_allowed")]),
    ],
    ids=[
        "unknown",
        "long-reference",
        "path-in-reference",
        "right-to-left-reference",
        "no-purpose",
        "bad-sex",
        "bad-age-band",
        "photo-as-text",
        "nul",
    ],
)
def test_case_create_refuses_malformed_fields_and_stores_nothing(client, alice, faces, media_root, fields, expected):
    client.force_login(alice)
    before = stored_files(media_root)
    data = case_post(photos=[faces.upload(OBAMA)])
    data.update(fields)

    response = client.post(reverse("case-list"), data)

    assert response.status_code == 400
    assert errors_of(response) == expected
    assert not Case.objects.exists() and not Photo.objects.exists() and stored_files(media_root) == before


def test_case_create_says_which_characters_a_reference_may_hold(client, alice, faces):
    client.force_login(alice)

    response = client.post(reverse("case-list"), case_post(reference="C-1;\u202e", photos=[faces.upload(OBAMA)]))

    [error] = response.json()["errors"]
    assert error["message"].startswith("A reference may hold only letters A-Z and a-z, digits 0-9, spaces and -")
    assert "“;” and U+202E RIGHT-TO-LEFT OVERRIDE" in error["message"]


def test_case_create_refuses_more_photos_than_the_limit(client, alice, faces, settings):
    settings.UPLOAD_MAX_FILES = 2
    client.force_login(alice)

    response = client.post(reverse("case-list"), case_post(photos=[faces.upload(OBAMA) for _ in range(3)]))

    assert response.status_code == 400 and errors_of(response) == [("photos", "invalid")]
    assert not Case.objects.exists()


def test_case_create_with_one_bad_photo_among_good_ones_stores_none(client, alice, faces, media_root):
    client.force_login(alice)
    before = stored_files(media_root)

    response = client.post(
        reverse("case-list"),
        case_post(photos=[faces.upload(OBAMA), SimpleUploadedFile("x.jpg", b"\xff\xd8\xff truncated")]),
    )

    assert response.status_code == 400 and errors_of(response) == [("photos", "invalid")]
    assert not Photo.objects.exists() and stored_files(media_root) == before


def test_duplicate_case_reference_is_refused(client, alice, faces):
    client.force_login(alice)
    client.post(reverse("case-list"), case_post(photos=[faces.upload(OBAMA)]))

    again = client.post(reverse("case-list"), case_post(photos=[faces.upload(OBAMA)]))

    assert again.status_code == 400 and errors_of(again) == [(None, "invalid")]
    assert Case.objects.count() == 1 and Photo.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"code": ""}, [("code", "required")]),
        ({"code": "C" * 101}, [("code", "max_length")]),
        ({"ethnicity": "Martian"}, [("ethnicity", "invalid_choice")]),
        ({"nickname": "x"}, [("nickname", "unknown_field")]),
        ({"photos": None}, [("photos", "invalid")]),
    ],
    ids=["no-code", "long-code", "bad-ethnicity", "unknown", "no-photos"],
)
def test_subject_enrol_refuses_malformed_fields_and_stores_nothing(client, dana, gallery, faces, fields, expected):
    client.force_login(dana)
    data = {"code": "S-1", "photos": [faces.upload(OBAMA)], **fields}
    data = {k: v for k, v in data.items() if v is not None}

    response = client.post(reverse("gallery-subjects", args=[gallery.pk]), data)

    assert response.status_code == 400 and errors_of(response) == expected
    assert not Subject.objects.exists() and not Photo.objects.exists()


# Bulk import: every refusal of matching/bulk.py, through the API


@pytest.mark.parametrize("kind", sorted(BAD_BULK))
def test_bad_bulk_import_is_refused_and_nothing_is_stored(client, dana, gallery, media_root, kind):
    archive, manifest, message = BAD_BULK[kind]
    client.force_login(dana)
    before = stored_files(media_root)

    response = client.post(
        reverse("gallery-imports", args=[gallery.pk]),
        {
            "archive": SimpleUploadedFile("photos.zip", archive, content_type="application/zip"),
            "manifest": SimpleUploadedFile("manifest.csv", manifest, content_type="text/csv"),
        },
    )

    assert response.status_code == 400
    assert errors_of(response) == [(None, "invalid")]
    assert message in response.json()["errors"][0]["message"]
    assert not EnrolmentBatch.objects.exists() and not Subject.objects.exists()
    assert stored_files(media_root) == before


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"manifest": GOOD_CSV}, [("archive", "required")]),
        ({"archive": make_zip({"a.jpg": b"x"}), "manifest": GOOD_CSV, "readme": b"x"}, [("readme", "unknown_field")]),
        ({"archive": b"", "manifest": GOOD_CSV}, [("archive", "empty")]),
    ],
    ids=["no-archive", "extra-file", "empty-archive"],
)
def test_bulk_import_refuses_missing_extra_or_empty_files(client, dana, gallery, files, expected):
    client.force_login(dana)

    response = client.post(
        reverse("gallery-imports", args=[gallery.pk]),
        {name: SimpleUploadedFile(f"{name}.bin", data) for name, data in files.items()},
    )

    assert response.status_code == 400 and errors_of(response) == expected
    assert not EnrolmentBatch.objects.exists()


# Query parameters, ids and methods


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"referance": "C-1"}, [("referance", "unknown_field")]),
        ({"created_after": "last tuesday"}, [("created_after", "invalid")]),
        ({"created_before": "2026-13-45"}, [("created_before", "invalid")]),
        ({"page": "0"}, [("page", "min_value")]),
        ({"page": "x"}, [("page", "invalid")]),
        ({"reference": "R" * 101}, [("reference", "max_length")]),
    ],
    ids=["misspelt", "words", "impossible-date", "page-zero", "page-text", "long"],
)
def test_case_list_refuses_malformed_queries(client, alice, query, expected):
    client.force_login(alice)

    response = client.get(reverse("case-list"), query)

    assert response.status_code == 400 and errors_of(response) == expected


def test_match_list_refuses_a_case_that_is_not_a_number(client, alice):
    client.force_login(alice)

    response = client.get(reverse("match-list"), {"case": "one"})

    assert response.status_code == 400 and errors_of(response) == [("case", "invalid")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # The fuzzer's request: SQLite cannot bind it (OverflowError, a 500), PostgreSQL can but no id is that big.
        ({"case": "99999999999999999999"}, [("case", "max_value")]),
        ({"case": str(2**63)}, [("case", "max_value")]),
        ({"case": "0"}, [("case", "min_value")]),
        ({"case": "1.5"}, [("case", "invalid")]),
        ({"page": "99999999999999999999"}, [("page", "max_value")]),
    ],
    ids=["twenty-digits", "bigint-plus-one", "zero", "fraction", "page-twenty-digits"],
)
def test_match_list_refuses_integers_the_database_cannot_store(client, alice, query, expected):
    client.force_login(alice)

    response = client.get(reverse("match-list"), query)

    assert response.status_code == 400 and errors_of(response) == expected


@pytest.mark.parametrize(
    ("moment", "valid"),
    [
        # The fuzzer's (seed 15, PostgreSQL): an offset Python allows and PostgreSQL refuses, read as UTC.
        ("8296-11-15T19:55:16.1+23:04", True),
        # Moments that leave years 1 to 9999 once in UTC.
        ("9999-12-31T23:00:00-05:00", False),
        ("0001-01-01T00:30:00+01:00", False),
    ],
    ids=["offset-23h", "after-9999", "before-year-1"],
)
def test_match_and_case_lists_read_moments_in_utc_or_refuse_them(client, alice, moment, valid):
    client.force_login(alice)

    matches = client.get(reverse("match-list"), {"confirmed_after": moment})
    cases = client.get(reverse("case-list"), {"created_before": moment})

    if valid:
        assert (matches.status_code, cases.status_code) == (200, 200)
    else:
        assert matches.status_code == 400 and errors_of(matches) == [("confirmed_after", "invalid")]
        assert cases.status_code == 400 and errors_of(cases) == [("created_before", "invalid")]


def test_match_list_accepts_the_largest_id_the_database_stores(client, alice):
    client.force_login(alice)

    response = client.get(reverse("match-list"), {"case": str(2**63 - 1)})

    assert response.status_code == 200 and response.json()["results"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/cases/abc/",
        "/api/cases/-1/",
        "/api/cases/99999999999999999999/",
        "/api/cases/99999999999999999999999/",
        "/api/cases/1/photos/99999999999999999999/",
        "/api/cases/9999999999999999999/",
    ],
)
def test_ids_that_are_not_ids_are_a_json_404(client, alice, path):
    client.force_login(alice)

    response = client.get(path)

    assert response.status_code == 404 and errors_of(response) == [(None, "not_found")]


def test_an_unsupported_method_is_a_405(client, alice):
    client.force_login(alice)

    response = client.put(reverse("case-list"), "{}", content_type="application/json")

    assert response.status_code == 405 and errors_of(response) == [(None, "method_not_allowed")]
