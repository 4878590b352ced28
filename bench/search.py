"""Search benchmark: matching.search.search_gallery against the memory-bandwidth bound.

Synthetic galleries of 128-d float32 encodings (fixed seed) are searched one
probe per call and in batches. In the same run the script times one plain
read of the same matrix (the least any exact search must spend per probe when
probes come one at a time), the BLAS products alone, and naive numpy and
Python baselines on the smaller sizes. A few probes per size are checked
against a float64 brute-force search.

    .venv/bin/python bench/search.py
    .venv/bin/python bench/search.py --sizes 10000,100000 --probes 128 --batch 32
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matching.search import GalleryMatrix

ROOT = Path(__file__).resolve().parent.parent
DIM = 128
# Spreads measured on real face_recognition encodings (LFW): components sit around a
# shared mean with a spread of about 0.11 and vary by about 0.05 between people. These
# give a same-person distance near 0.43 and a different-person distance near 0.84, the
# figures in shared/faces/README.md, so the threshold admits a realistic number of hits.
SD_MEAN = 0.11
SD_SUBJECT = 0.045
SD_FACE = 0.027
SD_COPY = 0.005  # a re-upload of a gallery photo: distance about 0.06


def django_setup() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()


@dataclass
class Synthetic:
    face_ids: np.ndarray  # (N,) int64, in insertion order
    subject_ids: np.ndarray  # (N,) int64, subjects interleaved as uploads would be
    encodings: np.ndarray  # (N, 128) float32
    probes: np.ndarray  # (P, 128) float32
    probe_kinds: list[str]


class OpenBlas:
    """The OpenBLAS that numpy loaded, reached through its C API.

    threadpoolctl is not a dependency of the project; these three calls are
    the part of it this benchmark needs: the core type chosen at run time and
    the thread count, which decides single-probe latency on a small machine.
    """

    PREFIXES = ("scipy_openblas_", "openblas_")
    SUFFIXES = ("64_", "")

    def __init__(self, library: ctypes.CDLL, prefix: str, suffix: str) -> None:
        self.library = library
        self.get_threads = getattr(library, f"{prefix}get_num_threads{suffix}")
        self.set_threads = getattr(library, f"{prefix}set_num_threads{suffix}")
        self.corename = getattr(library, f"{prefix}get_corename{suffix}")
        self.corename.restype = ctypes.c_char_p
        self.config = getattr(library, f"{prefix}get_config{suffix}")
        self.config.restype = ctypes.c_char_p

    @classmethod
    def find(cls) -> OpenBlas | None:
        try:
            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
        except OSError:
            return None
        for path in paths:
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix in cls.PREFIXES:
                for suffix in cls.SUFFIXES:
                    if hasattr(library, f"{prefix}get_num_threads{suffix}"):
                        return cls(library, prefix, suffix)
        return None

    @property
    def threads(self) -> int:
        return int(self.get_threads())

    @threads.setter
    def threads(self, count: int) -> None:
        self.set_threads(ctypes.c_int(count))

    def describe(self) -> str:
        return f"{self.config().decode()}; core {self.corename().decode()}; threads {self.threads}"


def blas_describe(openblas: OpenBlas | None) -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        if openblas is not None:
            return f"{openblas.describe()} (read through ctypes; threadpoolctl is not installed)"
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            built = f"{blas.get('name')} {blas.get('version')}"
        except Exception:
            built = "unknown"
        return f"{built} (threadpoolctl not installed: runtime core type and threads unknown)"
    parts = [
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} threads={i.get('num_threads')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def synthetic_make(n: int, faces_per_subject: float, probes: int, rng: np.random.Generator) -> Synthetic:
    mean = rng.normal(0.0, SD_MEAN, DIM).astype(np.float32)
    # Poisson face counts per subject: most subjects have a few photos, some one.
    counts = 1 + rng.poisson(max(faces_per_subject - 1.0, 0.0), size=n)
    counts = counts[: int(np.searchsorted(np.cumsum(counts), n)) + 1]
    subjects = len(counts)
    centres = mean + rng.normal(0.0, SD_SUBJECT, (subjects, DIM)).astype(np.float32)
    row_subject = rng.permutation(np.repeat(np.arange(subjects), counts)[:n])
    encodings = np.empty((n, DIM), dtype=np.float32)
    # Chunked so that the 1M gallery never holds a second full-size temporary.
    step = 1 << 17
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        chunk = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
        chunk *= SD_FACE
        chunk += centres[row_subject[lo:hi]]
        encodings[lo:hi] = chunk
    subject_numbers = rng.permutation(subjects).astype(np.int64) + 1
    face_ids = np.arange(1, n + 1, dtype=np.int64)

    kinds = ["copy", "known", "known", "unknown"]
    probe_kinds = [kinds[i % len(kinds)] for i in range(probes)]
    rows = []
    for kind in probe_kinds:
        if kind == "copy":
            vector = encodings[rng.integers(n)] + rng.normal(0.0, SD_COPY, DIM)
        elif kind == "known":
            vector = centres[row_subject[rng.integers(n)]] + rng.normal(0.0, SD_FACE, DIM)
        else:
            vector = mean + rng.normal(0.0, SD_SUBJECT, DIM) + rng.normal(0.0, SD_FACE, DIM)
        rows.append(vector)
    return Synthetic(
        face_ids=face_ids,
        subject_ids=subject_numbers[row_subject],
        encodings=encodings,
        probes=np.asarray(rows, dtype=np.float32),
        probe_kinds=probe_kinds,
    )


def best_of(function: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


class ParallelRead:
    """A plain read of the matrix split over all cores.

    numpy drops the GIL inside reduction loops, so the threads read their
    slices at once; the pool is made once so that its start-up is not timed.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers)

    def __call__(self, matrix: np.ndarray) -> None:
        list(self.pool.map(lambda part: np.maximum.reduce(part, axis=None), np.array_split(matrix, self.workers)))

    def close(self) -> None:
        self.pool.shutdown()


def read_measures(matrix: np.ndarray, reader: ParallelRead, repeats: int) -> list[tuple[str, float]]:
    """Several ways to touch every byte once; the fastest is the bound.

    np.add.reduce is the obvious one, but its pairwise float summation is
    compute-limited on cached sizes; the SIMD max and BLAS sdot are closer to
    what the memory system can deliver.
    """
    flat = matrix.reshape(-1)
    return [
        ("read once: np.add.reduce", best_of(lambda: np.add.reduce(matrix, axis=None), repeats)),
        ("read once: np.maximum.reduce", best_of(lambda: np.maximum.reduce(matrix, axis=None), repeats)),
        (f"read once: maximum, {reader.workers} threads", best_of(lambda: reader(matrix), repeats)),
        ("read once: BLAS sdot(flat, flat)", best_of(lambda: flat @ flat, repeats)),
    ]


def reference_search(
    data: Synthetic, probes: np.ndarray, threshold: float, k: int
) -> list[list[tuple[int, int, float]]]:
    """Brute force in float64 on the unsorted input: direct differences, no |a|^2+|b|^2-2ab."""
    probes64 = probes.astype(np.float64)
    distances = np.empty((len(probes), len(data.encodings)), dtype=np.float64)
    step = 1 << 15  # 32k rows: a 32 MB float64 chunk, not a 1 GB copy of the 1M gallery
    for lo in range(0, len(data.encodings), step):
        chunk = data.encodings[lo : lo + step].astype(np.float64)
        for i, probe in enumerate(probes64):
            diff = chunk - probe
            distances[i, lo : lo + len(chunk)] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    results = []
    for row in distances:
        best: dict[int, tuple[float, int]] = {}
        for index in np.flatnonzero(row <= threshold):
            subject = int(data.subject_ids[index])
            candidate = (float(row[index]), int(data.face_ids[index]))
            if subject not in best or candidate < best[subject]:
                best[subject] = candidate
        ordered = sorted(best.items(), key=lambda item: (item[1][0], item[0]))[:k]
        results.append([(subject, face, distance) for subject, (distance, face) in ordered])
    return results


def compare(results: list, reference: list[list[tuple[int, int, float]]]) -> tuple[bool, float]:
    same = True
    worst = 0.0
    for hits, expected in zip(results, reference, strict=True):
        if [(h.subject_id, h.face_id) for h in hits] != [(s, f) for s, f, _ in expected]:
            same = False
            continue
        for h, (_, _, distance) in zip(hits, expected, strict=True):
            worst = max(worst, abs(h.distance - distance))
    return same, worst


def python_loop_search(data: Synthetic, probe: np.ndarray, threshold: float, k: int) -> list[tuple[int, float]]:
    """What a first version would write: one distance per face in a Python loop."""
    best: dict[int, float] = {}
    for encoding, subject in zip(data.encodings, data.subject_ids.tolist(), strict=True):
        distance = float(np.linalg.norm(encoding - probe))
        if distance <= threshold and distance < best.get(subject, float("inf")):
            best[subject] = distance
    return sorted(best.items(), key=lambda item: (item[1], item[0]))[:k]


@dataclass
class Timings:
    threads: int | None  # BLAS threads; None when they cannot be read
    gemv: float
    gemm: float
    single: np.ndarray  # seconds per single-probe call
    batched: float  # seconds per probe
    single_results: list
    batched_results: list
    old_single: np.ndarray  # the reduceat version, seconds per single-probe call
    old_batched: float
    old_results: list
    sharded_batched: float  # shards searched one after another in this process, then merged
    sharded_results: list
    shards: int

    @property
    def label(self) -> str:
        return "" if self.threads is None else f", {self.threads} BLAS thread{'s' if self.threads > 1 else ''}"


@dataclass
class SizeResult:
    size: int
    bound_ms: float
    timings: list[Timings]
    identical: bool


def timings_measure(
    gallery: GalleryMatrix, probes: np.ndarray, args: argparse.Namespace, threads: int | None
) -> Timings:
    from matching.search import gallery_shard, hits_merge, search_gallery, search_gallery_reduceat, shards_plan

    matrix = gallery.matrix

    def search(block: np.ndarray) -> list:
        return search_gallery(gallery, block, threshold=args.threshold, k=args.k, batch=args.batch)

    def search_old(block: np.ndarray) -> list:
        return search_gallery_reduceat(gallery, block, threshold=args.threshold, k=args.k, batch=args.batch)

    shard_faces = args.shard_faces or max(1, gallery.size // 4)
    plan = shards_plan(gallery.subject_ids, np.diff(np.append(gallery.starts, gallery.size)), shard_faces)
    shards = [gallery_shard(gallery, shard) for shard in plan]

    def search_sharded(block: np.ndarray) -> list:
        parts = [search_gallery(shard, block, threshold=args.threshold, k=args.k, batch=args.batch) for shard in shards]
        return [hits_merge([part[i] for part in parts], args.k) for i in range(len(block))]

    search(probes[:1])  # first touch of the matrix pages and BLAS buffers
    gemv = best_of(lambda: matrix @ probes[0], args.repeats)
    block = probes[: args.batch]
    gemm = best_of(lambda: block @ matrix.T, args.repeats) / len(block)
    single_times = []
    single_results = []
    for i in range(len(probes)):
        start = time.perf_counter()
        single_results.extend(search(probes[i : i + 1]))
        single_times.append(time.perf_counter() - start)
    batched_results: list = []

    def batched_call() -> None:
        batched_results[:] = search(probes)

    batched = best_of(batched_call, args.repeats) / len(probes)

    search_old(probes[:1])
    old_single = []
    for i in range(len(probes)):
        start = time.perf_counter()
        search_old(probes[i : i + 1])
        old_single.append(time.perf_counter() - start)
    old_results: list = []

    def old_call() -> None:
        old_results[:] = search_old(probes)

    old_batched = best_of(old_call, args.repeats) / len(probes)
    sharded_results: list = []

    def sharded_call() -> None:
        sharded_results[:] = search_sharded(probes)

    sharded_batched = best_of(sharded_call, args.repeats) / len(probes)
    return Timings(
        threads,
        gemv,
        gemm,
        np.asarray(single_times),
        batched,
        single_results,
        batched_results,
        np.asarray(old_single),
        old_batched,
        old_results,
        sharded_batched,
        sharded_results,
        len(shards),
    )


def size_run(n: int, args: argparse.Namespace, reader: ParallelRead, openblas: OpenBlas | None) -> SizeResult:
    from matching.search import GalleryMatrix

    rng = np.random.default_rng(args.seed + n)
    data = synthetic_make(n, args.faces_per_subject, args.probes, rng)
    start = time.perf_counter()
    gallery = GalleryMatrix.build(data.face_ids, data.subject_ids, data.encodings)
    build_s = time.perf_counter() - start
    matrix = gallery.matrix
    probes = data.probes

    reads = read_measures(matrix, reader, args.repeats)
    bound = min(seconds for _, seconds in reads)

    timings = [timings_measure(gallery, probes, args, openblas.threads if openblas else None)]
    if openblas is not None and openblas.threads != 1 and not args.no_single_thread:
        default = openblas.threads
        openblas.threads = 1
        try:
            timings.append(timings_measure(gallery, probes, args, 1))
        finally:
            openblas.threads = default

    rows: list[tuple[str, float, str]] = [
        *((label, seconds, f"{matrix.nbytes / seconds / 1e9:.1f} GB/s") for label, seconds in reads)
    ]
    batch = min(args.batch, len(probes))
    for t in timings:
        rows += [
            (f"BLAS gemv matrix @ probe{t.label}", t.gemv, "dot products only"),
            (f"BLAS gemm {batch} probes @ matrix.T{t.label}", t.gemm, "per probe; dot products only"),
            (f"search single p50{t.label}", float(np.percentile(t.single, 50)), "search_gallery, one probe per call"),
            (f"search single p95{t.label}", float(np.percentile(t.single, 95)), ""),
            (f"search batched{t.label}", t.batched, f"per probe; {len(probes)} probes, batch={args.batch}"),
            (f"old reduceat single p50{t.label}", float(np.percentile(t.old_single, 50)), "first version, same run"),
            (
                f"old reduceat batched{t.label}",
                t.old_batched,
                f"per probe; old/new {t.old_batched / t.batched:.2f}x",
            ),
            (
                f"sharded batched{t.label}",
                t.sharded_batched,
                f"per probe; {t.shards} shards in turn, merged; {t.sharded_batched / t.batched:.2f}x unsharded",
            ),
        ]
    if n <= args.naive_max:
        naive_probes = probes[: args.naive_probes]
        # face_recognition.face_distance is exactly this expression.
        naive = best_of(lambda: [np.linalg.norm(matrix - p, axis=1) for p in naive_probes], 1) / len(naive_probes)
        rows.append(("numpy norm(matrix - probe)", naive, "= face_recognition.face_distance; distances only"))
    if n <= args.loop_max:
        loop_probes = probes[: max(1, args.naive_probes // 4)]
        loop = best_of(lambda: [python_loop_search(data, p, args.threshold, args.k) for p in loop_probes], 1)
        rows.append(("Python loop over faces", loop / len(loop_probes), "per-face norm, dict of best per subject"))

    checked = list(range(0, len(probes), max(1, len(probes) // args.check)))[: args.check]
    start = time.perf_counter()
    reference = reference_search(data, probes[checked], args.threshold, args.k)
    reference_s = time.perf_counter() - start
    verdicts = []
    worst = 0.0
    for t in timings:
        for results in (t.single_results, t.batched_results, t.old_results, t.sharded_results):
            same, diff = compare([results[i] for i in checked], reference)
            verdicts.append(same)
            worst = max(worst, diff)
    hits = [len(h) for h in timings[0].batched_results]
    kinds_total = {kind: data.probe_kinds.count(kind) for kind in dict.fromkeys(data.probe_kinds)}
    kinds_with_hits = {
        kind: sum(1 for h, pk in zip(hits, data.probe_kinds, strict=True) if pk == kind and h) for kind in kinds_total
    }

    print(
        f"\ngallery {n:,} faces, {len(gallery.starts):,} subjects, {matrix.nbytes / 2**20:.0f} MB float32; "
        f"GalleryMatrix.build {build_s:.2f} s"
    )
    print(
        f"probes: {len(probes)} ("
        + ", ".join(f"{kind} {kinds_with_hits[kind]}/{kinds_total[kind]} with hits" for kind in kinds_total)
        + f"); threshold {args.threshold}, k {args.k}, mean hits {np.mean(hits):.2f}"
    )
    print(f"  {'measure':<46}{'ms/probe':>10}{'vs bound':>10}  note")
    for label, seconds, note in rows:
        print(f"  {label:<46}{seconds * 1e3:>10.3f}{seconds / bound:>9.2f}x  {note}")
    print(
        f"  identical to float64 brute force on {len(checked)} probes, single, batched, old and sharded calls"
        f"{', both BLAS thread counts' if len(timings) > 1 else ''}: {'yes' if all(verdicts) else 'no'} "
        f"(max |distance difference| {worst:.1e}; reference took {reference_s:.1f} s)"
    )
    return SizeResult(size=n, bound_ms=bound * 1e3, timings=timings, identical=all(verdicts))


def compare_size(n: int, args: argparse.Namespace) -> None:
    """The side-by-side run at one size (bench/contenders.py), with the float64 brute force for recall."""
    from contenders import compare_run

    rng = np.random.default_rng(args.seed + n)
    data = synthetic_make(n, args.faces_per_subject, args.probes, rng)
    start = time.perf_counter()
    reference = reference_search(data, data.probes, args.threshold, args.k)
    print(f"\nfloat64 brute force of {len(data.probes)} probes at {n:,} faces (the reference for recall): "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    compare_run(data, args, reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="gallery sizes, comma-separated")
    parser.add_argument("--probes", type=int, default=64, help="probes per size")
    parser.add_argument("--batch", type=int, default=64, help="search_gallery's batch argument")
    parser.add_argument("--threshold", type=float, default=0.6, help="the organisation default")
    parser.add_argument("--k", type=int, default=5, help="max candidates, the organisation default")
    parser.add_argument("--faces-per-subject", type=float, default=3.0, help="mean faces per gallery subject")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each bulk measure; the best is kept")
    parser.add_argument("--check", type=int, default=16, help="probes per size checked against brute force")
    parser.add_argument("--naive-max", type=int, default=100_000, help="largest size for the numpy norm baseline")
    parser.add_argument("--naive-probes", type=int, default=8, help="probes for the naive baselines")
    parser.add_argument("--loop-max", type=int, default=10_000, help="largest size for the Python loop baseline")
    parser.add_argument(
        "--no-single-thread", action="store_true", help="skip the second pass with OpenBLAS limited to one thread"
    )
    parser.add_argument(
        "--shard-faces", type=int, default=0, help="faces per shard for the sharded pass (default: a quarter)"
    )
    parser.add_argument("--seed", type=int, default=20240607)
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the side-by-side run against FAISS (bench/contenders.py)"
    )
    parser.add_argument(
        "--only-compare", action="store_true", help="only the side-by-side run and the memory figures, per size"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the side-by-side run (contenders in turn)")
    parser.add_argument(
        "--compare-min", type=int, default=1_000_000, help="smallest size that gets the side-by-side run"
    )
    parser.add_argument("--memory-sizes", default="1000000,10000000", help="sizes for memory per face ('' to skip)")
    parser.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    django_setup()
    if args.memory_child:
        from contenders import memory_child

        kind, _, n = args.memory_child.partition(":")
        memory_child(int(n), kind, args.seed)
        return
    if not args.no_compare:
        from contenders import faiss_import

        faiss_import()  # says how to install it, before any work
    openblas = OpenBlas.find()
    print(f"search benchmark: numpy {np.__version__}; Python {platform.python_version()}; cores {os.cpu_count()}")
    print(f"BLAS: {blas_describe(openblas)}")
    print(
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}; load average at start: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print("bound = the fastest of the plain reads of the gallery matrix listed first (memory or cache bandwidth)")

    if args.only_compare:
        for n in sizes:
            compare_size(n, args)
        memory_sizes = [int(s.replace("_", "")) for s in args.memory_sizes.split(",") if s.strip()]
        if memory_sizes:
            from contenders import memory_run

            memory_run(memory_sizes, args.seed)
        return
    reader = ParallelRead(os.cpu_count() or 1)
    try:
        results = [size_run(n, args, reader, openblas) for n in sizes]
    finally:
        reader.close()

    print(
        f"\n{'faces':>10}{'BLAS thr':>9}{'bound ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'batched':>10}"
        f"{'p50/bnd':>9}{'p95/bnd':>9}{'bat/bnd':>9}{'old bat':>10}{'old/new':>9}{'sharded':>10}{'shd/bnd':>9}"
        "  identical"
    )
    for r in results:
        for t in r.timings:
            p50 = float(np.percentile(t.single, 50)) * 1e3
            p95 = float(np.percentile(t.single, 95)) * 1e3
            batched = t.batched * 1e3
            print(
                f"{r.size:>10,}{t.threads if t.threads is not None else '?':>9}{r.bound_ms:>10.3f}"
                f"{p50:>10.3f}{p95:>10.3f}{batched:>10.3f}"
                f"{p50 / r.bound_ms:>8.2f}x{p95 / r.bound_ms:>8.2f}x{batched / r.bound_ms:>8.2f}x"
                f"{t.old_batched * 1e3:>10.3f}{t.old_batched / t.batched:>8.2f}x"
                f"{t.sharded_batched * 1e3:>10.3f}{t.sharded_batched * 1e3 / r.bound_ms:>8.2f}x"
                f"  {'yes' if r.identical else 'no'}"
            )
    if not args.no_compare:
        for n in sizes:
            if n >= args.compare_min:
                compare_size(n, args)
        memory_sizes = [int(s.replace("_", "")) for s in args.memory_sizes.split(",") if s.strip()]
        if memory_sizes:
            from contenders import memory_run

            memory_run(memory_sizes, args.seed)


if __name__ == "__main__":
    main()
