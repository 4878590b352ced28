"""A photo in flight against erasure and the purge: detection runs without a lock, so whatever happened to the
photo, its subject or its case meanwhile is decided again when the worker stores what it found.

Each interleaving is made deterministic by pausing the worker at a step boundary: `photo_detect` (the slow part,
outside any transaction) waits on an event; `_faces_store` (inside the storing transaction, after its locks)
waits on another. No sleeps.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from matching import services
from matching.models import Candidate, Case, Face, GalleryChange, Photo, PhotoStatus, Search, Subject
from matching.services import processing, searching
from portal.models import Organisation
from tests.conftest import OBAMA, OBAMA_2, wait_for


def _media_files(root: Path) -> set[Path]:
    """Every face file under MEDIA_ROOT: crops, aligned images and thumbnails."""
    return {path for folder in ("crops", "aligned", "thumbnails") for path in (root / folder).rglob("*.jpg")}


class PausedWorker:
    """`photo_process` in its own thread and connection, stopped at a step boundary until released."""

    def __init__(self, monkeypatch, photo_id: int, *, at: str) -> None:
        self.paused, self.release = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        real = getattr(processing, at)

        def pausing(*args, **kwargs):
            result = real(*args, **kwargs) if at == "photo_detect" else None
            self.paused.set()
            assert self.release.wait(60), "the test never released the worker"
            return result if at == "photo_detect" else real(*args, **kwargs)

        monkeypatch.setattr(processing, at, pausing)
        self.thread = threading.Thread(target=self._run, args=(photo_id,))

    def _run(self, photo_id: int) -> None:
        try:
            services.photo_process(photo_id=photo_id)
            if not self.paused.is_set():
                raise AssertionError("photo_process returned without reaching its pause: was the photo claimed?")
        except BaseException as error:  # reported by the main thread
            self.errors.append(error)
            self.paused.set()
        finally:
            connections.close_all()

    def __enter__(self) -> PausedWorker:
        self.thread.start()
        assert self.paused.wait(120), "the worker never reached its pause"
        assert not self.errors, self.errors
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(120)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """These tests play the worker themselves. A photo's task must not also reach a real worker that an earlier
    test of the session started: it would claim the photo first, and the paused worker would find it taken."""
    monkeypatch.setattr("portal.outbox._publish_after_commit", lambda row_id: None)


@pytest.fixture
def reference_photo(dana, faces):
    """A subject whose reference photo is queued for the worker, not yet processed."""
    gallery = services.gallery_create(organisation=dana.membership.organisation, name="Reference", acting_user=dana)
    subject = services.subject_enrol(
        gallery=gallery, code="OBAMA-REF", photos=[services.uploaded_image_read(faces.upload(OBAMA))], acting_user=dana
    )
    return subject.photos.get()


def _gone_for_reviewers(client, bob, faces) -> None:
    client.force_login(bob)
    for face in faces:
        assert client.get(reverse("matching:face_crop", args=[face.pk])).status_code in (404, 410)
        assert client.get(reverse("matching:face_aligned", args=[face.pk])).status_code in (404, 410)


@pytest.mark.django_db(transaction=True)
def test_erasing_a_subject_while_its_reference_photo_is_detected_stores_nothing(
    monkeypatch, client, dana, bob, media_root, reference_photo, open_case
):
    # Given a worker that has detected the subject's face and not yet stored it
    subject = reference_photo.subject
    before = _media_files(media_root)
    with PausedWorker(monkeypatch, reference_photo.pk, at="photo_detect"):
        # When the org admin erases the subject meanwhile, and the worker then goes on
        services.subject_erase(subject=Subject.objects.get(pk=subject.pk), acting_user=dana)

    # Then nothing of the subject was stored: no live face, no encoding, no file, nothing added to the gallery
    assert not Face.objects.filter(subject=subject, purged_at__isnull=True).exists()
    assert not Face.objects.filter(subject=subject).exclude(encoding=b"").exists()
    assert _media_files(media_root) == before
    assert not GalleryChange.objects.filter(kind="add").exists()
    reference_photo.refresh_from_db()
    assert reference_photo.status == PhotoStatus.FAILED and "erased" in reference_photo.failure_reason
    # and no face of the subject is served, nor found by a later search
    _gone_for_reviewers(client, bob, Face.objects.filter(subject=subject))
    assert not open_case(OBAMA_2, reference="AFTER").candidates.exists()


@pytest.mark.postgresql_only(reason="The worker's storing transaction and the erasure are ordered by row locks.")
@pytest.mark.django_db(transaction=True)
def test_an_erasure_that_waits_for_the_storing_worker_deletes_all_it_stored(
    monkeypatch, client, dana, bob, media_root, reference_photo
):
    # Given a worker inside its storing transaction, its locks taken, about to write the face
    subject = reference_photo.subject
    before = _media_files(media_root)
    erasure_pid: list[int] = []
    errors: list[BaseException] = []

    def erase() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                erasure_pid.append(cursor.fetchone()[0])
            services.subject_erase(subject=Subject.objects.get(pk=subject.pk), acting_user=dana)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connections.close_all()

    def erasure_waits() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", erasure_pid[:1] or [0])
            return cursor.fetchone() is not None

    erasure = threading.Thread(target=erase)
    with PausedWorker(monkeypatch, reference_photo.pk, at="_faces_store"):
        # When the org admin erases the subject meanwhile (the erasure waits for a lock the worker holds)
        erasure.start()
        wait_for(erasure_waits, timeout=30, message="the erasure to wait for the worker's lock")
    erasure.join(60)
    assert not errors, errors

    # Then the erasure, which ran after the worker committed, took away the face and every file it wrote
    assert Face.objects.filter(subject=subject).exists()
    assert not Face.objects.filter(subject=subject, purged_at__isnull=True).exists()
    assert not Face.objects.filter(subject=subject).exclude(encoding=b"").exists()
    assert _media_files(media_root) == before
    _gone_for_reviewers(client, bob, Face.objects.filter(subject=subject))


@pytest.mark.django_db(transaction=True)
def test_purging_a_case_while_its_probe_photo_is_detected_stores_nothing(
    monkeypatch, alice, bob, client, media_root, enrol, open_case
):
    # Given a closed case past its retention whose probe photo a worker has detected and not yet stored
    enrol("OBAMA-REF", OBAMA)
    organisation = Organisation.objects.get(pk=alice.membership.organisation_id)
    organisation.retention_days = 1
    organisation.save(update_fields=["retention_days"])
    case = open_case(OBAMA_2, reference="P-1", process=False)
    services.case_close(case=case, acting_user=alice, reason="Found safe.")
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=2))
    photo = case.photos.get()
    before = _media_files(media_root)
    with PausedWorker(monkeypatch, photo.pk, at="photo_detect"):
        # When the beat sweep purges the case meanwhile
        assert services.cases_purge_expired() == 1

    # Then the worker stored no face, encoding or file for the purged photo, and searched nothing
    assert not Face.objects.filter(photo=photo).exists()
    assert _media_files(media_root) == before
    assert not Search.objects.filter(face__photo=photo).exists()
    assert not Candidate.objects.filter(case=case).exists()
    photo = Photo.objects.get(pk=photo.pk)
    assert photo.purged_at is not None and photo.status == PhotoStatus.FAILED and "purged" in photo.failure_reason


def test_a_search_whose_candidate_is_erased_before_its_results_are_stored_makes_no_candidate_of_them(
    monkeypatch, dana, enrol, open_case
):
    # Given a probe photo whose search found the subject, and whose results are not stored yet
    subject = enrol("OBAMA-REF", OBAMA)
    real_store = searching.search_results_store
    found: dict[str, int] = {}

    def erase_then_store(**kwargs):
        found["hits"] = sum(len(hits) for hits in kwargs["face_hits"].values())
        # When the subject is erased between the search and the storing of its results
        services.subject_erase(subject=Subject.objects.get(pk=subject.pk), acting_user=dana)
        return real_store(**kwargs)

    monkeypatch.setattr(searching, "search_results_store", erase_then_store)
    case = open_case(OBAMA_2, reference="S-1")

    # Then no candidate names the erased subject: nobody is asked to review a face that is gone
    assert found["hits"] == 1
    assert not Candidate.objects.filter(subject=subject).exists()
    assert Search.objects.filter(face__photo__case=case).get().candidate_count == 0
    assert case.photos.get().status == PhotoStatus.DONE
