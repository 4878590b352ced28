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

Each rate carries an identity-level 95% interval. Pairs are not independent:
in a group of 57 people each person is in 56 impostor pairs, and a few people
who look like many others drive the rate. The variance of the error count S is
therefore taken over people (Fogliato, Patil and Perona 2023, the ``cimat``
package's plug-in estimator): with a_ij the sum of residuals (error - rate)
over the pairs between people i and j and A_i = sum_j a_ij,

    Var(S) = sum_i A_i^2 - sum_{i<j} a_ij^2,     Var(rate) = Var(S) / M^2

(M pairs; genuine pairs belong to one person each, so Var(S) = sum_i a_i^2).
The effective sample size n_eff = rate (1 - rate) / Var(rate) then goes into a
Wilson interval in place of M.

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
# The derived attribute every audit with an age band gets: the split the warnings care about.
AGE_GROUP = "age_group"
CHILD, ADULT = "under 18", "18 and over"


def age_band_lower(value: str) -> int | None:
    """The lower end of an age band ("10-17" -> 10, "60+" -> 60), or None when it is not one."""
    head = value.strip().split("-")[0].rstrip("+").strip()
    return int(head) if head.isdigit() else None


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


INTERVAL_METHOD = (
    "identity-level Wilson: effective n from the larger of the clustered plug-in variance (Fogliato et al. 2023) "
    "and the delete-one-person jackknife"
)


def wilson_bounds(p: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion p observed on an effective sample of n (not always whole)."""
    if n <= 0:
        return (0.0, 1.0)
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(max(p * (1.0 - p), 0.0) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if p <= 0.0 else max(0.0, min(p, centre - half))
    high = 1.0 if p >= 1.0 else min(1.0, max(p, centre + half))
    return (low, high)


def t_quantile_975(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (Cornish-Fisher; 1.96 as df grows).

    Within 0.002 of the exact value from df = 5 up; below 5 people a group is never "sufficient" anyway.
    """
    z = 1.959963984540054
    if df <= 0:
        return 12.706  # df = 1
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


@dataclass(frozen=True)
class RateInterval:
    """An error rate with its identity-level 95% interval."""

    errors: int
    pairs: int
    rate: float | None
    low: float | None
    high: float | None
    effective_n: float | None  # what the Wilson interval was computed on; None without pairs
    units: int  # independent units: distinct pairs of people (FMR) or people (FNMR)


_DENSE_PAIR_CODES = 4_000_000  # up to 2,000 people, pairs of people are counted with one bincount


def _pair_sums(code: np.ndarray, people: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per pair of people (code = first * people + second): the sum of weights, or the count, over its pairs."""
    if people * people <= _DENSE_PAIR_CODES:
        sums = np.bincount(code, weights=weights, minlength=people * people)
        return sums[np.bincount(code, minlength=people * people) > 0]
    _, inverse = np.unique(code, return_inverse=True)
    return np.bincount(inverse.reshape(-1), weights=weights)


def _clustered_var_sum(errors: np.ndarray, first: np.ndarray, second: np.ndarray | None) -> float:
    """Var(S) of the error count S, clustered by person (see the module docstring)."""
    residual = errors.astype(np.float64) - errors.mean()
    if second is None:
        per_person = np.bincount(first, weights=residual)
        return float(np.dot(per_person, per_person))
    people = int(max(first.max(), second.max())) + 1
    per_pair = _pair_sums(first.astype(np.int64) * people + second, people, residual)
    per_person = np.bincount(first, weights=residual, minlength=people) + np.bincount(
        second, weights=residual, minlength=people
    )
    squares = float(np.dot(per_pair, per_pair))
    # sum_i A_i^2 = 2 sum a_ij^2 + (products of pair sums that share one person). A negative estimate of
    # those covariances is noise; like cimat, it is taken as 0, so the variance is never below the one that
    # treats pairs of people (not pairs of photos) as independent.
    shared = float(np.dot(per_person, per_person)) - 2.0 * squares
    return squares + max(shared, 0.0)


def _jackknife_var(errors: np.ndarray, first: np.ndarray, second: np.ndarray | None) -> float:
    """Delete-one-person jackknife variance of the rate: each person's pairs left out in turn."""
    errors = errors.astype(np.float64)
    people = int(first.max() if second is None else max(first.max(), second.max())) + 1
    hits = np.bincount(first, weights=errors, minlength=people)
    pairs = np.bincount(first, minlength=people).astype(np.float64)
    if second is not None:
        hits += np.bincount(second, weights=errors, minlength=people)
        pairs += np.bincount(second, minlength=people)
    present = pairs > 0
    n = int(present.sum())
    remaining = errors.size - pairs[present]
    if n < 2 or (remaining <= 0).any():
        return 0.0
    leave_out = (errors.sum() - hits[present]) / remaining
    return float((n - 1) / n * np.sum((leave_out - leave_out.mean()) ** 2))


def identity_rate(
    errors: np.ndarray, first: np.ndarray, second: np.ndarray | None = None, *, estimator: str = "conservative"
) -> RateInterval:
    """Rate of ``errors`` (one bool per pair) with a 95% interval clustered on the people in each pair.

    ``first``/``second`` are the (group-local) person indices of each impostor pair; for genuine pairs pass
    only ``first``. ``estimator="plugin"`` is the variance of the module docstring alone (cimat's plug-in);
    the default, "conservative", takes the larger of it and the delete-one-person jackknife. With the 20 to
    60 people of a typical group the plug-in runs low (on random halves of the shared photos its intervals
    held 74% of the other half's rates, against about 83% for honest ones); the jackknife variance is
    conservative in expectation (the Efron-Stein inequality), so the larger of the two errs on the side of
    a wider interval. The conservative estimator also caps n_eff at the number of pairs and takes the
    critical value from t with (people - 1) degrees of freedom, as cluster-robust inference does with few
    clusters. With no errors, or only errors, the plug-in variance is 0 and tells nothing about
    clustering; the Wilson interval is then taken on the number of independent units (distinct pairs of
    people for FMR, people for FNMR), never on the number of photo pairs.
    """
    errors = np.asarray(errors, dtype=bool)
    first = np.asarray(first, dtype=np.int64)
    pairs = int(errors.size)
    if pairs == 0:
        return RateInterval(0, 0, None, None, None, None, 0)
    count = int(errors.sum())
    if second is None:
        units = int(np.count_nonzero(np.bincount(first)))
        people = units
    else:
        second = np.asarray(second, dtype=np.int64)
        size = int(max(first.max(), second.max())) + 1
        units = int(_pair_sums(first * size + second, size).size)
        people = int(np.count_nonzero(np.bincount(first, minlength=size) + np.bincount(second, minlength=size)))
    rate = count / pairs
    if count in (0, pairs):
        n_eff = float(units)
    else:
        variance = _clustered_var_sum(errors, first, second) / (pairs * pairs)
        if estimator == "conservative":
            variance = max(variance, _jackknife_var(errors, first, second))
        elif estimator != "plugin":
            raise ValueError(f"unknown estimator {estimator!r}")
        n_eff = rate * (1.0 - rate) / variance if variance > 0 else float(pairs)
        if estimator == "conservative":
            # Never more independent observations than pairs, nor fewer than one.
            n_eff = max(min(n_eff, float(pairs)), 1.0)
    # The variance rests on a handful of people, not on thousands of pairs: as cluster-robust inference does
    # with few clusters, take the critical value from t with (people - 1) degrees of freedom.
    z = 1.959963984540054 if estimator == "plugin" else t_quantile_975(people - 1)
    low, high = wilson_bounds(rate, n_eff, z)
    return RateInterval(count, pairs, rate, low, high, n_eff, units)


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


# A derived attribute and its source: crossing them only repeats the source ("age_band=0-9 & age_group=under 18").
DERIVED_FROM: dict[str, str] = {"age_group": "age_band"}


def enumerate_groups(
    attributes: Mapping[str, Sequence[str]],
    n: int,
    *,
    include_all: bool = True,
    derived_from: Mapping[str, str] | None = None,
) -> list[Group]:
    """Every known attribute value, and every intersection of two different attributes.

    Intersections of an attribute with one derived from it (``derived_from``, by
    default age_group from age_band) are left out: they only repeat the source.

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

    derived = DERIVED_FROM if derived_from is None else derived_from
    for first, second in combinations(columns, 2):
        if derived.get(first) == second or derived.get(second) == first:
            continue
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


@dataclass(frozen=True, eq=False)
class PairSet:
    """A group's pairs, sorted by distance, with the (group-local) people in each pair.

    ``impostor_people`` is an (M, 2) int32 array, smaller index first; ``genuine_people`` has one
    person per genuine pair. People are numbered 0..people-1 in order of first appearance.
    """

    impostor: np.ndarray
    impostor_people: np.ndarray
    genuine: np.ndarray
    genuine_people: np.ndarray
    people: int


def pair_set(encodings: np.ndarray, identity_codes: np.ndarray, members: np.ndarray) -> PairSet:
    """Every pair i < j of ``members``, split into impostor and genuine pairs and sorted by distance."""
    members = np.asarray(members, dtype=np.int64)
    distances = pairwise_distances(np.asarray(encodings)[members])
    upper_i, upper_j = np.triu_indices(members.size, k=1)
    _, local = np.unique(np.asarray(identity_codes)[members], return_inverse=True)
    local = local.astype(np.int32).reshape(-1)
    a, b = local[upper_i], local[upper_j]
    same = a == b
    flat = distances[upper_i, upper_j].astype(np.float32)
    impostor, genuine = flat[~same], flat[same]
    order_i, order_g = np.argsort(impostor, kind="stable"), np.argsort(genuine, kind="stable")
    people_i = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)[~same][order_i]
    return PairSet(
        impostor=impostor[order_i],
        impostor_people=np.ascontiguousarray(people_i, dtype=np.int32).reshape(-1, 2),
        genuine=genuine[order_g],
        genuine_people=np.ascontiguousarray(a[same][order_g], dtype=np.int32),
        people=int(np.unique(local).size),
    )


def pair_distances(
    encodings: np.ndarray, identity_codes: np.ndarray, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted float32 (impostor, genuine) distances over all pairs i < j of ``members``."""
    pairs = pair_set(encodings, identity_codes, members)
    return pairs.impostor, pairs.genuine


def fmr_at(pairs_sorted: np.ndarray, people: np.ndarray, threshold: float) -> RateInterval:
    """FMR at ``threshold`` from a group's stored sorted impostor distances and their pairs of people."""
    count = count_at_most(pairs_sorted, threshold)
    errors = np.zeros(len(pairs_sorted), dtype=bool)
    errors[:count] = True
    people = np.asarray(people).reshape(-1, 2)
    return identity_rate(errors, people[:, 0], people[:, 1])


def fnmr_at(sorted_genuine: np.ndarray, people: np.ndarray, threshold: float) -> RateInterval:
    """FNMR at ``threshold`` from a group's stored sorted genuine distances and their people."""
    count = count_at_most(sorted_genuine, threshold)
    errors = np.ones(len(sorted_genuine), dtype=bool)
    errors[:count] = False
    return identity_rate(errors, np.asarray(people).reshape(-1))


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
    fmr_effective_n: float | None = None  # the sample size the FMR interval rests on
    fnmr_effective_n: float | None = None


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
    impostor_people: np.ndarray  # (M, 2) int32, the people of each impostor pair in sorted order
    genuine_people: np.ndarray  # int32, the person of each genuine pair in sorted order
    effective_pairs: float  # effective n of the FMR at the reference threshold: the "insufficient" rule

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
    min_effective_pairs: int
    target_fmr: float
    groups: tuple[GroupAudit, ...]
    # One entry per person, in the order of the "all" group's person indices: (photos, attributes the
    # person's photos agree on). With the "all" group's pairs this is what the 1:N figures are built from.
    people: tuple[tuple[int, dict[str, str]], ...] = ()

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


def audit_people(codes: np.ndarray, attributes: Mapping[str, Sequence[str]]) -> tuple[tuple[int, dict[str, str]], ...]:
    """Each person's photo count and the attribute values all their photos agree on, in identity-code order.

    The "all" group numbers its people by identity code (``pair_set`` takes them sorted), so entry i here is
    person i of its pairs. A value that differs between one person's photos is left unknown.
    """
    people = int(codes.max()) + 1 if codes.size else 0
    photos = np.bincount(codes, minlength=people)
    values: list[dict[str, set[str]]] = [{} for _ in range(people)]
    for name, column in attributes.items():
        for code, value in zip(codes.tolist(), column, strict=True):
            values[code].setdefault(name, set()).add(_clean(value))
    agreed = [
        {name: next(iter(seen)) for name, seen in person.items() if len(seen) == 1 and "" not in seen}
        for person in values
    ]
    return tuple((int(photos[i]), agreed[i]) for i in range(people))


def audit_compute(
    encodings: np.ndarray,
    identities: Sequence[str],
    attributes: Mapping[str, Sequence[str]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    extra_thresholds: Sequence[float] = (),
    min_identities: int = 20,
    min_effective_pairs: int = 30,
    target_fmr: float = 0.001,
    reference_threshold: float | None = None,
) -> AuditResult:
    """Per-group FMR and FNMR with identity-level intervals at every threshold.

    A group is flagged insufficient when it has fewer than ``min_identities``
    people, or when the effective sample size of its FMR at
    ``reference_threshold`` (the threshold in use: the first extra threshold,
    else 0.6) is below ``min_effective_pairs``; its rates are still reported,
    but it gets no ratio and cannot be the reference for one.

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

    reference = float(extra_thresholds[0]) if len(extra_thresholds) else 0.6
    if reference_threshold is not None:
        reference = float(reference_threshold)
    measured = []
    for group in enumerate_groups(attributes, n):
        pairs = pair_set(x, codes, group.members)
        impostor, genuine = pairs.impostor, pairs.genuine
        identity_count = pairs.people
        effective = fmr_at(impostor, pairs.impostor_people, reference).effective_n or 0.0
        reasons = []
        if identity_count < min_identities:
            people = "identity" if identity_count == 1 else "identities"
            reasons.append(f"{identity_count} {people}, fewer than {min_identities}")
        if effective < min_effective_pairs:
            shown = f"{effective:.0f}"
            reasons.append(
                f"{shown} effective impostor pair{'' if shown == '1' else 's'} at {reference:g} "
                f"({impostor.size} pair{'' if impostor.size == 1 else 's'}), fewer than {min_effective_pairs}"
            )
        fmr_rates = [fmr_at(impostor, pairs.impostor_people, t) for t in grid]
        fnmr_rates = [fnmr_at(genuine, pairs.genuine_people, t) for t in grid]
        measured.append((group, pairs, effective, tuple(reasons), fmr_rates, fnmr_rates))

    # The reference group at each threshold: lowest FMR among demographic groups with enough data.
    best: list[tuple[str, float] | None] = []
    for column in range(len(grid)):
        candidates = [
            (group.key, fm[column].rate)
            for group, pairs, _, reasons, fm, _ in measured
            if group.key != ALL_KEY and not reasons and pairs.impostor.size
        ]
        best.append(min(candidates, key=lambda candidate: candidate[1]) if candidates else None)

    audits = []
    for group, pairs, effective, reasons, fm, fnm in measured:
        impostor, genuine = pairs.impostor, pairs.genuine
        rows = []
        for column, threshold in enumerate(grid):
            fmr, fmr_low, fmr_high = fm[column].rate, fm[column].low, fm[column].high
            fnmr, fnmr_low, fnmr_high = fnm[column].rate, fnm[column].low, fnm[column].high
            ratio, best_key, note = None, None, None
            if reasons:
                note = "this group has insufficient data"
            elif best[column] is None:
                note = "no group has enough data"
            else:
                best_key, best_fmr = best[column]
                if best_fmr == 0:
                    note = f"best group ({best_key}) has no false matches at this threshold"
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
                    false_matches=fm[column].errors,
                    impostor_pairs=int(impostor.size),
                    false_non_matches=fnm[column].errors,
                    genuine_pairs=int(genuine.size),
                    fmr_ratio_to_best=ratio,
                    fmr_ratio_best_group=best_key,
                    fmr_ratio_note=note,
                    fmr_effective_n=fm[column].effective_n,
                    fnmr_effective_n=fnm[column].effective_n,
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
                identities=pairs.people,
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
                impostor_people=pairs.impostor_people,
                genuine_people=pairs.genuine_people,
                effective_pairs=effective,
            )
        )

    return AuditResult(
        people=audit_people(codes, attributes),
        photos=n,
        thresholds=grid,
        extra_thresholds=tuple(float(t) for t in extra_thresholds),
        min_identities=min_identities,
        min_effective_pairs=min_effective_pairs,
        target_fmr=target_fmr,
        groups=tuple(audits),
    )
