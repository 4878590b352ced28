"""Capture dates and dates of birth: optional on every way in (the pages, the bulk CSV, the API), refused with a
clear message when malformed, in the future or before 1900, and nothing stored when refused."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from matching import bulk, services
from matching.models import Case, EnrolmentBatch, Photo, Subject, years_between
from tests.conftest import OBAMA, OBAMA_2
from tests.matching.test_bulk import csv_bytes, make_zip

TOMORROW = (timezone.localdate() + datetime.timedelta(days=1)).isoformat()
BAD_DATES = [
    (TOMORROW, "is in the future"),
    ("1899-12-31", "is before 1900"),
    ("2019-02-30", "YYYY-MM-DD"),
    ("30/06/2019", "YYYY-MM-DD"),
    ("yesterday", "YYYY-MM-DD"),
]


def _stored_files(media_root) -> list[Path]:
    return [path for path in Path(media_root).rglob("*") if path.is_file()]


@pytest.fixture
def gallery(org, dana):
    return services.gallery_create(organisation=org, name="Register", acting_user=dana)


# The case form


def test_a_case_keeps_the_date_its_photos_were_taken(client, alice, faces):
    client.force_login(alice)
    response = client.post(
        reverse("matching:case_create"),
        {
            "reference": "D-1",
            "title": "t",
            "purpose": "p",
            "photos": [faces.upload(OBAMA_2)],
            "captured_on": "2013-06-01",
        },
    )
    assert response.status_code == 302
    assert Photo.objects.get().captured_on == datetime.date(2013, 6, 1)


@pytest.mark.parametrize(("value", "message"), BAD_DATES)
def test_a_bad_capture_date_on_the_case_form_is_refused_and_nothing_is_stored(
    client, alice, faces, media_root, value, message
):
    client.force_login(alice)
    before = _stored_files(media_root)

    response = client.post(
        reverse("matching:case_create"),
        {"reference": "D-2", "title": "t", "purpose": "p", "photos": [faces.upload(OBAMA_2)], "captured_on": value},
    )

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Case.objects.exists() and not Photo.objects.exists()
    assert _stored_files(media_root) == before


# The subject form


def test_a_subject_keeps_its_date_of_birth_and_each_photo_its_date_and_age(
    client, dana, gallery, faces, eager_tasks, django_capture_on_commit_callbacks
):
    client.force_login(dana)
    url = reverse("matching:gallery_detail", args=[gallery.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url,
            {
                "subject-code": "P-1",
                "subject-born_on": "2009-03-15",
                "subject-captured_on": "2015-03-14",
                "subject-photos": [faces.upload(OBAMA)],
            },
        )
    assert response.status_code == 302
    subject = Subject.objects.get()
    photo = subject.photos.get()
    assert subject.born_on == datetime.date(2009, 3, 15)
    assert photo.captured_on == datetime.date(2015, 3, 14) and photo.age_at_capture() == 5  # a day before six


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subject-born_on": TOMORROW}, "date of birth"),
        ({"subject-born_on": "1850-01-01"}, "is before 1900"),
        ({"subject-captured_on": "2019-13-01"}, "YYYY-MM-DD"),
        ({"subject-born_on": "2010-01-01", "subject-captured_on": "2009-12-31"}, "before the date of birth"),
    ],
)
def test_a_bad_date_on_the_subject_form_is_refused_and_nothing_is_stored(
    client, dana, gallery, faces, media_root, fields, message
):
    client.force_login(dana)
    before = _stored_files(media_root)

    response = client.post(
        reverse("matching:gallery_detail", args=[gallery.pk]),
        {"subject-code": "P-2", "subject-photos": [faces.upload(OBAMA)], **fields},
    )

    assert response.status_code in (200, 400)
    assert message in response.content.decode()
    assert not Subject.objects.exists() and not Photo.objects.exists()
    assert _stored_files(media_root) == before


def test_a_second_date_of_birth_for_a_subject_is_refused(gallery, dana, faces):
    upload = services.uploaded_image_read(faces.upload(OBAMA))
    services.subject_enrol(
        gallery=gallery, code="P-3", born_on=datetime.date(2001, 1, 1), photos=[upload], acting_user=dana
    )

    with pytest.raises(services.ServiceError, match="enrolled with the date of birth 2001-01-01, not 2002-02-02"):
        services.subject_enrol(
            gallery=gallery, code="P-3", born_on=datetime.date(2002, 2, 2), photos=[upload], acting_user=dana
        )
    assert Photo.objects.count() == 1 and Subject.objects.get().born_on == datetime.date(2001, 1, 1)


# The bulk CSV


def test_the_bulk_csv_takes_a_date_of_birth_and_a_capture_date_per_row(
    gallery, dana, faces, eager_tasks, django_capture_on_commit_callbacks
):
    manifest = csv_bytes(
        "code,file,date_of_birth,captured_on",
        "B-1,a.jpg,2005-07-01,2012-07-01",
        "B-1,b.jpg,2005-07-01,",
    )
    archive = make_zip({"a.jpg": faces.read(OBAMA), "b.jpg": faces.read(OBAMA_2)})
    with django_capture_on_commit_callbacks(execute=True):
        services.enrolment_batch_create(
            gallery=gallery, archive=_upload(archive), manifest=_upload(manifest), acting_user=dana
        )

    subject = Subject.objects.get()
    assert subject.born_on == datetime.date(2005, 7, 1)
    dates = sorted((p.original_name, p.captured_on) for p in subject.photos.all())
    assert dates == [("a.jpg", datetime.date(2012, 7, 1)), ("b.jpg", None)]
    assert subject.photos.get(original_name="a.jpg").age_at_capture() == 7


@pytest.mark.parametrize(("value", "message"), BAD_DATES)
def test_a_bad_date_in_the_bulk_csv_refuses_the_upload_naming_the_line(gallery, dana, value, message):
    manifest = csv_bytes("code,file,captured_on", "B-1,a.jpg,2012-07-01", f"B-2,b.jpg,{value}")

    with pytest.raises(bulk.BulkRejected) as refused:
        services.enrolment_batch_create(
            gallery=gallery, archive=_upload(make_zip({"a.jpg": b"x"})), manifest=_upload(manifest), acting_user=dana
        )

    assert str(refused.value).startswith("line 3:") and message in str(refused.value)
    assert not EnrolmentBatch.objects.exists() and not Subject.objects.exists()


def test_the_bulk_csv_refuses_a_photo_taken_before_the_birth_and_two_dates_of_birth_for_one_subject():
    with pytest.raises(bulk.BulkRejected, match="line 2: the photo cannot be taken before the date of birth"):
        bulk.manifest_parse(csv_bytes("code,file,born_on,captured_on", "B-1,a.jpg,2010-01-01,2009-01-01"))
    with pytest.raises(bulk.BulkRejected, match="line 3: subject B-1 is listed with different details"):
        bulk.manifest_parse(csv_bytes("code,file,born_on", "B-1,a.jpg,2010-01-01", "B-1,b.jpg,2011-01-01"))


def test_the_bulk_form_names_every_column_the_readme_allows():
    from matching.forms import BulkEnrolForm

    hint = str(BulkEnrolForm.base_fields["manifest"].help_text)
    for column in (*bulk.REQUIRED_COLUMNS, *bulk.OPTIONAL_COLUMNS, *bulk.COLUMN_ALIASES):
        assert column in hint, column
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for column in (*bulk.REQUIRED_COLUMNS, *bulk.OPTIONAL_COLUMNS, *bulk.COLUMN_ALIASES):
        assert f"`{column}`" in readme, column


# The API


def test_the_api_takes_and_shows_capture_dates(client, alice, dana, faces, gallery):
    client.force_login(alice)
    response = client.post(
        reverse("case-list"),
        {
            "reference": "A-1",
            "title": "t",
            "purpose": "p",
            "photos": [faces.upload(OBAMA_2)],
            "captured_on": "2013-06-01",
        },
    )
    assert response.status_code == 201
    assert response.json()["photos"][0]["captured_on"] == "2013-06-01"

    client.force_login(dana)
    response = client.post(
        reverse("gallery-subjects", args=[gallery.pk]),
        {"code": "S-1", "born_on": "1961-08-04", "captured_on": "2008-11-04", "photos": [faces.upload(OBAMA)]},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["born_on"] == "1961-08-04" and body["photos"][0]["captured_on"] == "2008-11-04"


@pytest.mark.parametrize(("value", "message"), BAD_DATES)
def test_a_bad_capture_date_in_the_api_is_a_400_naming_the_field_and_nothing_is_stored(
    client, alice, faces, value, message
):
    client.force_login(alice)

    response = client.post(
        reverse("case-list"),
        {"reference": "A-2", "title": "t", "purpose": "p", "photos": [faces.upload(OBAMA_2)], "captured_on": value},
    )

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "captured_on" and message in error["message"]
    assert not Case.objects.exists() and not Photo.objects.exists()


def test_the_api_schema_describes_the_dates(client):
    schema = client.get("/api/schema/?format=json").json()
    case_body = schema["components"]["schemas"]["CaseCreateRequest"]["properties"]
    subject = schema["components"]["schemas"]["SubjectDetail"]["properties"]
    assert case_body["captured_on"]["format"] == "date"
    assert subject["born_on"]["format"] == "date"


def test_whole_years_between_two_dates():
    assert years_between(datetime.date(2000, 2, 29), datetime.date(2001, 2, 28)) == 0
    assert years_between(datetime.date(2000, 2, 29), datetime.date(2001, 3, 1)) == 1
    assert years_between(datetime.date(2008, 11, 4), datetime.date(2013, 6, 1)) == 4


def _upload(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("upload", data)


def test_the_case_service_refuses_a_future_date_and_keeps_nothing(org, alice, faces):
    upload = services.uploaded_image_read(faces.upload(OBAMA_2))
    with pytest.raises(services.ServiceError, match="in the future"):
        services.case_create(
            organisation=org,
            acting_user=alice,
            reference="S-1",
            title="t",
            purpose="p",
            photos=[upload],
            captured_on=timezone.localdate() + datetime.timedelta(days=3),
        )
    assert not Case.objects.exists() and not Photo.objects.exists()
