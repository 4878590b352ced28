"""bench/search.py's side-by-side run: the portal's int8 index against FAISS, and the memory a worker keeps.

Contenders, each searched one probe per call and in one batch of all probes, at 2 and at 1 thread:
- ours: matching.quantised.GalleryIndex, re-ranking with encodings that are Fernet-sealed as in the database and
  decrypted on demand (the database round trip is not in this figure; bench/e2e.py times the whole path);
- float32: matching.search.search_gallery, the float32 matrix every worker held before (512 bytes a face);
- FAISS IndexFlatL2 (exact, float32) by range search at the threshold and by its 64 nearest faces, and
  IndexScalarQuantizer QT_8bit (approximate, 128 bytes a face) by its 64 nearest faces (its range search is far
  slower), each followed by the threshold, each subject's best face and the k closest subjects, as the portal does.
Recall is the share of the float64 brute force's (subject, face) pairs that a contender returns, over every probe.

FAISS is a benchmark-only dependency (`.venv/bin/pip install --no-deps -r bench/requirements.txt`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OURS = "ours: int8 + exact re-rank"
FLAT_RANGE = "FAISS IndexFlatL2, range search"
FLAT_KNN = "FAISS IndexFlatL2, 64 nearest"
SQ8_KNN = "FAISS SQ 8-bit, 64 nearest"
# FAISS's k-nearest search returns faces, not subjects: this many, then the threshold and each subject's best.
# (IndexScalarQuantizer's range search took about 4 ms per 1,000 faces here, too slow to time at 1M.)
KNN_FACES = 64
# Batched calls per contender in a round (their median is the round's figure).
BATCH_REPEATS = 3
FAISS_MISSING = (
    "FAISS is not installed: it is a benchmark-only dependency. Install it with\n"
    "    .venv/bin/pip install --no-deps -r bench/requirements.txt\n"
    "or run without the comparison (--no-compare)."
)


def faiss_import():
    try:
        import faiss
    except ImportError:
        raise SystemExit(FAISS_MISSING) from None
    return faiss


class SealedEncodings:
    """What a worker re-ranks with: Fernet tokens (in the database there, in memory here), opened on demand.

    Tokens are made, untimed, for the faces a first pass asks for; `late` counts faces asked for afterwards (sealed
    inside a timed call, so it should stay 0).
    """

    def __init__(self, encodings: np.ndarray) -> None:
        self.encodings = encodings
        self.tokens: dict[int, bytes] = {}
        self.late = 0
        self.asked = 0

    def prepare(self, face_ids) -> None:
        from matching.sealing import encoding_seal

        for face_id in face_ids:
            if face_id not in self.tokens:
                self.tokens[face_id] = encoding_seal(self.encodings[face_id - 1])

    def __call__(self, face_ids: np.ndarray) -> dict[int, np.ndarray]:
        from matching.sealing import encoding_open

        ids = [int(i) for i in face_ids]
        missing = [i for i in ids if i not in self.tokens]
        if missing:
            self.late += len(missing)
            self.prepare(missing)
        self.asked += len(ids)
        return {i: encoding_open(self.tokens[i]) for i in ids}


def best_subjects(
    rows: np.ndarray, distances: np.ndarray, subject_ids: np.ndarray, face_ids: np.ndarray, k: int
) -> list[tuple[int, int]]:
    """Each subject's best face among rows (ties to the lower face id), then the k closest subjects."""
    if rows.size == 0:
        return []
    subjects, faces = subject_ids[rows], face_ids[rows]
    order = np.lexsort((faces, distances, subjects))
    subjects, faces, distances = subjects[order], faces[order], distances[order]
    first = np.concatenate(([True], subjects[1:] != subjects[:-1]))
    subjects, faces, distances = subjects[first], faces[first], distances[first]
    ranked = np.lexsort((subjects, distances))[:k]
    return [(int(subjects[i]), int(faces[i])) for i in ranked]


@dataclass
class Measure:
    label: str
    memory: str
    single: list[float] = field(default_factory=list)  # seconds per call, per round (p50 of the calls)
    single_p95: list[float] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)  # seconds per probe, per round
    results: list = field(default_factory=list)


def recall(results: list[list[tuple[int, int]]], reference: list[list[tuple[int, int, float]]]) -> tuple[float, int]:
    """(share of the reference's pairs returned, probes whose list is identical, order included)."""
    wanted = sum(len(r) for r in reference)
    got = sum(len({(s, f) for s, f, _ in r} & set(found)) for found, r in zip(results, reference, strict=True))
    same = sum(found == [(s, f) for s, f, _ in r] for found, r in zip(results, reference, strict=True))
    return (got / wanted if wanted else 1.0), same


def compare_run(data, args: argparse.Namespace, reference) -> None:
    """Every contender at each thread count, --rounds times in turn, with the ratios of each round."""
    from threadpoolctl import threadpool_limits

    from matching.quantised import GalleryIndex
    from matching.search import GalleryMatrix, search_gallery

    faiss = faiss_import()
    n = len(data.face_ids)
    probes32 = np.ascontiguousarray(data.probes, dtype=np.float32)
    probes64 = data.probes.astype(np.float64)
    threshold, k = args.threshold, args.k
    order = np.argsort(data.face_ids)
    start = time.perf_counter()
    index = GalleryIndex.build(
        (
            (
                data.face_ids[order[lo : lo + 65536]],
                data.subject_ids[order[lo : lo + 65536]],
                data.encodings[order[lo : lo + 65536]],
            )
            for lo in range(0, n, 65536)
        ),
        expected=n,
    )
    build_ours = time.perf_counter() - start
    sealed = SealedEncodings(data.encodings)
    matrix = GalleryMatrix.build(data.face_ids, data.subject_ids, data.encodings)
    flat = faiss.IndexFlatL2(128)
    flat.add(np.ascontiguousarray(data.encodings))
    start = time.perf_counter()
    sq8 = faiss.IndexScalarQuantizer(128, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
    sq8.train(np.ascontiguousarray(data.encodings[:: max(1, n // 200_000)]))
    sq8.add(np.ascontiguousarray(data.encodings))
    build_sq8 = time.perf_counter() - start

    def ours(block: np.ndarray, threads: int) -> list:
        hits = index.search(block.astype(np.float64), threshold=threshold, k=k, exact=sealed, threads=threads)
        return [[(h.subject_id, h.face_id) for h in found] for found in hits]

    def float32(block: np.ndarray, threads: int) -> list:
        hits = search_gallery(matrix, block, threshold=threshold, k=k, batch=64)
        return [[(h.subject_id, h.face_id) for h in found] for found in hits]

    def faiss_range(faiss_index) -> Callable[[np.ndarray, int], list]:
        def run(block: np.ndarray, threads: int) -> list:
            lims, distances, rows = faiss_index.range_search(
                np.ascontiguousarray(block, dtype=np.float32), threshold**2
            )
            return [
                best_subjects(
                    rows[lims[p] : lims[p + 1]],
                    np.sqrt(np.maximum(distances[lims[p] : lims[p + 1]], 0)),
                    data.subject_ids,
                    data.face_ids,
                    k,
                )
                for p in range(len(block))
            ]

        return run

    def faiss_knn(faiss_index, faces: int) -> Callable[[np.ndarray, int], list]:
        def run(block: np.ndarray, threads: int) -> list:
            distances, rows = faiss_index.search(np.ascontiguousarray(block, dtype=np.float32), faces)
            out = []
            for p in range(len(block)):
                keep = (rows[p] >= 0) & (distances[p] <= threshold**2)
                out.append(
                    best_subjects(
                        rows[p][keep], np.sqrt(np.maximum(distances[p][keep], 0)), data.subject_ids, data.face_ids, k
                    )
                )
            return out

        return run

    contenders = [
        (OURS, "144 B", ours),
        ("float32 search_gallery (before)", "512 B", float32),
        (FLAT_RANGE, "512 B", faiss_range(flat)),
        (FLAT_KNN, "512 B", faiss_knn(flat, KNN_FACES)),
        (SQ8_KNN, "128 B", faiss_knn(sq8, KNN_FACES)),
    ]
    thread_counts = [2, 1] if not args.no_single_thread else [2]
    # Untimed: the faces ours re-ranks get their tokens, and every contender touches its pages once.
    record = _recorder(sealed, data.encodings)
    for threads in thread_counts:
        for p in range(len(probes64)):
            index.search(probes64[p : p + 1], threshold=threshold, k=k, exact=record, threads=threads)
        index.search(probes64, threshold=threshold, k=k, exact=record, threads=threads)
    for _, _, run in contenders:
        run(probes32[:1], 1)

    sealed.asked = 0
    searched = args.rounds * len(thread_counts) * (1 + BATCH_REPEATS) * len(probes32)
    table: dict[tuple[str, int], Measure] = {}
    for round_index in range(args.rounds):
        for threads in thread_counts:
            faiss.omp_set_num_threads(threads)
            # Every BLAS in the process (numpy's, and the one FAISS brings), not only the first one found.
            limits = threadpool_limits(limits=threads, user_api="blas")
            measures = [table.setdefault((label, threads), Measure(label, memory)) for label, memory, _ in contenders]
            # Probe by probe, every contender in turn, their order rotating: a burst of load from elsewhere on the
            # machine falls on all of them alike.
            times: list[list[float]] = [[] for _ in contenders]
            results: list[list] = [[] for _ in contenders]
            for p in range(len(probes32)):
                block = probes32[p : p + 1]
                for c in np.roll(np.arange(len(contenders)), -p):
                    started = time.perf_counter()
                    results[c].extend(contenders[c][2](block, threads))
                    times[c].append(time.perf_counter() - started)
            batched_times: list[list[float]] = [[] for _ in contenders]
            batched_results: list = [None] * len(contenders)
            for repeat in range(BATCH_REPEATS):
                for c in np.roll(np.arange(len(contenders)), -repeat):
                    started = time.perf_counter()
                    batched_results[c] = contenders[c][2](probes32, threads)
                    batched_times[c].append((time.perf_counter() - started) / len(probes32))
            for c, measure in enumerate(measures):
                measure.single.append(float(np.percentile(times[c], 50)))
                measure.single_p95.append(float(np.percentile(times[c], 95)))
                measure.batched.append(float(np.median(batched_times[c])))
                if round_index == 0:
                    measure.results = [results[c], batched_results[c]]
            limits.restore_original_limits()

    print(f"\nFAISS {faiss.__version__} ({faiss.get_compile_options()}); numba threads are ours, OpenMP FAISS's")
    print(
        f"\nside by side at {n:,} faces: {len(probes32)} probes one per call, then all {len(probes32)} in one call;"
        f" threshold {threshold}, k {k}; {args.rounds} rounds, contenders in turn within each round"
    )
    print(
        f"index build: ours {build_ours:.1f} s (quantise {n:,} faces), FAISS SQ8 {build_sq8:.1f} s (train + add); "
        f"faces ours decrypted per probe: {sealed.asked / searched:.1f}"
        f" (sealed late: {sealed.late})"
    )
    print(
        f"  {'contender':<36}{'thr':>4}{'mem/face':>9}{'single p50 ms':>20}{'p95 ms':>20}{'batch ms/probe':>20}"
        f"{'recall':>8}{'identical':>11}"
    )
    for (label, threads), m in table.items():
        single_recall, single_same = recall(m.results[0], reference)
        batch_recall, batch_same = recall(m.results[1], reference)
        print(
            f"  {label:<36}{threads:>4}{m.memory:>9}{_spread(m.single):>20}{_spread(m.single_p95):>20}"
            f"{_spread(m.batched):>20}{min(single_recall, batch_recall) * 100:>7.1f}%"
            f"{min(single_same, batch_same):>6}/{len(reference)}"
        )
    print("  (each time: the median of the rounds, with min-max in brackets when there are several)")
    for threads in thread_counts:
        ours_m = table[(OURS, threads)]
        ranged, nearest = table[(FLAT_RANGE, threads)], table[(FLAT_KNN, threads)]
        # Against FAISS's faster mode in each round.
        single = [a / min(b, c) for a, b, c in zip(ours_m.single, ranged.single, nearest.single, strict=True)]
        batch = [a / min(b, c) for a, b, c in zip(ours_m.batched, ranged.batched, nearest.batched, strict=True)]
        print(
            f"  {threads} thread(s), ours / FAISS IndexFlatL2 (its faster mode) per round: one probe "
            + ", ".join(f"{x:.2f}x" for x in single)
            + " (goal <= 1.0x); batch per probe "
            + ", ".join(f"{x:.2f}x" for x in batch)
            + " (goal <= 0.5x)"
        )


def _recorder(sealed: SealedEncodings, encodings: np.ndarray):
    def fetch(face_ids: np.ndarray) -> dict[int, np.ndarray]:
        sealed.prepare(int(i) for i in face_ids)
        return {int(i): encodings[int(i) - 1].astype(np.float64) for i in face_ids}

    return fetch


def _spread(values: list[float]) -> str:
    values_ms = sorted(v * 1e3 for v in values)
    median = float(np.median(values_ms))
    if len(values_ms) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} [{values_ms[0]:.1f}-{values_ms[-1]:.1f}]"


# Memory per face, each size in a fresh process.


def synthetic_chunks(n: int, seed: int, chunk: int = 1 << 17):
    """(face ids, subject ids, float64 vectors) chunks of n synthetic faces, subject after subject, never more than
    one chunk in memory: the spreads of bench/search.py (components around a shared mean with spread 0.11, subjects
    0.045, faces 0.027), 1 + Poisson(2) faces a subject."""
    from search import SD_FACE, SD_MEAN, SD_SUBJECT

    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, SD_MEAN, 128)
    made, subject = 0, 0
    while made < n:
        size = min(chunk, n - made)
        counts = 1 + rng.poisson(2.0, size=size)
        counts = counts[: int(np.searchsorted(np.cumsum(counts), size)) + 1]
        counts[-1] -= int(counts.sum()) - size
        counts = counts[counts > 0]
        subjects = np.repeat(np.arange(subject + 1, subject + 1 + len(counts)), counts)
        centres = mean + rng.normal(0.0, SD_SUBJECT, (len(counts), 128))
        vectors = np.repeat(centres, counts, axis=0) + rng.normal(0.0, SD_FACE, (size, 128))
        yield np.arange(made + 1, made + size + 1), subjects, vectors
        made += size
        subject += len(counts)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(n: int, kind: str, seed: int) -> None:
    """In a fresh process: RSS after loading n faces minus RSS before, as JSON on stdout."""
    from matching.quantised import GalleryIndex, memory_release

    tiny = GalleryIndex.build(synthetic_chunks(1000, seed), expected=1000)
    tiny.search(np.zeros((1, 128)), threshold=0.6, k=5, exact=lambda ids: {})  # numba compiled (or read from cache)
    del tiny
    memory_release()
    before = rss_bytes()
    start = time.perf_counter()
    if kind == "ours":
        index = GalleryIndex.build(synthetic_chunks(n, seed), expected=n)
        held = index.nbytes
    else:
        from matching.search import GalleryMatrix

        face_ids, subject_ids = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        encodings = np.empty((n, 128), dtype=np.float32)
        for ids, subjects, vectors in synthetic_chunks(n, seed):
            face_ids[ids - 1], subject_ids[ids - 1], encodings[ids - 1] = ids, subjects, vectors
            del ids, subjects, vectors
        index = GalleryMatrix.build(face_ids, subject_ids, encodings)
        del face_ids, subject_ids, encodings
        held = sum(a.nbytes for a in (index.matrix, index.sq_norms, index.face_ids, index.subject_ids, index.starts))
    seconds = time.perf_counter() - start
    memory_release()
    after = rss_bytes()
    print(json.dumps({"n": n, "kind": kind, "before": before, "after": after, "held": held, "seconds": seconds}))
    del index


def memory_run(sizes: list[int], seed: int) -> None:
    print(
        "\nmemory per face in a worker process: RSS after the load minus RSS before, in a fresh process per size, "
        "after numba's kernels are compiled (or read from their cache); synthetic encodings made chunk by chunk "
        "(bench/contenders.py synthetic_chunks), never all in memory"
    )
    print(f"  {'faces':>12}  {'kind':<26}{'RSS before':>12}{'RSS after':>12}{'per face':>10}{'arrays':>8}{'load s':>8}")
    runs = [(n, "ours") for n in sizes] + [(min(sizes), "float32")]
    for n, kind in runs:
        output = subprocess.run(
            [sys.executable, str(Path(__file__).resolve().parent / "search.py"), "--memory-child", f"{kind}:{n}",
             "--seed", str(seed)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        result = json.loads(output.strip().splitlines()[-1])
        per_face = (result["after"] - result["before"]) / n
        label = "ours (int8 index)" if kind == "ours" else "float32 matrix (before)"
        print(
            f"  {n:>12,}  {label:<26}{result['before'] / 2**20:>10.0f}MB{result['after'] / 2**20:>10.0f}MB"
            f"{per_face:>9.1f}B{result['held'] / n:>7.0f}B{result['seconds']:>8.1f}"
        )
    print("  (arrays: the index's own arrays per face; goal: at most 160 bytes a face)")
