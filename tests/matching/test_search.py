from __future__ import annotations

import numpy as np
import pytest

from matching.search import (
    GalleryCache,
    GalleryMatrix,
    gallery_shard,
    hits_merge,
    search_gallery,
    search_gallery_reduceat,
    shards_plan,
)


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


def _empty_index():
    from matching.quantised import GalleryIndex, Quantiser

    return GalleryIndex(Quantiser.default())


def test_cache_brings_an_entry_forward_instead_of_loading_it_again():
    cache, loads, updates = GalleryCache(), [], []

    def load():
        loads.append(1)
        return _empty_index(), 0

    def update(index, after, upto):
        updates.append((after, upto))
        return upto

    cache.get((1, "v"), stamp="s", target=0, load=load, update=update)
    cache.get((1, "v"), stamp="s", target=0, load=load, update=update)
    cache.get((1, "v"), stamp="s", target=3, load=load, update=update)

    assert len(loads) == 1
    assert updates == [(0, 3)]


def test_cache_loads_again_when_the_change_log_cannot_bring_it_forward():
    cache, loads = GalleryCache(), []

    def load():
        loads.append(1)
        return _empty_index(), 5

    cache.get((1, "v"), stamp="s", target=0, load=load, update=lambda *a: None)
    cache.get((1, "v"), stamp="s", target=6, load=load, update=lambda *a: None)

    assert len(loads) == 2


def _ids(results):
    return [[(h.subject_id, h.face_id) for h in hits] for hits in results]


def test_single_probe_calls_equal_brute_force(gallery_data):
    # Given single-probe calls, which take the gemv path rather than the chunked one
    face_ids, subject_ids, encodings = gallery_data
    gallery = GalleryMatrix.build(face_ids, subject_ids, encodings)
    probes = encodings[20:30] + np.random.default_rng(2).normal(0, 0.03, size=(10, 128)).astype(np.float32)

    results = [search_gallery(gallery, probe[None], threshold=1.3, k=5)[0] for probe in probes]

    assert _ids(results) == [brute_force(face_ids, subject_ids, encodings, p, 1.3, 5) for p in probes]


def test_chunks_smaller_than_a_subject_give_the_same_results(gallery_data):
    # Given chunks of 7 rows, so that many subjects' faces straddle a chunk boundary
    face_ids, subject_ids, encodings = gallery_data
    gallery = GalleryMatrix.build(face_ids, subject_ids, encodings)
    probes = encodings[:16] + np.random.default_rng(3).normal(0, 0.03, size=(16, 128)).astype(np.float32)

    chunked = search_gallery(gallery, probes, threshold=1.3, k=5, chunk_rows=7)

    assert _ids(chunked) == [brute_force(face_ids, subject_ids, encodings, p, 1.3, 5) for p in probes]


def test_threshold_first_search_equals_the_reduceat_version(gallery_data):
    face_ids, subject_ids, encodings = gallery_data
    gallery = GalleryMatrix.build(face_ids, subject_ids, encodings)
    probes = np.random.default_rng(4).normal(0, 0.09, size=(33, 128)).astype(np.float32)

    assert _ids(search_gallery(gallery, probes, threshold=1.25, k=3)) == _ids(
        search_gallery_reduceat(gallery, probes, threshold=1.25, k=3)
    )


def test_ties_in_distance_go_to_the_lower_subject_id_across_the_cut():
    # Given six subjects at exactly the same distance and k=2
    encodings = np.zeros((6, 128), dtype=np.float32)
    encodings[:, 0] = 0.3
    gallery = GalleryMatrix.build(np.arange(1, 7), np.array([60, 50, 40, 30, 20, 10]), encodings)

    (hits,) = search_gallery(gallery, np.zeros((1, 128)), threshold=0.6, k=2)

    assert [h.subject_id for h in hits] == [10, 20]


def test_shard_plan_never_splits_a_subject_and_covers_every_face():
    subject_ids = np.array([3, 5, 8, 9, 12, 20])
    counts = np.array([2, 4, 1, 7, 2, 2])

    shards = shards_plan(subject_ids, counts, max_faces=5)

    assert [(s.subject_from, s.subject_to, s.faces) for s in shards] == [
        (0, 5, 2),
        (5, 9, 5),
        (9, 12, 7),  # one subject over the budget gets a shard of its own
        (12, None, 4),
    ]


def test_merged_shards_equal_the_whole_gallery(gallery_data):
    # Given the gallery cut into shards of at most 150 faces, searched one by one and merged
    face_ids, subject_ids, encodings = gallery_data
    gallery = GalleryMatrix.build(face_ids, subject_ids, encodings)
    probes = encodings[:20] + np.random.default_rng(5).normal(0, 0.03, size=(20, 128)).astype(np.float32)
    shards = shards_plan(gallery.subject_ids, np.diff(np.append(gallery.starts, gallery.size)), max_faces=150)
    assert len(shards) > 5

    per_shard = [search_gallery(gallery_shard(gallery, shard), probes, threshold=1.3, k=5) for shard in shards]
    merged = [hits_merge([part[i] for part in per_shard], 5) for i in range(len(probes))]

    assert _ids(merged) == _ids(search_gallery(gallery, probes, threshold=1.3, k=5))


def test_shard_cache_stays_within_its_face_budget():
    from matching.quantised import GalleryIndex

    cache = GalleryCache()

    def load(n):
        rng = np.random.default_rng(n)
        return lambda: (
            GalleryIndex.build([(np.arange(1, n + 1), np.arange(1, n + 1), rng.normal(0, 0.1, (n, 128)))], expected=n),
            0,
        )

    cache.get((1, "v", (0, 100)), stamp="s", target=0, load=load(60), update=lambda *a: 0, max_faces=100)
    cache.get((1, "v", (100, None)), stamp="s", target=0, load=load(60), update=lambda *a: 0, max_faces=100)

    assert cache.faces() == 60  # the older shard was dropped to make room
