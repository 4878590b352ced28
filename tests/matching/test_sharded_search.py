"""A gallery larger than one worker's budget is searched in shards and gives the same candidates."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from matching import services
from matching.engine import engine_version
from matching.models import Candidate, Face, Photo, Search
from matching.sealing import encoding_seal
from portal.models import AuditEvent
from tests.conftest import WorkerProcess, _database_url, wait_for
from tests.factories import CaseFactory, GalleryFactory, SubjectFactory

GALLERY_FACES = 240


def _face(photo, subject, vector, index=0) -> Face:
    return Face(
        photo=photo,
        organisation_id=photo.organisation_id,
        subject=subject,
        index=index,
        top=0,
        right=10,
        bottom=10,
        left=0,
        crop="crops/none.jpg",
        encoding=encoding_seal(vector),
        engine="face_recognition",
        engine_version=engine_version(),
        detector="hog",
        face_width=10,
        face_height=10,
        blur=1.0,
    )


def synthetic_gallery(organisation, seed: int = 7) -> np.ndarray:
    """About 80 subjects of 1-5 synthetic encodings each (rows, not photos: this is about search)."""
    rng = np.random.default_rng(seed)
    gallery = GalleryFactory(organisation=organisation)
    centres = rng.normal(0.0, 0.11, size=(80, 128))
    faces, vectors, made = [], [], 0
    for centre in centres:
        subject = SubjectFactory(gallery=gallery)
        photo = Photo.objects.create(
            organisation=organisation, kind="reference", subject=subject, image="r.jpg", width=10, height=10
        )
        for index in range(int(rng.integers(1, 6))):
            if made == GALLERY_FACES:
                break
            vector = centre + rng.normal(0.0, 0.03, 128)
            faces.append(_face(photo, subject, vector, index))
            vectors.append(vector)
            made += 1
    Face.objects.bulk_create(faces)
    return np.array(vectors)


def probe_photo(organisation, vectors: np.ndarray, status: str = "matching") -> Photo:
    """A probe photo whose faces were already detected: the next step is the search."""
    photo = Photo.objects.create(
        organisation=organisation,
        kind="probe",
        case=CaseFactory(organisation=organisation, reference=f"S-{uuid.uuid4().hex[:8]}"),
        image="p.jpg",
        width=10,
        height=10,
        status=status,
    )
    Face.objects.bulk_create(_face(photo, None, v, i) for i, v in enumerate(vectors))
    return photo


def candidates_of(photo: Photo) -> list[tuple[int, int, int, int]]:
    return list(
        Candidate.objects.filter(search__face__photo=photo)
        .order_by("search__face__index", "rank")
        .values_list("search__face__index", "rank", "subject_id", "reference_face_id")
    )


def probes_near(vectors: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return vectors[rng.choice(len(vectors), 4, replace=False)] + rng.normal(0.0, 0.03, (4, 128))


@pytest.mark.django_db
def test_sharded_search_stores_the_same_candidates_as_one_matrix(org, settings, eager_tasks):
    # Given a 240-face gallery and two photos of the same four probe faces
    org.distance_threshold, org.max_candidates = 0.5, 5
    org.save()
    vectors = synthetic_gallery(org)
    probes = probes_near(vectors, seed=1)
    whole, sharded = probe_photo(org, probes), probe_photo(org, probes)

    # When one is searched within the budget and the other with a budget of 40 faces per worker
    services.probe_photo_search(photo_id=whole.id)
    settings.SEARCH_SHARD_MAX_FACES = 40
    services.probe_photo_search(photo_id=sharded.id)

    # Then both store the same candidates, and the sharded search covered the whole gallery
    assert candidates_of(whole) and candidates_of(sharded) == candidates_of(whole)
    assert set(Search.objects.filter(face__photo=sharded).values_list("gallery_faces", flat=True)) == {GALLERY_FACES}
    detail = AuditEvent.objects.filter(action="search.run", target_id=str(sharded.id)).get().detail
    assert detail["shards"] >= GALLERY_FACES // 40
    sharded.refresh_from_db()
    assert sharded.status == "done"


@pytest.mark.django_db
def test_erasure_reaches_the_cached_shards_at_once(org, dana, settings, eager_tasks):
    # Given a sharded search that has loaded every shard into this process's cache
    settings.SEARCH_SHARD_MAX_FACES = 40
    vectors = synthetic_gallery(org)
    probe = probes_near(vectors, seed=2)[:1]
    first = probe_photo(org, probe)
    services.probe_photo_search(photo_id=first.id)
    found = Candidate.objects.get(search__face__photo=first, rank=1).subject

    # When that subject is erased
    services.subject_erase(subject=found, acting_user=dana)

    # Then the next sharded search, in the same process, no longer finds them
    second = probe_photo(org, probe)
    services.probe_photo_search(photo_id=second.id)
    assert found.id not in {subject_id for _, _, subject_id, _ in candidates_of(second)}


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_fans_shards_out_on_the_search_queue(org, settings, redis_url, media_root, tmp_path):
    # Given a gallery committed to the database, and a worker (-Q celery,search) with a 40-face budget
    from django.db import connection

    from matching.search import GalleryMatrix, search_gallery
    from matching.tasks import process_photo

    org.distance_threshold = 0.5
    org.save()
    vectors = synthetic_gallery(org)
    probes = probes_near(vectors, seed=3)
    photo = probe_photo(org, probes, status="queued")
    private = f"shard-test-{os.getpid()}"  # another test's worker may hold "celery"; this queue is ours alone
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connection.settings_dict),
        "CELERY_BROKER_URL": redis_url,
        "MEDIA_ROOT": str(media_root),
        "SEARCH_SHARD_MAX_FACES": "40",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log", queues=f"celery,search,{private}")
    worker.start()
    try:
        # When the photo's task reaches the worker
        process_photo.apply_async(args=[photo.id], queue=private)
        wait_for(
            lambda: Photo.objects.filter(id=photo.id, status="done").exists(),
            timeout=120,
            message=f"the sharded search (worker log: {tmp_path / 'worker.log'})",
        )
    finally:
        worker.stop()

    # Then its candidates are those of one search over the whole gallery, and they came from shards
    rows = list(Face.objects.filter(subject__isnull=False).values_list("id", "subject_id"))
    gallery = GalleryMatrix.build(
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.stack([Face.objects.get(id=r[0]).vector for r in rows]),
    )
    expected = search_gallery(gallery, probes, threshold=0.5, k=org.max_candidates)
    assert candidates_of(photo) == [
        (index, rank, hit.subject_id, hit.face_id)
        for index, hits in enumerate(expected)
        for rank, hit in enumerate(hits, start=1)
    ]
    assert candidates_of(photo)
    assert AuditEvent.objects.get(action="search.run", target_id=str(photo.id)).detail["shards"] > 1
