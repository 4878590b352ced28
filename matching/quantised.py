"""Exact gallery search from int8 codes: a prefilter with a proven bound, then an exact re-rank.

A worker keeps each gallery face as 128 int8 codes and a few numbers (144 bytes with 32-bit ids, against 512 for
a float32 row), never its encoding. A search reads the codes, keeps every face that the bound below cannot rule
out, and computes the exact distance of those few from their float64 encodings, which the caller supplies (the
worker decrypts them from the database), so that the answer is the exact search's by construction.

The bound. A quantiser maps a vector v to codes c(v) = clip(round((v - a) / s), -127, 127) with one offset a
per coordinate and one scale s, and v's approximation is v̂ = a + s c(v). For each gallery face g the index
stores r_g >= |g - ĝ| (rounded up to float32), and for a probe p the search computes r_p >= |p - p̂| the same way.
Since ĝ - p̂ = s (c(g) - c(p)) exactly, the triangle inequality gives

    s sqrt(D) - r_g - r_p  <=  |g - p|  <=  s sqrt(D) + r_g + r_p,     D = |c(g) - c(p)|^2,

and D is an integer, computed exactly (128 products of int8 in int32). Every bound is then widened by MARGIN,
far above the rounding of the float64 arithmetic around it (about 1e-15) and far below the quantisation's own
slack (about 1e-2), so the computed exact distance of every face lies within [lower, upper].

What the search keeps, per probe:
- only faces whose lower bound is within the threshold (the rest are farther than the threshold);
- of those, with U(σ) the smallest upper bound among subject σ's faces and U_k the k-th smallest U(σ) over
  subjects (or the threshold, if smaller or if there are fewer than k subjects): only faces whose lower bound is at
  most both U(σ) and U_k. A face above U(σ) is strictly farther than another face of its subject, so it is not
  that subject's best; a face above U_k is strictly farther than k other subjects' best faces, so it can neither
  be the best face of a subject in the top k nor bring its subject in. Ties are never pruned: the comparisons are
  inclusive, and the exact ranking below settles them (by subject id, then face id), as the float64 brute force
  does.
The scan itself applies the same rule with a running U_k (one per thread, over the rows it has seen; never below
the final one), so that a dense gallery does not hand back every row within a loose threshold.

Exact distances are `exact_distances`: float64, row by row; a face is within the threshold when its distance is at
most the threshold. The property test (tests/matching/test_quantised.py) checks random galleries, ties and faces
at exactly the threshold against a plain NumPy brute force.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from matching.search import ENCODING_DIM, Hit

CODE_LIMIT = 127
# Absolute widening of every bound, in distance units (see the module's docstring).
MARGIN = 1e-7
# Sentinel squared norm of a removed row: its D is then beyond any limit, so the scan skips it unread.
REMOVED = np.int32(1 << 30)
# Rows per thread below which a scan is not split.
SPLIT_MIN_ROWS = 32_768
INT32_MAX = np.iinfo(np.int32).max

ExactSource = Callable[[np.ndarray], Mapping[int, np.ndarray]]


def exact_distances(vectors: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Float64 distances from each row of vectors to probe: the definition every search result follows.

    Row by row (NumPy's pairwise sum along each contiguous row), so a row's distance does not depend on which
    other rows are passed with it.
    """
    diff = np.asarray(vectors, dtype=np.float64).reshape(-1, ENCODING_DIM) - np.asarray(probe, dtype=np.float64)
    return np.sqrt(np.add.reduce(diff * diff, axis=1))


def ids_array(values) -> np.ndarray:
    """Ids as int32 when they fit (4 bytes a face fewer), else int64."""
    array = np.asarray(values, dtype=np.int64).reshape(-1)
    if array.size == 0 or (array.min() >= 0 and array.max() <= INT32_MAX):
        return array.astype(np.int32)
    return array


@dataclass(frozen=True)
class Quantiser:
    offset: np.ndarray  # (128,) float64
    scale: float

    @classmethod
    def default(cls) -> Quantiser:
        """Offsets at 0 and steps of 1/232: codes cover ±0.547, beyond every component of face_recognition's
        encodings (real ones stay within about ±0.52)."""
        return cls(offset=np.zeros(ENCODING_DIM), scale=1.0 / 232)

    @classmethod
    def fit(cls, sample: np.ndarray) -> Quantiser:
        """The default, widened if the sample reaches beyond it.

        The range is the engine's rather than the gallery's: a range fitted to the first faces loaded would clip
        faces and probes unlike them (a gallery of one population searched with another's photos), and a clipped
        vector's error, though still bounded, leaves its bound too loose to rule anything out. A step of 1/232
        puts a vector's error at about 0.014 in distance, so a search decrypts the faces within about 0.03 of the
        threshold or of the k-th subject besides those it returns.
        """
        sample = np.asarray(sample, dtype=np.float64).reshape(-1, ENCODING_DIM)
        default = cls.default()
        if sample.size == 0:
            return default
        reach = float(np.abs(sample).max())
        if not np.isfinite(reach) or reach * 1.02 <= CODE_LIMIT * default.scale:
            return default
        return cls(offset=default.offset, scale=reach * 1.02 / CODE_LIMIT)

    def encode(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes int8, squared code norms int32, residual bounds float64) of each row."""
        vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, ENCODING_DIM)
        if not np.isfinite(vectors).all():
            raise ValueError("An encoding is not finite (NaN or infinity); it cannot be searched.")
        scaled = (vectors - self.offset) / self.scale
        np.rint(scaled, out=scaled)
        np.clip(scaled, -CODE_LIMIT, CODE_LIMIT, out=scaled)
        codes = scaled.astype(np.int8)
        # The residual from the approximation as it is defined (a + s c), computed in float64; MARGIN covers its
        # rounding.
        approximation = self.offset + self.scale * codes.astype(np.float64)
        diff = vectors - approximation
        residuals = np.sqrt(np.add.reduce(diff * diff, axis=1))
        wide = codes.astype(np.int32)
        sq_norms = np.add.reduce(wide * wide, axis=1).astype(np.int32)
        return codes, sq_norms, residuals


def residuals_up(residuals: np.ndarray) -> np.ndarray:
    """float64 residual bounds as float32, never rounded down."""
    narrow = residuals.astype(np.float32)
    low = narrow.astype(np.float64) < residuals
    narrow[low] = np.nextafter(narrow[low], np.float32(np.inf))
    return narrow


@dataclass
class Segment:
    """Rows sorted by face id. A removed row keeps its face id (so that it is never added again) and gets the
    REMOVED squared norm and a negative residual."""

    codes: np.ndarray  # (n, 128) int8
    sq_norms: np.ndarray  # (n,) int32
    residuals: np.ndarray  # (n,) float32
    face_ids: np.ndarray  # (n,) int32 or int64, ascending
    subject_ids: np.ndarray  # (n,) int32 or int64
    residual_max: float
    removed: int = 0

    @property
    def rows(self) -> int:
        return int(self.face_ids.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.codes, self.sq_norms, self.residuals, self.face_ids, self.subject_ids))

    @classmethod
    def empty(cls) -> Segment:
        return cls(
            codes=np.zeros((0, ENCODING_DIM), dtype=np.int8),
            sq_norms=np.zeros(0, dtype=np.int32),
            residuals=np.zeros(0, dtype=np.float32),
            face_ids=np.zeros(0, dtype=np.int32),
            subject_ids=np.zeros(0, dtype=np.int32),
            residual_max=0.0,
        )

    def positions(self, face_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of face_ids are rows here, their rows)."""
        if self.rows == 0 or face_ids.size == 0:
            return np.zeros(face_ids.shape, dtype=bool), np.zeros(0, dtype=np.int64)
        rows = np.searchsorted(self.face_ids, face_ids)
        rows = np.minimum(rows, self.rows - 1)
        found = self.face_ids[rows] == face_ids
        return found, rows[found]

    def live(self) -> np.ndarray:
        return self.sq_norms != REMOVED

    @classmethod
    def concatenate(cls, parts: list[Segment]) -> Segment:
        """Live rows of every part, sorted by face id."""
        keep = [part.live() for part in parts]
        face_ids = ids_array(np.concatenate([p.face_ids[k] for p, k in zip(parts, keep, strict=True)]))
        order = np.argsort(face_ids, kind="stable")
        residuals = np.concatenate([p.residuals[k] for p, k in zip(parts, keep, strict=True)])[order]
        return cls(
            codes=np.concatenate([p.codes[k] for p, k in zip(parts, keep, strict=True)])[order],
            sq_norms=np.concatenate([p.sq_norms[k] for p, k in zip(parts, keep, strict=True)])[order],
            residuals=residuals,
            face_ids=face_ids[order],
            subject_ids=ids_array(np.concatenate([p.subject_ids[k] for p, k in zip(parts, keep, strict=True)]))[order],
            residual_max=float(residuals.max()) if residuals.size else 0.0,
        )


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    # Keyed by process id too: a pool made before a fork has no threads in the child.
    key = (os.getpid(), threads)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="gallery-scan")
        return pool


def memory_release() -> None:
    """Hand freed heap pages back to the system (glibc), so that a process's size after a load is what it keeps."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class GalleryIndex:
    """A gallery's faces as int8 codes: a large base segment and a small delta that takes additions.

    Additions go to the delta, which is re-sorted (it is small) and merged into the base once it passes an eighth
    of it; removals mark rows in place. Neither touches the other rows' codes, so an enrolment or an erasure costs
    the rows it changes, not a reload of the gallery.
    """

    def __init__(self, quantiser: Quantiser, base: Segment | None = None) -> None:
        self.quantiser = quantiser
        self.base = base if base is not None else Segment.empty()
        self.delta = Segment.empty()
        self._lock = threading.Lock()

    # Building and changing

    @classmethod
    def build(
        cls,
        chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
        *,
        expected: int = 0,
        quantiser: Quantiser | None = None,
    ) -> GalleryIndex:
        """An index from (face ids, subject ids, float64 vectors) chunks in ascending face id order.

        `expected` rows are allocated once and filled chunk by chunk, so that a large gallery never sits in memory
        twice; the quantiser is fitted on the first chunk unless one is given.
        """
        codes = np.empty((expected, ENCODING_DIM), dtype=np.int8)
        sq_norms = np.empty(expected, dtype=np.int32)
        residuals = np.empty(expected, dtype=np.float32)
        face_ids = np.empty(expected, dtype=np.int32)
        subject_ids = np.empty(expected, dtype=np.int32)
        extra: list[Segment] = []
        filled = 0
        for chunk_faces, chunk_subjects, vectors in chunks:
            if quantiser is None:
                quantiser = Quantiser.fit(vectors)
            chunk_codes, chunk_sq, chunk_residuals = quantiser.encode(vectors)
            chunk_faces, chunk_subjects = ids_array(chunk_faces), ids_array(chunk_subjects)
            if chunk_faces.dtype == np.int64 and face_ids.dtype == np.int32:
                face_ids = face_ids.astype(np.int64)
            if chunk_subjects.dtype == np.int64 and subject_ids.dtype == np.int32:
                subject_ids = subject_ids.astype(np.int64)
            take = max(0, min(len(chunk_faces), expected - filled))
            end = filled + take
            codes[filled:end] = chunk_codes[:take]
            sq_norms[filled:end] = chunk_sq[:take]
            residuals[filled:end] = residuals_up(chunk_residuals[:take])
            face_ids[filled:end] = chunk_faces[:take]
            subject_ids[filled:end] = chunk_subjects[:take]
            filled = end
            if take < len(chunk_faces):
                # More rows than counted (an enrolment between the count and the read): kept aside, merged below.
                extra.append(
                    _segment(
                        chunk_codes[take:],
                        chunk_sq[take:],
                        chunk_residuals[take:],
                        chunk_faces[take:],
                        chunk_subjects[take:],
                    )
                )
        base = Segment(
            codes=codes,
            sq_norms=sq_norms,
            residuals=residuals,
            face_ids=face_ids,
            subject_ids=subject_ids,
            residual_max=0.0,
        )
        if filled < expected:
            base = Segment.concatenate([_slice(base, filled)])
        if extra or (base.rows > 1 and not bool(np.all(np.diff(base.face_ids) > 0))):
            # Rows out of face id order (or repeated) would hide a removed face from `positions`: sorted here.
            base = Segment.concatenate([base, *extra])
        base.residual_max = float(base.residuals.max()) if base.rows else 0.0
        memory_release()
        return cls(quantiser or Quantiser.default(), base)

    def add(self, face_ids, subject_ids, vectors) -> int:
        """Add faces not already here (a face once removed stays removed); returns how many were added."""
        face_ids = ids_array(face_ids)
        subject_ids = ids_array(subject_ids)
        vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, ENCODING_DIM)
        with self._lock:
            new = ~self._present(face_ids)
            if not new.any():
                return 0
            face_ids, subject_ids, vectors = face_ids[new], subject_ids[new], vectors[new]
            # One face listed twice in a change is added once.
            face_ids, first = np.unique(face_ids, return_index=True)
            codes, sq_norms, residuals = self.quantiser.encode(vectors[first])
            added = _segment(codes, sq_norms, residuals, face_ids, subject_ids[first])
            delta = Segment.concatenate([self.delta, added])
            if delta.rows > max(4096, self.base.rows // 8):
                self.base, self.delta = Segment.concatenate([self.base, delta]), Segment.empty()
            else:
                self.delta = delta
            return added.rows

    def remove(self, face_ids) -> int:
        """Mark faces removed; returns how many live rows were removed."""
        face_ids = np.asarray(face_ids, dtype=np.int64).reshape(-1)
        removed = 0
        with self._lock:
            for segment in (self.base, self.delta):
                _, rows = segment.positions(face_ids)
                rows = rows[segment.sq_norms[rows] != REMOVED]
                segment.sq_norms[rows] = REMOVED
                segment.residuals[rows] = -1.0
                segment.removed += len(rows)
                removed += len(rows)
        return removed

    def _present(self, face_ids: np.ndarray) -> np.ndarray:
        present = np.zeros(face_ids.shape, dtype=bool)
        for segment in (self.base, self.delta):
            found, _ = segment.positions(face_ids)
            present |= found
        return present

    # Reading

    @property
    def size(self) -> int:
        """Live faces."""
        return self.base.rows - self.base.removed + self.delta.rows - self.delta.removed

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + self.delta.nbytes

    def face_ids(self) -> np.ndarray:
        """The live faces' ids, ascending (tests and benchmarks)."""
        parts = [s.face_ids[s.live()] for s in (self.base, self.delta)]
        return np.sort(np.concatenate(parts).astype(np.int64))

    def search(
        self,
        probes: np.ndarray,
        *,
        threshold: float,
        k: int,
        exact: ExactSource,
        threads: int = 1,
    ) -> list[list[Hit]]:
        """For each probe, up to k subjects whose best face is within threshold, closest first (ties by subject id,
        then face id); distances are `exact_distances`.

        `exact(face_ids)` returns the float64 encodings of those faces that are still searchable. A face it leaves
        out (erased since this index last caught up) is removed here and the search runs again without it.
        """
        probes = np.asarray(probes, dtype=np.float64).reshape(-1, ENCODING_DIM)
        results: list[list[Hit]] = [[] for _ in range(len(probes))]
        if k <= 0 or len(probes) == 0:
            return results
        threshold = float(threshold)
        while True:
            shortlists = self._shortlists(probes, threshold, k, threads)
            wanted = np.unique(np.concatenate([face for face, _ in shortlists])) if shortlists else np.zeros(0)
            vectors = exact(wanted.astype(np.int64)) if wanted.size else {}
            missing = [int(face) for face in wanted if int(face) not in vectors]
            if missing:
                self.remove(missing)
                continue
            for index, (faces, subjects) in enumerate(shortlists):
                results[index] = _rank(faces, subjects, vectors, probes[index], threshold, k)
            return results

    def _shortlists(
        self, probes: np.ndarray, threshold: float, k: int, threads: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per probe, the (face ids, subject ids) whose exact distance could matter (see the module's docstring)."""
        probe_codes, probe_sq, probe_residuals = self.quantiser.encode(probes)
        reach = probe_residuals + MARGIN
        with self._lock:
            segments = [s for s in (self.base, self.delta) if s.rows]
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for segment in segments:
            for probe_index, rows, lower, upper in _scan(
                segment, probe_codes, probe_sq.astype(np.int64), reach, threshold, self.quantiser.scale, k, threads
            ):
                parts.append(
                    (probe_index, segment.face_ids[rows], segment.subject_ids[rows].astype(np.int64), lower, upper)
                )
        if not parts:
            return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)) for _ in range(len(probes))]
        probe_index, faces, subjects, lower, upper = (np.concatenate(column) for column in zip(*parts, strict=True))
        faces = faces.astype(np.int64)
        order = np.argsort(probe_index, kind="stable")
        probe_index, faces, subjects, lower, upper = (a[order] for a in (probe_index, faces, subjects, lower, upper))
        cuts = np.searchsorted(probe_index, np.arange(len(probes) + 1))
        shortlists = []
        for p in range(len(probes)):
            a, b = cuts[p], cuts[p + 1]
            shortlists.append(_prune(faces[a:b], subjects[a:b], lower[a:b], upper[a:b], threshold, k))
        return shortlists


def _slice(segment: Segment, rows: int) -> Segment:
    return Segment(
        codes=segment.codes[:rows],
        sq_norms=segment.sq_norms[:rows],
        residuals=segment.residuals[:rows],
        face_ids=segment.face_ids[:rows],
        subject_ids=segment.subject_ids[:rows],
        residual_max=segment.residual_max,
    )


def _segment(codes, sq_norms, residuals, face_ids, subject_ids) -> Segment:
    narrow = residuals_up(np.asarray(residuals, dtype=np.float64))
    return Segment(
        codes=np.ascontiguousarray(codes, dtype=np.int8),
        sq_norms=np.asarray(sq_norms, dtype=np.int32),
        residuals=narrow,
        face_ids=ids_array(face_ids),
        subject_ids=ids_array(subject_ids),
        residual_max=float(narrow.max()) if narrow.size else 0.0,
    )


def _prune(
    faces: np.ndarray, subjects: np.ndarray, lower: np.ndarray, upper: np.ndarray, threshold: float, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep faces whose lower bound is within the threshold, their subject's U(σ) and the k-th subject's U_k."""
    keep = lower <= threshold
    faces, subjects, lower, upper = faces[keep], subjects[keep], lower[keep], upper[keep]
    if faces.size == 0:
        return faces, subjects
    unique, inverse = np.unique(subjects, return_inverse=True)
    best_upper = np.full(len(unique), np.inf)
    np.minimum.at(best_upper, inverse, upper)
    limit = threshold
    if len(unique) >= k:
        limit = min(limit, float(np.partition(best_upper, k - 1)[k - 1]))
    keep = (lower <= limit) & (lower <= best_upper[inverse])
    return faces[keep], subjects[keep]


def _rank(
    faces: np.ndarray,
    subjects: np.ndarray,
    vectors: Mapping[int, np.ndarray],
    probe: np.ndarray,
    threshold: float,
    k: int,
) -> list[Hit]:
    if faces.size == 0:
        return []
    matrix = np.stack([np.asarray(vectors[int(face)], dtype=np.float64) for face in faces])
    distances = exact_distances(matrix, probe)
    within = distances <= threshold
    faces, subjects, distances = faces[within], subjects[within], distances[within]
    if faces.size == 0:
        return []
    # Each subject's best face (ties to the lower face id), then the k closest subjects (ties to the lower id).
    order = np.lexsort((faces, distances, subjects))
    faces, subjects, distances = faces[order], subjects[order], distances[order]
    first = np.concatenate(([True], subjects[1:] != subjects[:-1]))
    faces, subjects, distances = faces[first], subjects[first], distances[first]
    ranked = np.lexsort((subjects, distances))[:k]
    return [Hit(subject_id=int(subjects[i]), face_id=int(faces[i]), distance=float(distances[i])) for i in ranked]


def _scan(
    segment: Segment,
    probe_codes: np.ndarray,
    probe_sq: np.ndarray,
    reach: np.ndarray,
    threshold: float,
    scale: float,
    k: int,
    threads: int,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The kernel over the segment's rows, split into contiguous ranges across threads."""
    from matching.kernels import scan_rows

    n = segment.rows
    threads = max(1, min(int(threads), n // SPLIT_MIN_ROWS or 1))
    args = (
        segment.codes,
        segment.sq_norms,
        segment.residuals,
        segment.subject_ids,
    )
    tail = (np.ascontiguousarray(probe_codes), probe_sq, reach, threshold, scale, segment.residual_max, k)
    if threads == 1:
        return [scan_rows(*args, 0, n, *tail)]
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    futures = [
        _pool(threads).submit(scan_rows, *args, int(bounds[i]), int(bounds[i + 1]), *tail) for i in range(threads)
    ]
    return [future.result() for future in futures]
