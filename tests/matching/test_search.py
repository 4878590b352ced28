from __future__ import annotations

import numpy as np
import pytest

from matching.search import GalleryCache, GalleryMatrix, search_gallery


def brute_force(face_ids, subject_ids, encodings, probe, threshold, k):
    """The obvious loop: every face, keep each subject's best, sort, cut."""
    best: dict[int, tuple[float, int]] = {}
    for face_id, subject_id, encoding in zip(face_ids, subject_ids, encodings, strict=True):
        distance = float(np.linalg.norm(encoding.astype(np.float64) - probe.astype(np.float64)))
        if subject_id not in best or (distance, face_id) < best[subject_id]:
            best[subject_id] = (distance, face_id)
    ranked = sorted((d, s, f) for s, (d, f) in best.items() if d <= threshold)
    return [(s, f) for d, s, f in ranked[:k]]


@pytest.fixture
def gallery_data():
    rng = np.random.default_rng(42)
    subject_ids = rng.integers(1, 400, size=2000)
    face_ids = np.arange(10_000, 12_000)
    encodings = rng.normal(0, 0.09, size=(2000, 128)).astype(np.float32)
    return face_ids, subject_ids, encodings


def test_search_equals_brute_force(gallery_data):
    face_ids, subject_ids, encodings = gallery_data
    gallery = GalleryMatrix.build(face_ids, subject_ids, encodings)
    probes = encodings[:20] + np.random.default_rng(1).normal(0, 0.03, size=(20, 128)).astype(np.float32)

    results = search_gallery(gallery, probes, threshold=1.3, k=5, batch=7)

    for probe, hits in zip(probes, results, strict=True):
        expected = brute_force(face_ids, subject_ids, encodings, probe, 1.3, 5)
        assert [(h.subject_id, h.face_id) for h in hits] == expected


def test_each_subject_appears_once_with_its_best_face():
    # Given one subject with two faces, one near the probe and one far
    encodings = np.zeros((3, 128), dtype=np.float32)
    encodings[0, 0], encodings[1, 0], encodings[2, 0] = 0.5, 0.1, 0.2
    gallery = GalleryMatrix.build(np.array([1, 2, 3]), np.array([7, 7, 8]), encodings)

    (hits,) = search_gallery(gallery, np.zeros((1, 128)), threshold=0.6, k=5)

    assert [(h.subject_id, h.face_id) for h in hits] == [(7, 2), (8, 3)]
    assert hits[0].distance == pytest.approx(0.1, abs=1e-6)


def test_nothing_beyond_the_threshold_is_returned():
    encodings = np.zeros((2, 128), dtype=np.float32)
    encodings[0, 0], encodings[1, 0] = 0.59, 0.61
    gallery = GalleryMatrix.build(np.array([1, 2]), np.array([1, 2]), encodings)

    (hits,) = search_gallery(gallery, np.zeros((1, 128)), threshold=0.6, k=5)

    assert [h.subject_id for h in hits] == [1]


def test_an_empty_gallery_gives_empty_results():
    gallery = GalleryMatrix.build(np.zeros(0), np.zeros(0), np.zeros((0, 128)))

    assert search_gallery(gallery, np.zeros((2, 128)), threshold=0.6, k=5) == [[], []]


def test_cache_rebuilds_when_the_version_changes():
    cache, loads = GalleryCache(), []

    def loader():
        loads.append(1)
        return GalleryMatrix.build(np.zeros(0), np.zeros(0), np.zeros((0, 128)))

    cache.get(1, "v", 0, loader)
    cache.get(1, "v", 0, loader)
    cache.get(1, "v", 1, loader)

    assert len(loads) == 2
