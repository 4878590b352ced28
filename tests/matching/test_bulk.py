from __future__ import annotations

import io
import os
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from matching import services
from matching.models import EnrolmentBatch, Face, Gallery, Photo, Subject
from tests.conftest import BIDEN, OBAMA


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def csv_bytes(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def gallery(org, dana):
    return services.gallery_create(organisation=org, name="Register", acting_user=dana)


def upload(client, gallery, archive: bytes, manifest: bytes):
    return client.post(
        reverse("matching:gallery_detail", args=[gallery.pk]),
        {
            "bulk-archive": SimpleUploadedFile("photos.zip", archive, content_type="application/zip"),
            "bulk-manifest": SimpleUploadedFile("manifest.csv", manifest, content_type="text/csv"),
        },
    )


def test_bulk_enrolment_reports_each_row(client, dana, gallery, faces, eager_tasks, django_capture_on_commit_callbacks):
    # Given a zip with good photos, a photo with no face, a group photo and a text file
    archive = make_zip(
        {
            "obama.jpg": faces.read(OBAMA),
            "obama-again.jpg": faces.read("face_recognition/obama__tests_test_images_obama3.jpg"),
            "biden.jpg": faces.read(BIDEN),
            "empty-room.jpg": faces.read("compreface/017_0.jpg"),
            "group.jpg": faces.read("face_recognition/multi__two_people.jpg"),
            "notes.jpg": b"not a photo",
        }
    )
    manifest = csv_bytes(
        "code,file,display_name,sex,age_band,race",
        "P-1,obama.jpg,Barack Obama,M,45-59,Black",
        "P-1,obama-again.jpg,Barack Obama,M,45-59,Black",
        "P-2,biden.jpg,Joe Biden,M,60+,White",
        "P-3,empty-room.jpg,,,,",
        "P-4,group.jpg,,,,",
        "P-5,notes.jpg,,,,",
        "P-6,missing.jpg,,unknown,,",
    )
    client.force_login(dana)

    # When it is uploaded (the page returns at once) and the worker's task runs
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, gallery, archive, manifest)

    # Then each row says what happened
    batch = EnrolmentBatch.objects.get()
    assert response.status_code == 302 and response.url == reverse("matching:batch_detail", args=[batch.pk])
    report = {row["line"]: (row["status"], row["detail"]) for row in batch.report}
    assert [report[line][0] for line in range(2, 9)] == ["enrolled"] * 3 + ["refused"] * 4
    assert report[5][1] == "no face was found"
    assert report[6][1] == "2 faces were found; one is required"
    assert "not a JPEG, PNG or WebP" in report[7][1]
    assert report[8][1] == "missing.jpg is not in the zip."
    assert (batch.status, batch.rows_done, batch.rows_total) == ("done", 7, 7)
    assert set(Subject.objects.values_list("code", flat=True)) == {"P-1", "P-2"}
    assert Face.objects.filter(subject__code="P-1").count() == 2
    assert Subject.objects.get(code="P-2").ethnicity == "White"

    page = client.get(response.url).content.decode()
    assert "3 enrolled, 4 refused" in page and "no face was found" in page


def test_rerunning_a_batch_enrols_nothing_twice(dana, gallery, faces, eager_tasks, django_capture_on_commit_callbacks):
    archive = make_zip({"obama.jpg": faces.read(OBAMA)})
    with django_capture_on_commit_callbacks(execute=True):
        batch = services.enrolment_batch_create(
            gallery=gallery,
            archive=SimpleUploadedFile("p.zip", archive),
            manifest=SimpleUploadedFile("m.csv", csv_bytes("code,file", "P-1,obama.jpg")),
            acting_user=dana,
        )

    EnrolmentBatch.objects.filter(pk=batch.pk).update(status="running")
    services.enrolment_batch_process(batch_id=batch.pk)

    assert Photo.objects.count() == 1 and len(EnrolmentBatch.objects.get().report) == 1


def _zip_with_traversal() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo("../../etc/evil.jpg"), b"x")
    return out.getvalue()


def _zip_with_absolute_path() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo("/tmp/evil.jpg"), b"x")
    return out.getvalue()


def zip_of_entries(*entries: tuple[str, bytes]) -> bytes:
    """A zip that may name one file twice, as zipfile writes it when asked (with a warning)."""
    import warnings

    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)
        for name, data in entries:
            archive.writestr(name, data)
    return out.getvalue()


# Two entries that an unpacking tool writes to one file: the same name, or names that differ only in letter case,
# a leading ./, the slash, or how an accented letter is encoded.
COLLIDING_NAMES = {
    "same-name": ("a.jpg", "a.jpg"),
    "letter-case": ("a.jpg", "A.JPG"),
    "dot-slash": ("./a.jpg", "a.jpg"),
    "backslash": ("dir\\a.jpg", "dir/a.jpg"),
    "unicode-form": ("caf\u00e9.jpg", "cafe\u0301.jpg"),
}

GOOD_CSV = csv_bytes("code,file", "P-1,a.jpg")
BAD_BULK = {
    "not-a-zip": (b"PK but not really a zip", GOOD_CSV, "not a valid zip"),
    "path-traversal": (_zip_with_traversal(), GOOD_CSV, "climb out"),
    "absolute-path": (_zip_with_absolute_path(), GOOD_CSV, "absolute paths"),
    "nested-zip": (make_zip({"inner.zip": make_zip({"a.jpg": b"x"})}), GOOD_CSV, "archives inside"),
    "zip-bomb": (make_zip({"a.jpg": b"\0" * 50_000_000}), GOOD_CSV, "zip bomb"),
    "duplicate-names": (
        zip_of_entries(("a.jpg", b"first face"), ("a.jpg", b"second face")),
        GOOD_CSV,
        "a.jpg: the zip holds 2 entries that unpack to this one file",
    ),
    "csv-missing-column": (make_zip({"a.jpg": b"x"}), csv_bytes("code", "P-1"), "lacks the column(s): file"),
    "csv-extra-column": (
        make_zip({"a.jpg": b"x"}),
        csv_bytes("code,file,ssn", "P-1,a.jpg,1"),
        "unknown column(s): ssn",
    ),
    "csv-wrong-encoding": (make_zip({"a.jpg": b"x"}), "code,file\nJosé,a.jpg\n".encode("utf-16"), "not UTF-8"),
    "csv-conflicting-duplicate": (
        make_zip({"a.jpg": b"x", "b.jpg": b"x"}),
        csv_bytes("code,file,sex", "P-1,a.jpg,F", "P-1,b.jpg,M"),
        "different details",
    ),
    "csv-bad-value": (
        make_zip({"a.jpg": b"x"}),
        csv_bytes("code,file,age_band", "P-1,a.jpg,teen"),
        "not a valid age band",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_BULK))
def test_bad_bulk_upload_is_refused_and_nothing_is_stored(client, dana, gallery, media_root, kind):
    archive, manifest, message = BAD_BULK[kind]
    client.force_login(dana)
    files_before = sorted(os.path.join(d, f) for d, _, fs in os.walk(media_root) for f in fs)

    response = upload(client, gallery, archive, manifest)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not EnrolmentBatch.objects.exists() and not Subject.objects.exists()
    assert sorted(os.path.join(d, f) for d, _, fs in os.walk(media_root) for f in fs) == files_before


def test_org_admin_creates_a_gallery_and_enrols_a_subject(
    client, dana, faces, eager_tasks, django_capture_on_commit_callbacks
):
    client.force_login(dana)

    client.post(reverse("matching:gallery_list"), {"name": "Register"})
    gallery = Gallery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("matching:gallery_detail", args=[gallery.pk]),
            {"subject-code": "P-9", "subject-age_band": "0-9", "subject-photos": [faces.upload(OBAMA)]},
        )

    assert response.status_code == 302
    subject = Subject.objects.get()
    assert (subject.code, subject.age_band, subject.faces.count()) == ("P-9", "0-9", 1)


def test_caseworker_cannot_reach_gallery_pages(client, alice, gallery):
    client.force_login(alice)

    assert client.get(reverse("matching:gallery_list")).status_code == 404
    assert client.get(reverse("matching:gallery_detail", args=[gallery.pk])).status_code == 404


@pytest.mark.parametrize("kind", sorted(COLLIDING_NAMES))
def test_a_zip_naming_one_file_twice_is_refused_by_its_check_and_its_reader(kind):
    from matching import bulk

    first, second = COLLIDING_NAMES[kind]
    archive = zip_of_entries((first, b"first face"), (second, b"second face"))

    with pytest.raises(bulk.BulkRejected, match="the zip holds 2 entries that unpack to this one file") as checked:
        bulk.archive_check(archive, max_members=10)
    with pytest.raises(bulk.BulkRejected, match="the zip holds 2 entries that unpack to this one file"):
        bulk.SafeArchive(archive)
    assert first in str(checked.value) and second in str(checked.value)


def test_a_stored_batch_whose_zip_names_one_file_twice_fails_and_enrols_nothing(dana, gallery):
    # Given a batch stored before duplicate names were refused
    from django.core.files.base import ContentFile

    batch = EnrolmentBatch(gallery=gallery, created_by=dana, rows_total=1, status="running")
    batch.archive.save("old.zip", ContentFile(zip_of_entries(("a.jpg", b"1"), ("a.jpg", b"2"))), save=False)
    batch.manifest.save("old.csv", ContentFile(GOOD_CSV), save=False)
    batch.save()

    # When the worker processes it
    services.enrolment_batch_process(batch_id=batch.pk)

    # Then it fails, saying why, and nothing of it is enrolled
    batch.refresh_from_db()
    assert batch.status == "failed" and "a.jpg: the zip holds 2 entries" in batch.failure_reason
    assert not Subject.objects.exists() and not Photo.objects.exists()
