"""Demographic error rates of the face matcher, measured on a labelled evaluation set.

Pure numpy: no Django, no database. The caller supplies 128-d encodings, one
identity label per photo (same label, same person) and attribute columns
(``{"sex": [...], "race": [...], "age_band": [...]}``, ``""`` for unknown).

Pairs are formed inside each demographic group, as NIST's FRVT demographic
reports do: an impostor pair is two photos of different people who are both
in the group, a genuine pair is two photos of the same person in the group.
A pair "matches" at threshold t when its Euclidean distance (the distance
``face_recognition.face_distance`` computes) is <= t. So

* FMR(t)  = impostor pairs with distance <= t / impostor pairs
* FNMR(t) = genuine pairs with distance > t / genuine pairs

Each rate carries a Wilson 95% interval; the groups are small, and a rate
without its interval overstates what the data shows.

Distances are kept as sorted float32 arrays, and every figure here is computed
from those float32 values (thresholds are rounded to float32 to compare), so a
caller who stores the arrays can recompute any figure exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.30 + 0.05 * i, 2) for i in range(9))
ALL_KEY = "all"

# Rows of the pairwise block computed at once: bounds memory at ~32 MB of float64.
_BLOCK_ELEMENTS = 4_000_000


# Intervals


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials.

    With n == 0 nothing is known: (0.0, 1.0). The bounds are clamped so that
    they always contain the point estimate k/n (rounding could otherwise put
    the lower bound a hair above 0 when k == 0).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if k == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if k == n else min(1.0, max(p, centre + half))
    return (low, high)


# Groups


@dataclass(frozen=True, eq=False)
class Group:
    key: str
    attributes: dict[str, str]
    members: np.ndarray  # sorted int64 indices into the evaluation set


def _clean(value: object) -> str:
    return "" if value is None else str(value).strip()


def _group_key(attributes: Mapping[str, str]) -> str:
    return " & ".join(f"{name}={value}" for name, value in attributes.items()) or ALL_KEY


def enumerate_groups(attributes: Mapping[str, Sequence[str]], n: int, *, include_all: bool = True) -> list[Group]:
    """Every known attribute value, and every intersection of two different attributes.

    Unknown values ("" or None) belong to no group. Intersections follow the
    order of ``attributes`` ("race=Asian & age_band=18-29" when race comes
    first); empty intersections are left out. The "all" group, covering every
    photo, comes first when ``include_all`` is set.
    """
    columns: dict[str, np.ndarray] = {}
    for name, column in attributes.items():
        if len(column) != n:
            raise ValueError(f"attribute {name!r} has {len(column)} values for {n} photos")
        columns[name] = np.array([_clean(value) for value in column], dtype=object)

    groups: list[Group] = []
    if include_all:
        groups.append(Group(ALL_KEY, {}, np.arange(n, dtype=np.int64)))

    masks: dict[str, dict[str, np.ndarray]] = {}
    for name, column in columns.items():
        masks[name] = {value: column == value for value in sorted(set(column.tolist())) if value != ""}
        for value, mask in masks[name].items():
            attrs = {name: value}
            groups.append(Group(_group_key(attrs), attrs, np.flatnonzero(mask).astype(np.int64)))

    for first, second in combinations(columns, 2):
        for value_1, mask_1 in masks[first].items():
            for value_2, mask_2 in masks[second].items():
                members = np.flatnonzero(mask_1 & mask_2).astype(np.int64)
                if members.size:
                    attrs = {first: value_1, second: value_2}
                    groups.append(Group(_group_key(attrs), attrs, members))
    return groups


# Pairs


def pairwise_distances(encodings: np.ndarray) -> np.ndarray:
    """Full m×m matrix of Euclidean distances, as ``face_recognition.face_distance`` computes them.

    Differences are taken directly (not through the |x|²+|y|²-2x·y shortcut,
    which loses precision for near-identical faces), in row blocks to bound memory.
    """
    x = np.asarray(encodings, dtype=np.float64)
    m = x.shape[0]
    out = np.empty((m, m), dtype=np.float64)
    if m == 0:
        return out
    block = max(1, _BLOCK_ELEMENTS // max(1, m * x.shape[1]))
    for start in range(0, m, block):
        stop = min(m, start + block)
        out[start:stop] = np.linalg.norm(x[start:stop, None, :] - x[None, :, :], axis=2)
    return out


def pair_distances(
    encodings: np.ndarray, identity_codes: np.ndarray, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted float32 (impostor, genuine) distances over all pairs i < j of ``members``."""
    members = np.asarray(members, dtype=np.int64)
    distances = pairwise_distances(np.asarray(encodings)[members])
    upper_i, upper_j = np.triu_indices(members.size, k=1)
    codes = np.asarray(identity_codes)[members]
    same = codes[upper_i] == codes[upper_j]
    flat = distances[upper_i, upper_j].astype(np.float32)
    return np.sort(flat[~same]), np.sort(flat[same])


def _as_distances(sorted_distances: np.ndarray) -> np.ndarray:
    array = np.asarray(sorted_distances)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def count_at_most(sorted_distances: np.ndarray, threshold: float) -> int:
    """How many of the sorted distances are <= threshold.

    The threshold is rounded to the array's precision first, so a stored
    float32 distance that prints as 0.3 counts at threshold 0.3.
    """
    array = _as_distances(sorted_distances)
    needle = np.array([threshold], dtype=array.dtype)
    return int(np.searchsorted(array, needle, side="right")[0])


def threshold_for_target_fmr(sorted_impostor_distances: np.ndarray, target_fmr: float) -> float | None:
    """The largest threshold t with FMR(t) <= target_fmr.

    With n impostor distances d (sorted, 0-based) and k = floor(target * n),
    every t below d[k] lets at most k pairs match, and t = d[k] lets k + 1
    match, so the answer is the number just below d[k] in the array's
    precision (float32 for stored distances); when k >= n every threshold
    qualifies and the largest distance is returned. Display it rounded down,
    never up.

    None when there are no impostor pairs, or when only a negative threshold
    would do (different people at distance 0, i.e. duplicate photos). With
    fewer than 1/target pairs k is 0: the result is then just below the
    closest impostor pair, and an observed FMR of 0 does not show that the
    true FMR is below the target.
    """
    if not 0.0 <= target_fmr <= 1.0:
        raise ValueError(f"target_fmr must be in [0, 1], got {target_fmr}")
    array = _as_distances(sorted_impostor_distances)
    n = array.size
    if n == 0:
        return None
    k = math.floor(target_fmr * n + 1e-9)  # 1e-9: 0.29 * 100 is 28.999999999999996
    if k >= n:
        return float(array[-1])
    threshold = float(np.nextafter(array[k], array.dtype.type(-np.inf)))
    return threshold if threshold >= 0.0 else None


def local_rate(sorted_impostor_distances: np.ndarray, distance: float) -> tuple[int, int, float | None]:
    """(count, pairs, rate per 1,000) of impostor pairs at distance <= ``distance``.

    Reads as "among different people in this group, X in 1,000 pairs are at
    least this close". The rate is None when the group has no impostor pairs.
    """
    pairs = len(sorted_impostor_distances)
    count = count_at_most(sorted_impostor_distances, distance)
    return count, pairs, (1000.0 * count / pairs if pairs else None)


@dataclass(frozen=True, eq=False)
class CumulativeHistogram:
    """Compact storage of a distance distribution: counts[i] = distances <= edges[i].

    FMR at any edge is counts[i] / total; ``total - counts[-1]`` pairs lie
    beyond ``max_distance``.
    """

    edges: np.ndarray  # float64, 0, bin_width, 2*bin_width, ..., max_distance
    counts: np.ndarray  # int64, non-decreasing
    total: int


def histogram(sorted_distances: np.ndarray, bin_width: float = 0.005, max_distance: float = 1.5) -> CumulativeHistogram:
    if bin_width <= 0 or max_distance <= 0:
        raise ValueError("bin_width and max_distance must be positive")
    bins = round(max_distance / bin_width)
    edges = np.round(np.arange(bins + 1) * bin_width, 10)
    array = _as_distances(sorted_distances)
    counts = np.searchsorted(array, edges.astype(array.dtype), side="right").astype(np.int64)
    return CumulativeHistogram(edges=edges, counts=counts, total=int(array.size))


# The audit


@dataclass(frozen=True)
class ThresholdRow:
    threshold: float
    fmr: float | None  # None when the group has no impostor pairs
    fmr_low: float | None
    fmr_high: float | None
    fnmr: float | None  # None when the group has no genuine pairs
    fnmr_low: float | None
    fnmr_high: float | None
    false_matches: int
    impostor_pairs: int
    false_non_matches: int
    genuine_pairs: int
    fmr_ratio_to_best: float | None
    fmr_ratio_best_group: str | None  # the group the ratio is taken against
    fmr_ratio_note: str | None  # why the ratio is None, when it is


@dataclass(frozen=True, eq=False)
class GroupAudit:
    key: str
    attributes: dict[str, str]
    members: np.ndarray  # int64 indices into the evaluation set
    photos: int
    identities: int
    impostor_pairs: int
    genuine_pairs: int
    insufficient: bool
    insufficient_reasons: tuple[str, ...]
    rows: tuple[ThresholdRow, ...]
    threshold_at_target: float | None
    fnmr_at_target: float | None
    target_fmr_resolvable: bool  # impostor_pairs * target_fmr >= 1; see threshold_for_target_fmr
    impostor_distances: np.ndarray  # sorted float32
    genuine_distances: np.ndarray  # sorted float32

    def row_at(self, threshold: float) -> ThresholdRow:
        for row in self.rows:
            if math.isclose(row.threshold, threshold, abs_tol=1e-9):
                return row
        raise KeyError(threshold)


@dataclass(frozen=True, eq=False)
class AuditResult:
    photos: int
    thresholds: tuple[float, ...]  # the grid and the extra thresholds, sorted, without duplicates
    extra_thresholds: tuple[float, ...]
    min_identities: int
    min_impostor_pairs: int
    target_fmr: float
    groups: tuple[GroupAudit, ...]

    def group(self, key: str) -> GroupAudit:
        for group in self.groups:
            if group.key == key:
                return group
        raise KeyError(key)


def _merge_thresholds(thresholds: Sequence[float], extra: Sequence[float]) -> tuple[float, ...]:
    merged: dict[float, float] = {}
    for value in (*thresholds, *extra):
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"thresholds must be finite and non-negative, got {value}")
        merged.setdefault(round(value, 9), value)
    return tuple(sorted(merged.values()))


def _rate(k: int, n: int) -> tuple[float | None, float | None, float | None]:
    if n == 0:
        return None, None, None
    low, high = wilson_interval(k, n)
    return k / n, low, high


def audit_compute(
    encodings: np.ndarray,
    identities: Sequence[str],
    attributes: Mapping[str, Sequence[str]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    extra_thresholds: Sequence[float] = (),
    min_identities: int = 20,
    min_impostor_pairs: int = 200,
    target_fmr: float = 0.001,
) -> AuditResult:
    """Per-group FMR and FNMR with Wilson intervals at every threshold.

    A group is flagged insufficient when it has fewer than ``min_identities``
    people or fewer than ``min_impostor_pairs`` impostor pairs; its rates are
    still reported, but it gets no ratio and cannot be the reference for one.

    ``fmr_ratio_to_best`` is a group's FMR divided by the lowest FMR among
    the demographic groups with enough data at that threshold ("all" is never
    the reference: it mixes in cross-group pairs, which rarely match, and would
    flatter every group). When that lowest FMR is 0 the ratio is None and
    ``fmr_ratio_note`` says so: any finite ratio against an observed zero, or
    against a continuity-corrected stand-in for it, would be a made-up number.
    """
    x = np.asarray(encodings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"encodings must be a 2-d array, got shape {x.shape}")
    n = x.shape[0]
    if not np.isfinite(x).all():
        raise ValueError("encodings contain NaN or infinity")
    if len(identities) != n:
        raise ValueError(f"{len(identities)} identity labels for {n} encodings")
    index: dict[str, int] = {}
    codes = np.empty(n, dtype=np.int64)
    for i, label in enumerate(identities):
        label = _clean(label)
        if not label:
            raise ValueError(f"photo {i} has no identity label")
        codes[i] = index.setdefault(label, len(index))
    if not 0.0 <= target_fmr <= 1.0:
        raise ValueError(f"target_fmr must be in [0, 1], got {target_fmr}")
    grid = _merge_thresholds(thresholds, extra_thresholds)

    measured = []
    for group in enumerate_groups(attributes, n):
        impostor, genuine = pair_distances(x, codes, group.members)
        identity_count = int(np.unique(codes[group.members]).size)
        reasons = []
        if identity_count < min_identities:
            reasons.append(f"{identity_count} identities, fewer than {min_identities}")
        if impostor.size < min_impostor_pairs:
            reasons.append(f"{impostor.size} impostor pairs, fewer than {min_impostor_pairs}")
        false_matches = [count_at_most(impostor, t) for t in grid]
        false_non_matches = [genuine.size - count_at_most(genuine, t) for t in grid]
        measured.append((group, impostor, genuine, identity_count, tuple(reasons), false_matches, false_non_matches))

    # The reference group at each threshold: lowest FMR among demographic groups with enough data.
    best: list[tuple[str, float] | None] = []
    for column in range(len(grid)):
        candidates = [
            (group.key, fm[column] / impostor.size)
            for group, impostor, _, _, reasons, fm, _ in measured
            if group.key != ALL_KEY and not reasons and impostor.size
        ]
        best.append(min(candidates, key=lambda candidate: candidate[1]) if candidates else None)

    audits = []
    for group, impostor, genuine, identity_count, reasons, fm, fnm in measured:
        rows = []
        for column, threshold in enumerate(grid):
            fmr, fmr_low, fmr_high = _rate(fm[column], impostor.size)
            fnmr, fnmr_low, fnmr_high = _rate(fnm[column], genuine.size)
            ratio, reference, note = None, None, None
            if reasons:
                note = "this group has insufficient data"
            elif best[column] is None:
                note = "no group has enough data"
            else:
                reference, best_fmr = best[column]
                if best_fmr == 0:
                    note = f"best group ({reference}) has no false matches at this threshold"
                elif fmr is not None:
                    ratio = fmr / best_fmr
            rows.append(
                ThresholdRow(
                    threshold=threshold,
                    fmr=fmr,
                    fmr_low=fmr_low,
                    fmr_high=fmr_high,
                    fnmr=fnmr,
                    fnmr_low=fnmr_low,
                    fnmr_high=fnmr_high,
                    false_matches=fm[column],
                    impostor_pairs=int(impostor.size),
                    false_non_matches=fnm[column],
                    genuine_pairs=int(genuine.size),
                    fmr_ratio_to_best=ratio,
                    fmr_ratio_best_group=reference,
                    fmr_ratio_note=note,
                )
            )
        at_target = threshold_for_target_fmr(impostor, target_fmr)
        fnmr_at_target = None
        if at_target is not None and genuine.size:
            fnmr_at_target = (genuine.size - count_at_most(genuine, at_target)) / genuine.size
        audits.append(
            GroupAudit(
                key=group.key,
                attributes=group.attributes,
                members=group.members,
                photos=int(group.members.size),
                identities=identity_count,
                impostor_pairs=int(impostor.size),
                genuine_pairs=int(genuine.size),
                insufficient=bool(reasons),
                insufficient_reasons=reasons,
                rows=tuple(rows),
                threshold_at_target=at_target,
                fnmr_at_target=fnmr_at_target,
                target_fmr_resolvable=impostor.size * target_fmr >= 1.0,
                impostor_distances=impostor,
                genuine_distances=genuine,
            )
        )

    return AuditResult(
        photos=n,
        thresholds=grid,
        extra_thresholds=tuple(float(t) for t in extra_thresholds),
        min_identities=min_identities,
        min_impostor_pairs=min_impostor_pairs,
        target_fmr=target_fmr,
        groups=tuple(audits),
    )
