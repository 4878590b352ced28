"""The int8 index with its exact re-rank returns what a plain NumPy brute force returns, for any gallery."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching import quantised
from matching.quantised import GalleryIndex, Quantiser

DIM = 128


def brute_force(face_ids, subject_ids, vectors, probe, threshold, k):
    """Every face's float64 distance, each subject's best face (ties to the lower face id), the k closest subjects
    (ties to the lower subject id)."""
    if len(face_ids) == 0:
        return []
    distances = np.linalg.norm(np.asarray(vectors, dtype=np.float64) - probe, axis=1)
    best: dict[int, tuple[float, int]] = {}
    for face_id, subject_id, distance in zip(face_ids, subject_ids, distances, strict=True):
        if distance <= threshold:
            candidate = (float(distance), int(face_id))
            if subject_id not in best or candidate < best[subject_id]:
                best[int(subject_id)] = candidate
    ranked = sorted(best.items(), key=lambda item: (item[1][0], item[0]))[:k]
    return [(subject, face, distance) for subject, (distance, face) in ranked]


def as_tuples(hits):
    return [(h.subject_id, h.face_id, h.distance) for h in hits]


@st.composite
def galleries(draw):
    """A gallery, probes, a threshold and k, with ties and faces at exactly the threshold.

    "grid" galleries put every coordinate on multiples of 1/64, so that every distance is computed exactly and
    equal distances are equal in float64: ties between subjects, and faces at exactly the threshold (0.25, 0.5 or
    0.75, themselves multiples of 1/64 away along one axis).
    """
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "grid", "tight"]))
    if kind == "tight":
        return tight_gallery(rng, k=draw(st.integers(1, 4)))
    n = draw(st.integers(0, 80))
    subjects = draw(st.integers(1, 12))
    subject_ids = rng.integers(1, subjects + 1, size=n) * 7
    face_ids = rng.permutation(np.arange(1, 4 * n + 2))[:n] + 100
    centre = rng.normal(0, 0.11, DIM)
    if kind == "grid":
        vectors = rng.integers(-6, 7, size=(n, DIM)) / 64.0
        threshold = draw(st.sampled_from([0.25, 0.5, 0.75, 1.0]))
    else:
        vectors = centre + rng.normal(0, 0.06, size=(n, DIM))
        threshold = draw(st.floats(0.05, 1.5))
    if n and draw(st.booleans()):
        # Copies of faces under other subjects: exact ties in distance.
        copies = rng.integers(0, n, size=max(1, n // 4))
        vectors[rng.integers(0, n, size=len(copies))] = vectors[copies]
    probes = []
    for _ in range(draw(st.integers(1, 6))):
        mode = draw(st.sampled_from(["face", "at threshold", "random"])) if n else "random"
        if mode == "face":
            probes.append(vectors[rng.integers(n)].copy())
        elif mode == "at threshold":
            # A probe exactly threshold away from a face along one axis (exact on the grid).
            probe = vectors[rng.integers(n)].copy()
            probe[rng.integers(DIM)] += threshold
            probes.append(probe)
        else:
            probes.append((rng.integers(-6, 7, DIM) / 64.0) if kind == "grid" else centre + rng.normal(0, 0.06, DIM))
    k = draw(st.integers(1, 6))
    # The quantiser: the default, or a coarse or a fine one (which clips, so that some residuals are large).
    scale = draw(st.sampled_from([None, 1 / 16, 1 / 2048]))
    quantiser = None if scale is None else Quantiser(offset=rng.normal(0, 0.05, DIM), scale=scale)
    return face_ids, subject_ids, vectors, np.array(probes), threshold, k, quantiser, rng


def tight_gallery(rng, k):
    """Faces where the bound is as tight as it gets, a hair inside or outside the threshold.

    With the default quantiser (offset 0, step 1/256) grid points are their own codes. Each face is a grid point
    moved by less than half a step straight towards the probe, and the probe a grid point moved towards one face:
    the face's distance is then its codes' distance minus both moves, exactly the lower bound. The threshold sits
    between that distance and the bound without either move, so a search that leaves out any part of the bound
    drops a face it must return.
    """
    step = 1 / 256
    n = int(rng.integers(2, 40))
    probe_grid = rng.integers(-40, 41, DIM) * step
    grid = probe_grid + rng.integers(-12, 13, size=(n, DIM)) * step
    towards = probe_grid - grid
    lengths = np.linalg.norm(towards, axis=1, keepdims=True)
    lengths[lengths == 0] = 1
    face_move, probe_move = 0.45 * step, 0.45 * step
    vectors = grid + face_move * towards / lengths
    probe = probe_grid - probe_move * towards[0] / lengths[0]
    face_ids = np.arange(1, n + 1) * 3
    subject_ids = rng.integers(1, max(2, n // 2), size=n)
    threshold = float(np.linalg.norm(vectors[0] - probe)) + 0.3 * (face_move + probe_move)
    return face_ids, subject_ids, vectors, probe[None], threshold, k, None, rng


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=galleries(), split=st.integers(0, 80), removals=st.integers(0, 6), erased=st.integers(0, 3))
def test_index_search_equals_numpy_brute_force(case, split, removals, erased):
    face_ids, subject_ids, vectors, probes, threshold, k, quantiser, rng = case
    # Given an index built from the first faces (in face id order, in two chunks) and the rest added later
    order = np.argsort(face_ids)
    face_ids, subject_ids, vectors = face_ids[order], subject_ids[order], vectors[order]
    split = min(split, len(face_ids))
    half = split // 2
    index = GalleryIndex.build(
        [
            (face_ids[:half], subject_ids[:half], vectors[:half]),
            (face_ids[half:split], subject_ids[half:split], vectors[half:split]),
        ],
        expected=split,
        quantiser=quantiser,
    )
    later = rng.permutation(np.arange(split, len(face_ids)))
    for part in np.array_split(later, 3):
        index.add(face_ids[part], subject_ids[part], vectors[part])
    # And some faces removed, and some erased in the database but not yet removed from the index
    live = np.ones(len(face_ids), dtype=bool)
    if len(face_ids):
        gone = rng.choice(len(face_ids), size=min(removals, len(face_ids)), replace=False)
        index.remove(face_ids[gone])
        live[gone] = False
        unseen = rng.choice(len(face_ids), size=min(erased, len(face_ids)), replace=False)
        live[unseen] = False
    stored = {int(f): v for f, v, alive in zip(face_ids, vectors, live, strict=True) if alive}

    # When every probe is searched
    results = index.search(
        probes, threshold=threshold, k=k, exact=lambda ids: {int(i): stored[int(i)] for i in ids if int(i) in stored}
    )

    # Then each result is the brute force's over the faces still stored: same subjects, faces, order and distances
    for probe, hits in zip(probes, results, strict=True):
        assert as_tuples(hits) == brute_force(face_ids[live], subject_ids[live], vectors[live], probe, threshold, k)


def test_scans_split_across_threads_give_the_same_results(monkeypatch):
    # Given a gallery scanned in ranges of 100 rows on three threads
    rng = np.random.default_rng(11)
    n = 1000
    face_ids, subject_ids = np.arange(1, n + 1), rng.integers(1, 300, n)
    vectors = rng.normal(0, 0.11, DIM) + rng.normal(0, 0.06, (n, DIM))
    index = GalleryIndex.build([(face_ids, subject_ids, vectors)], expected=n)
    probes = vectors[:12] + rng.normal(0, 0.03, (12, DIM))
    stored = dict(zip(face_ids.tolist(), vectors, strict=True))
    monkeypatch.setattr(quantised, "SPLIT_MIN_ROWS", 100)

    split = index.search(probes, threshold=0.9, k=4, exact=lambda ids: {int(i): stored[int(i)] for i in ids}, threads=3)

    assert [as_tuples(h) for h in split] == [brute_force(face_ids, subject_ids, vectors, p, 0.9, 4) for p in probes]


def test_a_dense_gallery_re_ranks_only_what_the_top_k_needs():
    # Given 2,000 faces of 2,000 subjects all within a loose threshold of the probe
    rng = np.random.default_rng(5)
    n = 2000
    vectors = rng.normal(0, 0.05, (n, DIM))
    index = GalleryIndex.build([(np.arange(1, n + 1), np.arange(1, n + 1), vectors)], expected=n)
    asked: list[int] = []

    def exact(ids):
        asked.extend(int(i) for i in ids)
        return {int(i): vectors[int(i) - 1] for i in ids}

    (hits,) = index.search(np.zeros((1, DIM)), threshold=1.5, k=5, exact=exact)

    # Then the result is exact, and only the faces near the fifth subject's distance were decrypted for it
    assert as_tuples(hits) == brute_force(np.arange(1, n + 1), np.arange(1, n + 1), vectors, np.zeros(DIM), 1.5, 5)
    assert len(asked) < n // 20


def test_a_face_once_removed_is_not_added_again():
    vectors = np.random.default_rng(2).normal(0, 0.1, (3, DIM))
    index = GalleryIndex.build([(np.array([1, 2, 3]), np.array([1, 1, 2]), vectors)], expected=3)

    index.remove([2])
    added = index.add([2, 4], [1, 3], np.vstack([vectors[1], vectors[0]]))

    assert added == 1
    assert index.face_ids().tolist() == [1, 3, 4]
    assert index.size == 3


def test_memory_per_face_is_144_bytes_with_32_bit_ids():
    n = 5000
    vectors = np.random.default_rng(3).normal(0, 0.1, (n, DIM))
    index = GalleryIndex.build([(np.arange(1, n + 1), np.arange(1, n + 1), vectors)], expected=n)

    assert index.nbytes / n == 144


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_vector_that_is_not_finite_is_refused(bad):
    vectors = np.zeros((1, DIM))
    vectors[0, 3] = bad

    with pytest.raises(ValueError, match="not finite"):
        GalleryIndex.build([(np.array([1]), np.array([1]), vectors)], expected=1)


def test_faces_loaded_out_of_order_can_still_be_removed():
    # Given chunks whose face ids do not ascend
    vectors = np.random.default_rng(6).normal(0, 0.1, (4, DIM))
    index = GalleryIndex.build(
        [(np.array([40, 10]), np.array([1, 2]), vectors[:2]), (np.array([30, 20]), np.array([3, 4]), vectors[2:])],
        expected=4,
    )

    # When two are removed, Then they are gone, and only they
    assert index.remove([10, 30]) == 2
    assert index.face_ids().tolist() == [20, 40]
