"""Gallery search: the float32 matrix search, shards, and the per-process cache of gallery indexes.

Workers search with matching.quantised (int8 codes and an exact re-rank); the float32 search here
(`GalleryMatrix`, `search_gallery`, and the older `search_gallery_reduceat`) is what they held before, kept as
the benchmarks' baseline and as a second reference in tests. It is exact on float32: squared distances come from
matrix products (|a|^2 + |b|^2 - 2ab), one gemv for a single probe, or blocks of gallery rows against a batch of
probes; only entries within the threshold are kept, reduced to each subject's best face, and the k closest
subjects are picked with a partition. Galleries larger than a worker's budget are searched in shards of whole
subjects and merged (see `shards_plan`), and `GalleryCache` keeps each process's indexes at a position in their
organisation's change log.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

ENCODING_DIM = 128


@dataclass(frozen=True)
class GalleryMatrix:
    matrix: np.ndarray  # (N, 128) float32, rows grouped by subject
    sq_norms: np.ndarray  # (N,) float32
    face_ids: np.ndarray  # (N,) int64
    subject_ids: np.ndarray  # (S,) int64, one per group
    starts: np.ndarray  # (S,) int64, first row of each subject's group

    @classmethod
    def build(cls, face_ids: np.ndarray, subject_ids: np.ndarray, encodings: np.ndarray) -> GalleryMatrix:
        face_ids = np.asarray(face_ids, dtype=np.int64)
        subject_ids = np.asarray(subject_ids, dtype=np.int64)
        order = np.lexsort((face_ids, subject_ids))
        matrix = np.ascontiguousarray(np.asarray(encodings, dtype=np.float32).reshape(-1, ENCODING_DIM)[order])
        sorted_subjects = subject_ids[order]
        if len(sorted_subjects):
            boundaries = np.flatnonzero(np.diff(sorted_subjects)) + 1
            starts = np.concatenate(([0], boundaries)).astype(np.int64)
        else:
            starts = np.zeros(0, dtype=np.int64)
        return cls(
            matrix=matrix,
            sq_norms=np.einsum("ij,ij->i", matrix, matrix),
            face_ids=face_ids[order],
            subject_ids=sorted_subjects[starts] if len(starts) else sorted_subjects,
            starts=starts,
        )

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])

    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], self.size)


@dataclass(frozen=True)
class Hit:
    subject_id: int
    face_id: int
    distance: float


# Rows of the gallery per block in a batched search: a (64, 4096) float32 block
# of squared distances is 1 MB, so it stays in this machine's L2 while it is
# thresholded, instead of three gallery-sized temporaries going through memory.
CHUNK_ROWS = 4096


def _candidates_single(gallery: GalleryMatrix, probe: np.ndarray, limit: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Rows within the threshold of one probe and their squared distances, from one gemv over the matrix."""
    d2 = np.matmul(gallery.matrix, probe)  # one pass over the matrix; the (N,) result is small beside it
    d2 *= -2.0
    d2 += gallery.sq_norms
    d2 += np.dot(probe, probe)
    rows = np.flatnonzero(d2 <= limit)
    return rows, d2[rows]


def _candidates_batched(
    gallery: GalleryMatrix, block: np.ndarray, limit: np.float32, chunk_rows: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per probe of the block: rows within the threshold and their squared distances, chunk by chunk."""
    n = gallery.size
    probe_sq = np.einsum("ij,ij->i", block, block)[:, None]
    buffer = np.empty((len(block), min(chunk_rows, n)), dtype=np.float32)
    found_rows: list[list[np.ndarray]] = [[] for _ in range(len(block))]
    found_d2: list[list[np.ndarray]] = [[] for _ in range(len(block))]
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        buf = buffer[:, : hi - lo]
        np.matmul(block, gallery.matrix[lo:hi].T, out=buf)
        buf *= -2.0
        buf += gallery.sq_norms[lo:hi]
        buf += probe_sq
        probe_index, column = np.nonzero(buf <= limit)
        if probe_index.size == 0:
            continue
        values = buf[probe_index, column]
        # nonzero returns probe-major order, so each probe's hits are one run.
        cuts = np.searchsorted(probe_index, np.arange(len(block) + 1))
        for p in np.flatnonzero(np.diff(cuts)):
            a, b = cuts[p], cuts[p + 1]
            found_rows[p].append(column[a:b] + lo)
            found_d2[p].append(values[a:b])
    empty_rows, empty_d2 = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return [
        (np.concatenate(r) if r else empty_rows, np.concatenate(d) if d else empty_d2)
        for r, d in zip(found_rows, found_d2, strict=True)
    ]


def _hits_from_rows(gallery: GalleryMatrix, rows: np.ndarray, d2: np.ndarray, k: int) -> list[Hit]:
    """Each subject's best face among the rows within the threshold, then the k closest subjects."""
    if rows.size == 0 or k <= 0:
        return []
    # Clamped before ranking, so that ranks agree with the distances reported (and with a merge of shards).
    d2 = np.maximum(d2, np.float32(0.0))
    subject_index = np.searchsorted(gallery.starts, rows, side="right") - 1
    # Best face per subject: sort by subject, then distance, then row (rows follow face id within a
    # subject, so a tie goes to the lower face id, as in the brute-force reference).
    order = np.lexsort((rows, d2, subject_index))
    subject_index, rows, d2 = subject_index[order], rows[order], d2[order]
    first = np.concatenate(([True], subject_index[1:] != subject_index[:-1]))
    subject_index, rows, d2 = subject_index[first], rows[first], d2[first]
    subject_ids = gallery.subject_ids[subject_index]
    if len(d2) > k:
        # Everything strictly closer than the k-th distance, plus the ties at it, then the exact order.
        kth = np.partition(d2, k - 1)[k - 1]
        keep = d2 <= kth
        subject_ids, rows, d2 = subject_ids[keep], rows[keep], d2[keep]
    ranked = np.lexsort((subject_ids, d2))[:k]
    return [
        Hit(
            subject_id=int(subject_ids[i]),
            face_id=int(gallery.face_ids[rows[i]]),
            distance=float(np.sqrt(max(float(d2[i]), 0.0))),
        )
        for i in ranked
    ]


def search_gallery(
    gallery: GalleryMatrix,
    probes: np.ndarray,
    *,
    threshold: float,
    k: int,
    batch: int = 64,
    chunk_rows: int = CHUNK_ROWS,
) -> list[list[Hit]]:
    """For each probe, up to k subjects whose best face is within threshold, closest first.

    Squared distances come from matrix products (|g|^2 + |p|^2 - 2 g.p). Only the entries within the
    threshold are kept, so the per-subject reduction runs over a handful of rows rather than over every
    subject: the result is the same as reducing every subject first, at a fraction of the memory traffic.
    Ties in distance are broken by subject id, then by face id.
    """
    probes = np.asarray(probes, dtype=np.float32).reshape(-1, ENCODING_DIM)
    results: list[list[Hit]] = [[] for _ in range(len(probes))]
    if gallery.size == 0 or len(probes) == 0:
        return results
    limit = np.float32(threshold) ** 2
    for first in range(0, len(probes), batch):
        block = np.ascontiguousarray(probes[first : first + batch])
        if len(block) == 1:
            # One probe: a gemv over the whole matrix reads it once at full bandwidth; chunking would
            # only add call overhead.
            found = [_candidates_single(gallery, block[0], limit)]
        else:
            found = _candidates_batched(gallery, block, limit, chunk_rows)
        for offset, (rows, d2) in enumerate(found):
            results[first + offset] = _hits_from_rows(gallery, rows, d2, k)
    return results


def search_gallery_reduceat(
    gallery: GalleryMatrix, probes: np.ndarray, *, threshold: float, k: int, batch: int = 64
) -> list[list[Hit]]:
    """The first version: every subject reduced with np.minimum.reduceat. Kept as the benchmark's baseline."""
    probes = np.asarray(probes, dtype=np.float32).reshape(-1, ENCODING_DIM)
    results: list[list[Hit]] = [[] for _ in range(len(probes))]
    if gallery.size == 0 or len(probes) == 0:
        return results
    ends = gallery.ends()
    limit = np.float32(threshold) ** 2
    for first in range(0, len(probes), batch):
        block = probes[first : first + batch]
        d2 = gallery.sq_norms[None, :] - 2.0 * (block @ gallery.matrix.T)
        d2 += np.einsum("ij,ij->i", block, block)[:, None]
        per_subject = np.minimum.reduceat(d2, gallery.starts, axis=1)  # (P, S)
        for row, subject_d2 in enumerate(per_subject):
            within = np.flatnonzero(subject_d2 <= limit)
            if within.size > k:
                within = within[np.argpartition(subject_d2[within], k - 1)[:k]]
            within = within[np.lexsort((gallery.subject_ids[within], subject_d2[within]))]
            hits = []
            for s in within:
                lo, hi = gallery.starts[s], ends[s]
                best = lo + int(np.argmin(d2[row, lo:hi]))
                hits.append(
                    Hit(
                        subject_id=int(gallery.subject_ids[s]),
                        face_id=int(gallery.face_ids[best]),
                        distance=float(np.sqrt(max(float(subject_d2[s]), 0.0))),
                    )
                )
            results[first + row] = hits
    return results


# Sharding: a gallery larger than one worker's memory budget is split by contiguous ranges of subject
# ids, so that a subject's faces never straddle two shards and each shard's best face per subject is
# exact. The merge of the shards' top k is then the top k of the whole gallery.


@dataclass(frozen=True)
class Shard:
    index: int
    subject_from: int  # inclusive
    subject_to: int | None  # exclusive; None for the last shard
    faces: int


def shards_plan(subject_ids: np.ndarray, face_counts: np.ndarray, max_faces: int) -> list[Shard]:
    """Cut subjects (sorted by id, with their face counts) into runs of at most max_faces faces.

    A subject with more faces than max_faces gets a shard of its own: it cannot be split.
    """
    subject_ids = np.asarray(subject_ids, dtype=np.int64)
    face_counts = np.asarray(face_counts, dtype=np.int64)
    if len(subject_ids) == 0:
        return [Shard(index=0, subject_from=0, subject_to=None, faces=0)]
    max_faces = max(1, int(max_faces))
    cuts = [0]
    running = 0
    for i, count in enumerate(face_counts.tolist()):
        if running and running + count > max_faces:
            cuts.append(i)
            running = 0
        running += count
    shards = []
    for index, start in enumerate(cuts):
        end = cuts[index + 1] if index + 1 < len(cuts) else len(subject_ids)
        shards.append(
            Shard(
                index=index,
                subject_from=0 if index == 0 else int(subject_ids[start]),
                subject_to=int(subject_ids[end]) if end < len(subject_ids) else None,
                faces=int(face_counts[start:end].sum()),
            )
        )
    return shards


def gallery_shard(gallery: GalleryMatrix, shard: Shard) -> GalleryMatrix:
    """The rows of one shard of an in-memory gallery (benchmarks and tests; workers load shards directly)."""
    lo = int(np.searchsorted(gallery.subject_ids, shard.subject_from, side="left"))
    hi = (
        len(gallery.subject_ids)
        if shard.subject_to is None
        else int(np.searchsorted(gallery.subject_ids, shard.subject_to, side="left"))
    )
    row_lo = int(gallery.starts[lo]) if lo < len(gallery.starts) else gallery.size
    row_hi = int(gallery.starts[hi]) if hi < len(gallery.starts) else gallery.size
    return GalleryMatrix(
        matrix=gallery.matrix[row_lo:row_hi],
        sq_norms=gallery.sq_norms[row_lo:row_hi],
        face_ids=gallery.face_ids[row_lo:row_hi],
        subject_ids=gallery.subject_ids[lo:hi],
        starts=gallery.starts[lo:hi] - row_lo,
    )


def hits_merge(per_shard: list[list[Hit]], k: int) -> list[Hit]:
    """The k closest of several shards' hits for one probe; subjects are disjoint across shards."""
    merged = [hit for hits in per_shard for hit in hits]
    merged.sort(key=lambda hit: (hit.distance, hit.subject_id))
    return merged[:k]


@dataclass
class CachedGallery:
    index: Any  # a matching.quantised.GalleryIndex (or anything with a .size)
    position: int  # the gallery version whose changes it holds
    stamp: Hashable  # which organisation row the entry belongs to (see searching._cache_stamp)


class GalleryCache:
    """Per-process cache of gallery indexes, each at a position in its organisation's change log.

    Keys are (organisation, engine version, encoding keys) for a whole gallery, plus the shard's subject range for
    a shard. A search asks for the entry at the organisation's current gallery version: an entry behind it is
    brought forward by `update` (the changes since its position), and loaded again only when `update` cannot (a
    change it cannot see, or another key or engine version, which is another entry). A shard worker may be handed
    any shard of any organisation, so entries for shards are evicted, least recently used first, to stay within
    max_faces; the entry just loaded always stays.
    """

    def __init__(self) -> None:
        # One lock for reads, updates and loads: a worker process searches one photo at a time, and a second
        # thread must not load the same gallery twice.
        self._lock = threading.RLock()
        self._entries: OrderedDict[tuple, CachedGallery] = OrderedDict()
        self._plans: dict[tuple, Any] = {}
        self.loads = 0
        self.updates = 0

    def plan(self, key: tuple, valid: Callable[[Any], bool], loader: Callable[[], Any]) -> Any:
        """A gallery's shard plan, kept while valid(plan) says so."""
        with self._lock:
            entry = self._plans.get(key)
            if entry is not None and valid(entry):
                return entry
            plan = loader()
            self._plans[key] = plan
            return plan

    def get(
        self,
        key: tuple,
        *,
        stamp: Hashable,
        target: int,
        load: Callable[[], tuple[Any, int]],
        update: Callable[[Any, int, int], int | None],
        max_faces: int | None = None,
    ) -> Any:
        """The index for key at gallery version target (or later).

        update(index, position, target) applies the changes after position and returns the position reached, or
        None when the index must be loaded again; load() returns (index, position).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.stamp == stamp:
                if entry.position < target:
                    reached = update(entry.index, entry.position, target)
                    if reached is None:
                        entry = None
                    else:
                        entry.position = reached
                        self.updates += 1
                if entry is not None:
                    self._entries.move_to_end(key)
                    return entry.index
            # A stale entry is dropped before loading, so that old and new never sit in memory together.
            self._entries.pop(key, None)
            index, position = load()
            self.loads += 1
            self._entries[key] = CachedGallery(index=index, position=position, stamp=stamp)
            if max_faces is not None:
                self._evict(max_faces, keep=key)
            return index

    def _evict(self, max_faces: int, keep: tuple) -> None:
        total = sum(entry.index.size for entry in self._entries.values())
        for key in list(self._entries):
            if total <= max_faces:
                break
            if key != keep:
                total -= self._entries.pop(key).index.size

    def get_index(self, organisation_id: int) -> Any:
        """The cached whole-gallery index of an organisation, as it stands (tests and benchmarks)."""
        with self._lock:
            for key, entry in self._entries.items():
                if key[0] == organisation_id and key[-1] is None:
                    return entry.index
        return None

    def faces(self) -> int:
        with self._lock:
            return sum(entry.index.size for entry in self._entries.values())

    def forget(self, organisation_id: int) -> None:
        """Drop an organisation's indexes and plans now, rather than bringing them forward at its next search."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == organisation_id]:
                del self._entries[key]
            for key in [k for k in self._plans if k[0] == organisation_id]:
                del self._plans[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._plans.clear()
            self.loads = self.updates = 0


gallery_cache = GalleryCache()
