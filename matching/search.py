"""Exact nearest-subject search over an organisation's gallery.

The gallery is one contiguous float32 matrix, its rows grouped by subject.
Distances come from one matrix product per batch of probes
(|a|^2 + |b|^2 - 2ab), are reduced to each subject's best face, and the
closest subjects within the threshold are picked with argpartition.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

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


def search_gallery(
    gallery: GalleryMatrix, probes: np.ndarray, *, threshold: float, k: int, batch: int = 64
) -> list[list[Hit]]:
    """For each probe, up to k subjects whose best face is within threshold, closest first."""
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


class GalleryCache:
    """Per-process cache of each organisation's gallery matrix, keyed by its version counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str], tuple[int, GalleryMatrix]] = {}

    def get(self, organisation_id: int, engine_version: str, gallery_version: int, loader) -> GalleryMatrix:
        key = (organisation_id, engine_version)
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry[0] == gallery_version:
                return entry[1]
        matrix = loader()
        with self._lock:
            self._entries[key] = (gallery_version, matrix)
        return matrix

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


gallery_cache = GalleryCache()
