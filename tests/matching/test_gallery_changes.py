"""Enrolments and erasures reach every process's cached gallery through the change log, without a reload."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection, connections, transaction
from django.db.models import F

from matching import services
from matching.engine import DetectedFace
from matching.models import Candidate, Face, GalleryChange, Photo, Subject
from matching.search import GalleryCache
from matching.services import searching
from portal.models import Organisation
from tests.conftest import wait_for
from tests.factories import GalleryFactory
from tests.matching.test_sharded_search import probe_photo, synthetic_gallery

SUBJECT_FAR = 0.7  # how far a new subject's face sits from the synthetic gallery's centre


def enrol_face(organisation, vector: np.ndarray, code: str) -> Subject:
    """A reference photo with one detected face stored through the service the worker uses."""
    gallery = GalleryFactory(organisation=organisation, name=f"G-{code}")
    subject = Subject.objects.create(gallery=gallery, code=code)
    photo = Photo.objects.create(
        organisation=organisation, kind="reference", subject=subject, image="r.jpg", width=10, height=10
    )
    detected = DetectedFace(top=0, right=10, bottom=10, left=0, encoding=vector, crop_jpeg=b"\xff\xd8crop", blur=1.0)
    with services.StoredFiles() as files, transaction.atomic():
        services.reference_faces_store(photo=photo, detected=[detected], files=files)
    return subject


def found_subjects(organisation, probe: np.ndarray) -> list[int]:
    photo = probe_photo(organisation, probe[None])
    services.probe_photo_search(photo_id=photo.id)
    return list(
        Candidate.objects.filter(search__face__photo=photo).order_by("rank").values_list("subject_id", flat=True)
    )


@pytest.fixture
def cache(monkeypatch):
    """This process's gallery cache, fresh, with its load and update counts."""
    fresh = GalleryCache()
    monkeypatch.setattr(searching, "gallery_cache", fresh)
    return fresh


@pytest.fixture
def gallery(org):
    org.distance_threshold = 0.5
    org.save()
    return synthetic_gallery(org)


def newcomer(seed: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.11, 128) + SUBJECT_FAR * np.eye(128)[seed % 128]


@pytest.mark.django_db
def test_an_enrolment_reaches_a_warm_cache_without_a_reload(org, gallery, cache):
    # Given a cache that has loaded the gallery, and a face nobody has enrolled yet
    face = newcomer()
    assert found_subjects(org, face) == []

    # When the face is enrolled, and the same face is searched again
    subject = enrol_face(org, face, "NEW-1")
    found = found_subjects(org, face)

    # Then the new subject is found, from the cached index brought forward by one change
    assert found == [subject.id]
    assert (cache.loads, cache.updates) == (1, 1)
    assert GalleryChange.objects.filter(organisation=org, kind="add").count() == 1


@pytest.mark.django_db
def test_an_erasure_reaches_a_warm_cache_without_a_reload(org, dana, gallery, cache):
    # Given a cache that has loaded the gallery and finds a subject
    probe = gallery[0] + np.random.default_rng(3).normal(0, 0.01, 128)
    first = found_subjects(org, probe)[0]

    # When that subject is erased
    services.subject_erase(subject=Subject.objects.get(pk=first), acting_user=dana)

    # Then the cached index drops their faces as it catches up, before any search decrypts a face, and the very
    # next search does not find them; the index was brought forward, not loaded again
    erased_faces = set(Face.objects.filter(subject_id=first).values_list("id", flat=True))
    index = searching.organisation_gallery(Organisation.objects.get(pk=org.pk))
    assert erased_faces and not erased_faces & set(index.face_ids().tolist())
    assert first not in found_subjects(org, probe)
    assert (cache.loads, cache.updates) == (1, 1)


@pytest.mark.django_db
def test_a_version_moved_without_a_logged_change_loads_the_gallery_again(org, gallery, cache):
    # Given a warm cache, and a gallery version moved by something that logged no change
    found_subjects(org, gallery[0])
    Organisation.objects.filter(pk=org.pk).update(gallery_version=F("gallery_version") + 1)

    # When the next search runs
    found_subjects(org, gallery[0])

    # Then it does not trust the cached index: it loads the gallery again
    assert cache.loads == 2


@pytest.mark.django_db
def test_new_encoding_keys_load_the_gallery_again(org, gallery, cache, settings):
    from cryptography.fernet import Fernet

    from matching.sealing import encoding_keys

    found_subjects(org, gallery[0])
    settings.FACE_ENCODING_KEYS = [Fernet.generate_key().decode(), *encoding_keys()]

    found_subjects(org, gallery[0])

    assert cache.loads == 2


@pytest.mark.django_db
def test_an_erased_face_still_in_a_stale_index_is_never_returned(org, dana, gallery, cache, monkeypatch):
    # Given a warm index, and an erasure whose change this process has not applied (it reads no change log)
    probe = gallery[0] + np.random.default_rng(4).normal(0, 0.01, 128)
    first = found_subjects(org, probe)[0]
    services.subject_erase(subject=Subject.objects.get(pk=first), acting_user=dana)
    monkeypatch.setattr(searching, "gallery_changes_apply", lambda index, *args, **kwargs: kwargs["upto"])

    erased_faces = set(Face.objects.filter(subject_id=first).values_list("id", flat=True))
    stale = searching.organisation_gallery(Organisation.objects.get(pk=org.pk))
    assert erased_faces <= set(stale.face_ids().tolist())

    # When the next search runs on the stale index
    found = found_subjects(org, probe)

    # Then the re-rank, which decrypts only faces still searchable, drops the erased subject all the same
    assert first not in found
    assert not erased_faces & set(stale.face_ids().tolist())


@pytest.mark.django_db
def test_faces_read_by_id_are_those_the_searchable_rule_holds(org, other_org, gallery):
    # Given a gallery in which some faces are, each for one reason, not searchable, and a probe face
    from django.utils import timezone

    from matching.engine import engine_version

    faces = list(Face.objects.filter(organisation=org).order_by("id"))
    purged, erased, old_engine, moved = faces[0], faces[10], faces[20], faces[30]
    Face.objects.filter(pk=purged.pk).update(purged_at=timezone.now())
    Subject.objects.filter(pk=erased.subject_id).update(erased_at=timezone.now())
    Face.objects.filter(pk=old_engine.pk).update(engine_version="an engine no longer in use")
    Face.objects.filter(pk=moved.pk).update(organisation=other_org)
    probe = probe_photo(org, gallery[:1]).faces.get()
    asked = [face.pk for face in faces] + [probe.pk, 10**9]
    subjects = sorted({face.subject_id for face in faces})
    middle = (subjects[20], subjects[60])

    # When they are read by id, for the whole gallery and for a shard's range of subjects
    whole = searching.searchable_by_id(org.pk, engine_version(), asked, "subject_id")
    shard = searching.searchable_by_id(
        org.pk, engine_version(), asked, "subject_id", subject_from=middle[0], subject_to=middle[1]
    )

    # Then each is what the query of the searchable faces returns, and none of those four or the probe is there
    rule = searching.searchable_faces(org.pk, engine_version()).filter(id__in=asked)
    assert sorted(whole) == sorted(rule.values_list("id", "subject_id"))
    assert sorted(shard) == sorted(searching._in_shard(rule, *middle).values_list("id", "subject_id"))
    assert 0 < len(shard) < len(whole) < len(faces)
    left_out = {purged.pk, old_engine.pk, moved.pk, probe.pk} | {
        f.pk for f in faces if f.subject_id == erased.subject_id
    }
    assert not left_out & {face_id for face_id, _ in whole}


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgresql_only(reason="An enrolment and an erasure at once are ordered by PostgreSQL's row lock.")
def test_concurrent_enrolment_and_erasure_reach_two_processes_caches_in_order(org, dana, monkeypatch):
    # Given two processes' caches (A and B), both warm on the committed gallery
    org.distance_threshold = 0.5
    org.save()
    vectors = synthetic_gallery(org)
    caches = {"A": GalleryCache(), "B": GalleryCache()}

    def search(name: str, probe: np.ndarray) -> list[int]:
        # What probe_photo_search does before it stores anything (storing writes the activity log, whose
        # organisation chain the waiting erasure holds).
        monkeypatch.setattr(searching, "gallery_cache", caches[name])
        organisation = Organisation.objects.get(pk=org.pk)
        index = searching.organisation_gallery(organisation)
        (hits,) = searching.gallery_search(organisation, index, probe[None], threshold=0.5, k=5)
        return [hit.subject_id for hit in hits]

    erased_probe = vectors[0] + np.random.default_rng(5).normal(0, 0.01, 128)
    erased = search("A", erased_probe)[0]
    assert search("B", erased_probe)[0] == erased
    new_face = newcomer(seed=17)
    enrolled_code = "NEW-17"

    # When an enrolment holds its transaction open after logging its change (it holds the organisation's row),
    # and an erasure starts meanwhile and waits for that row
    enrolment_logged, enrolment_commit = threading.Event(), threading.Event()
    erasure_pid: list[int] = []
    errors: list[BaseException] = []

    def enrol() -> None:
        try:
            with transaction.atomic():
                enrol_face(Organisation.objects.get(pk=org.pk), new_face, enrolled_code)
                enrolment_logged.set()
                assert enrolment_commit.wait(timeout=60)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            enrolment_logged.set()
        finally:
            connections.close_all()

    def erase() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                erasure_pid.append(cursor.fetchone()[0])
            services.subject_erase(subject=Subject.objects.get(pk=erased), acting_user=dana)
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    enrolment = threading.Thread(target=enrol)
    enrolment.start()
    assert enrolment_logged.wait(timeout=60)
    erasure = threading.Thread(target=erase)
    erasure.start()

    def erasure_waits_for_a_lock() -> bool:
        if not erasure_pid:
            return False
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", [erasure_pid[0]])
            return cursor.fetchone() is not None

    wait_for(erasure_waits_for_a_lock, timeout=30, message="the erasure to wait for the organisation's row")

    # Then while both are uncommitted, A still sees the gallery as committed: the subject, and not the newcomer
    assert search("A", erased_probe)[0] == erased
    assert search("A", new_face) == []

    # When the enrolment commits and the erasure then commits after it
    enrolment_commit.set()
    enrolment.join(timeout=60)
    erasure.join(timeout=60)
    assert not errors, errors
    assert not enrolment.is_alive() and not erasure.is_alive()

    # Then the very next search in each process finds the newcomer and not the erased subject, and neither
    # process loaded its gallery again
    enrolled = Subject.objects.get(code=enrolled_code).id
    erased_faces = set(Face.objects.filter(subject_id=erased).values_list("id", flat=True))
    enrolled_faces = set(Face.objects.filter(subject_id=enrolled).values_list("id", flat=True))
    for name in ("A", "B"):
        monkeypatch.setattr(searching, "gallery_cache", caches[name])
        held = set(searching.organisation_gallery(Organisation.objects.get(pk=org.pk)).face_ids().tolist())
        assert enrolled_faces <= held and not erased_faces & held
        assert erased not in search(name, erased_probe)
        assert search(name, new_face) == [enrolled]
        assert caches[name].loads == 1
    changes = list(GalleryChange.objects.filter(organisation=org).order_by("seq").values_list("seq", "kind"))
    assert [kind for _, kind in changes] == ["add"] + ["remove"] * Face.objects.filter(subject_id=erased).count()
    assert len({seq for seq, _ in changes}) == 2
