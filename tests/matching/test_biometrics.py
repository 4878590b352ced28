from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.fernet import Fernet
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from matching import services
from matching.models import Candidate, EnrolmentBatch, Face, Outcome, Photo, Search
from matching.sealing import SealError, encoding_keys, encoding_open, encoding_seal
from portal.models import AuditEvent
from tests.conftest import BIDEN, OBAMA, OBAMA_2
from tests.matching.test_bulk import csv_bytes, make_zip


def test_encodings_are_encrypted_at_rest(enrol):
    subject = enrol("OBAMA-REF", OBAMA)

    face = Face.objects.get(subject=subject)
    stored = bytes(face.encoding)
    assert len(face.vector) == 128
    assert face.vector.tobytes() not in stored and len(stored) > 1024


def test_a_wrong_key_cannot_read_encodings(settings):
    blob = encoding_seal(np.arange(128.0))
    settings.FACE_ENCODING_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(SealError, match="cannot be decrypted"):
        encoding_open(blob)


def test_key_rotation_re_encrypts_every_encoding(settings, enrol):
    # Rows other tests committed for the session were sealed with the default key; it stays readable too.
    default = list(encoding_keys())
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FACE_ENCODING_KEYS = [old, *default]
    subject = enrol("OBAMA-REF", OBAMA)
    before = Face.objects.get(subject=subject).vector.copy()

    # When the new key goes first and the command runs
    settings.FACE_ENCODING_KEYS = [new, old, *default]
    out = io.StringIO()
    call_command("rotate_encoding_key", stdout=out)

    # Then the new key alone reads everything, and the old key alone reads nothing
    settings.FACE_ENCODING_KEYS = [new]
    assert np.array_equal(Face.objects.get(subject=subject).vector, before)
    settings.FACE_ENCODING_KEYS = [old]
    with pytest.raises(SealError):
        _ = Face.objects.get(subject=subject).vector
    assert "faces: 1 encodings re-encrypted" in out.getvalue()


def test_erasing_a_subject_removes_photos_and_encodings_and_the_cache_follows_at_once(
    enrol, open_case, dana, media_root
):
    obama = enrol("OBAMA-REF", OBAMA)
    enrol("BIDEN-REF", BIDEN)
    first = open_case(OBAMA_2, reference="E-1")
    assert first.candidates.get().subject == obama  # the cache now holds Obama
    photo = obama.photos.get()
    files = [photo.image.path, Face.objects.get(subject=obama).crop.path]

    services.subject_erase(subject=obama, acting_user=dana)

    face = Face.objects.get(subject=obama)
    assert bytes(face.encoding) == b"" and face.purged_at is not None
    assert not any(os.path.exists(f) for f in files)
    obama.refresh_from_db()
    assert obama.erased_at is not None and obama.display_name == ""
    # The very next search, in the same process with its cached matrix, no longer finds the subject.
    second = open_case(OBAMA_2, reference="E-2")
    assert not second.candidates.exists()
    assert Search.objects.get(face__photo__case=second).gallery_faces == 1
    assert AuditEvent.objects.filter(action="subject.erase", actor=dana).exists()


def test_erasure_closes_open_candidates_and_keeps_decided_history(enrol, open_case, dana):
    obama = enrol("OBAMA-REF", OBAMA)
    case = open_case(OBAMA_2)

    services.subject_erase(subject=obama, acting_user=dana)

    candidate = Candidate.objects.get(case=case)
    assert candidate.outcome == Outcome.REJECTED and "erased" in candidate.outcome_reason


def test_retention_purges_biometrics_of_cases_closed_past_the_policy(enrol, open_case, alice, org):
    enrol("OBAMA-REF", OBAMA)
    org.retention_days = 30
    org.save()
    old = services.case_close(case=open_case(OBAMA_2, reference="OLD"), acting_user=alice, reason="Found.")
    recent = services.case_close(case=open_case(OBAMA_2, reference="RECENT"), acting_user=alice, reason="Found.")
    type(old).objects.filter(pk=old.pk).update(closed_at=timezone.now() - timedelta(days=31))
    type(recent).objects.filter(pk=recent.pk).update(closed_at=timezone.now() - timedelta(days=10))
    old_photo = old.photos.get()
    old_file = old_photo.image.path

    purged = services.cases_purge_expired()

    assert purged == 1
    old_photo.refresh_from_db()
    assert not os.path.exists(old_file) and old_photo.purged_at and not old_photo.image
    assert all(bytes(f.encoding) == b"" and not f.crop for f in Face.objects.filter(photo__case=old))
    # The trail stays: searches, candidates and the audit log, without biometrics.
    assert Search.objects.filter(face__photo__case=old).exists() and old.candidates.exists()
    assert AuditEvent.objects.filter(action="case.purge", target_id=str(old.pk)).exists()
    assert all(bytes(f.encoding) for f in Face.objects.filter(photo__case=recent))
    assert services.cases_purge_expired() == 0  # running again does nothing more


def _jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (64, 48), (120, 80, 60))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    gps = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}
    exif[0x8825] = gps
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_stored_photos_carry_no_exif_and_originals_only_by_choice(alice, org):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = _jpeg_with_gps()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)

    def upload(reference: str) -> Photo:
        case = services.case_create(
            organisation=org,
            acting_user=alice,
            reference=reference,
            title="t",
            purpose="p",
            photos=[services.uploaded_image_read(SimpleUploadedFile("gps.jpg", data))],
        )
        return case.photos.get()

    plain = upload("NO-ORIGINAL")
    org.keep_originals = True
    org.save()
    kept = upload("WITH-ORIGINAL")

    with plain.image.open("rb") as handle:
        assert not Image.open(io.BytesIO(handle.read())).getexif()
    assert not plain.original
    with kept.original.open("rb") as handle:
        assert handle.read() == data


def _modes_below(root: Path, path: Path) -> list[tuple[str, str]]:
    """The mode of the file and of each folder between it and the media root."""
    modes = [(path.name, oct(path.stat().st_mode & 0o777))]
    for folder in path.relative_to(root).parents:
        if folder != Path("."):
            modes.append((f"{folder}/", oct((root / folder).stat().st_mode & 0o777)))
    return modes


def test_uploads_and_bulk_archives_are_stored_0600_in_folders_0700(client, alice, dana, org, faces, media_root):
    # given: an organisation that keeps the originals, so that every kind of upload is stored
    org.keep_originals = True
    org.save(update_fields=["keep_originals"])
    gallery = services.gallery_create(organisation=org, name="Register", acting_user=dana)

    # when: a caseworker files a case with a photo, and the org admin imports a zip and a CSV, over the API
    client.force_login(alice)
    case = client.post(
        reverse("case-list"),
        {"reference": "PERM-1", "title": "t", "purpose": "p", "photos": [faces.upload(OBAMA)]},
    )
    client.force_login(dana)
    batch = client.post(
        reverse("gallery-imports", args=[gallery.pk]),
        {
            "archive": SimpleUploadedFile("photos.zip", make_zip({"obama.jpg": faces.read(OBAMA)})),
            "manifest": SimpleUploadedFile("manifest.csv", csv_bytes("code,file", "P-1,obama.jpg")),
        },
    )

    # then: each file is the owner's alone, and so is each folder the storage made for it
    assert (case.status_code, batch.status_code) == (201, 202)
    photo = Photo.objects.get(case_id=case.json()["id"])
    stored = EnrolmentBatch.objects.get(pk=batch.json()["id"])
    files = [Path(f.path) for f in (photo.image, photo.original, stored.archive, stored.manifest)]
    for path in files:
        modes = _modes_below(Path(media_root), path)
        assert modes == [(name, "0o700" if name.endswith("/") else "0o600") for name, _ in modes]
