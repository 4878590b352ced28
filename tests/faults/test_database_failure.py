"""A write that fails midway leaves no partial faces, searches or candidates, and the photo can be processed again."""

from __future__ import annotations

import os

import pytest
from django.db import OperationalError

from matching import services
from matching.models import Candidate, Face, Photo, PhotoStatus, Search
from tests.conftest import BIDEN, OBAMA, OBAMA_2

pytestmark = pytest.mark.django_db(transaction=True)


def _disk_full(*args, **kwargs):
    raise OperationalError("could not extend file: No space left on device")


def _stored_files(root) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


@pytest.fixture
def probe(enrol, open_case):
    """A queued probe photo of Obama, with Obama and Biden enrolled: it will have one candidate."""
    enrol("OBAMA", OBAMA)
    enrol("BIDEN", BIDEN)
    return open_case(OBAMA_2, process=False).photos.get()


def test_a_search_that_fails_after_its_first_rows_leaves_no_search_or_candidate(probe, monkeypatch):
    # Given a database that fails once the search row is written, before its candidates are
    monkeypatch.setattr(Candidate.objects, "bulk_create", _disk_full)

    with pytest.raises(OperationalError):
        services.photo_process(photo_id=probe.id)

    assert not Search.objects.filter(face__photo=probe).exists()
    assert not Candidate.objects.filter(search__face__photo=probe).exists()
    assert Photo.objects.get(pk=probe.pk).status != PhotoStatus.DONE


def test_a_photo_whose_search_failed_midway_is_processed_whole_on_the_next_attempt(probe, monkeypatch):
    # Given a first attempt that failed in the middle of the search
    with monkeypatch.context() as patch:
        patch.setattr(Candidate.objects, "bulk_create", _disk_full)
        with pytest.raises(OperationalError):
            services.photo_process(photo_id=probe.id)

    # When the task's retry hands it back and it runs again
    assert services.photo_requeue(photo_id=probe.id)
    services.photo_process(photo_id=probe.id)

    # Then it has one face, one search and its candidate, once each
    probe.refresh_from_db()
    assert probe.status == PhotoStatus.DONE
    (face,) = Face.objects.filter(photo=probe)
    assert Search.objects.filter(face=face).count() == 1
    assert [c.subject.code for c in Candidate.objects.filter(search__face=face)] == ["OBAMA"]


def test_a_face_write_that_fails_leaves_no_faces_and_no_crop_files(probe, monkeypatch, media_root):
    # Given a database that fails when the detected faces are written, after their crops were saved
    before = _stored_files(media_root)
    monkeypatch.setattr(Face.objects, "bulk_create", _disk_full)

    with pytest.raises(OperationalError):
        services.photo_process(photo_id=probe.id)

    assert not Face.objects.filter(photo=probe).exists()
    assert _stored_files(media_root) == before
