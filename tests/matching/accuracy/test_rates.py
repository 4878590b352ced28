from __future__ import annotations

import math

import numpy as np
import pytest

from matching.accuracy.rates import (
    DEFAULT_THRESHOLDS,
    audit_compute,
    count_at_most,
    enumerate_groups,
    histogram,
    pair_distances,
    pairwise_distances,
    t_quantile_975,
    threshold_for_target_fmr,
    wilson_bounds,
    wilson_interval,
)


def _on_a_line(*positions: float) -> np.ndarray:
    """128-d encodings along one axis, so every distance is a difference of positions."""
    encodings = np.zeros((len(positions), 128))
    encodings[:, 0] = positions
    return encodings


# Five photos: a, a, b, c, c. Dyadic positions keep every distance exact in float32.
#   genuine:  a-a 0.25, c-c 0.125
#   impostor: 0.25, 0.5, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125
FIVE = _on_a_line(0.0, 0.25, 0.5, 1.0, 1.125)
FIVE_IDS = ["a", "a", "b", "c", "c"]


# Wilson interval


def test_wilson_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert wilson_interval(1, 100) == (pytest.approx(0.00177, abs=1e-5), pytest.approx(0.05449, abs=1e-5))


def test_wilson_with_no_trials_knows_nothing():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_wilson_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_wilson_interval_always_contains_the_point_estimate():
    # Given every k for small n, and random k for large n, at several z
    cases = [(k, n) for n in range(1, 80) for k in range(n + 1)]
    rng = np.random.default_rng(7)
    for n in rng.integers(80, 10_000_000, size=300):
        cases += [(0, int(n)), (int(n), int(n)), (int(rng.integers(0, n + 1)), int(n))]

    for z in (1.0, 1.96, 2.576):
        for k, n in cases:
            # When the interval is computed
            low, high = wilson_interval(k, n, z)

            # Then it lies in [0, 1] and contains k/n
            assert 0.0 <= low <= k / n <= high <= 1.0, (k, n, z)


# Groups


def test_groups_cover_values_and_two_way_intersections_skipping_unknowns():
    # Given two sexes, two races (one photo unknown for each) and an age band column
    attributes = {
        "sex": ["F", "F", "M", "", "M"],
        "race": ["Asian", "White", "Asian", "Asian", None],
        "age_band": ["0-9", "0-9", "0-9", "0-9", "0-9"],
    }

    # When the groups are enumerated
    groups = {g.key: g for g in enumerate_groups(attributes, 5)}

    # Then single values, and pairs of different attributes, appear; unknowns and empty cells do not
    assert set(groups) == {
        "all",
        "sex=F",
        "sex=M",
        "race=Asian",
        "race=White",
        "age_band=0-9",
        "sex=F & race=Asian",
        "sex=F & race=White",
        "sex=M & race=Asian",
        "sex=F & age_band=0-9",
        "sex=M & age_band=0-9",
        "race=Asian & age_band=0-9",
        "race=White & age_band=0-9",
    }
    assert groups["all"].members.tolist() == [0, 1, 2, 3, 4]
    assert groups["sex=M"].members.tolist() == [2, 4]
    assert groups["race=Asian"].members.tolist() == [0, 2, 3]
    assert groups["sex=M & race=Asian"].members.tolist() == [2]
    assert groups["race=Asian & age_band=0-9"].members.tolist() == [0, 2, 3]
    assert groups["race=White & age_band=0-9"].attributes == {"race": "White", "age_band": "0-9"}


def test_groups_reject_a_column_of_the_wrong_length():
    with pytest.raises(ValueError, match="sex"):
        enumerate_groups({"sex": ["F", "M"]}, 3)


# Pairs and rates


def test_pairwise_distances_match_face_recognition_face_distance():
    rng = np.random.default_rng(1)
    encodings = rng.normal(0, 0.1, size=(37, 128))

    matrix = pairwise_distances(encodings)

    # face_recognition.face_distance is np.linalg.norm(known - candidate, axis=1)
    expected = np.stack([np.linalg.norm(encodings - row, axis=1) for row in encodings])
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-12)


def test_pairs_are_split_by_identity_inside_the_group():
    impostor, genuine = pair_distances(FIVE, np.array([0, 0, 1, 2, 2]), np.arange(5))

    assert impostor.dtype == np.float32 and genuine.dtype == np.float32
    assert genuine.tolist() == [0.125, 0.25]
    assert impostor.tolist() == [0.25, 0.5, 0.5, 0.625, 0.75, 0.875, 1.0, 1.125]


def test_pairs_only_use_members_of_the_group():
    # Photos 0, 2, 3: a, b, c, all different people
    impostor, genuine = pair_distances(FIVE, np.array([0, 0, 1, 2, 2]), np.array([0, 2, 3]))

    assert genuine.size == 0
    assert impostor.tolist() == [0.5, 0.5, 1.0]


def test_fmr_and_fnmr_at_a_threshold_count_ties_as_matches():
    result = audit_compute(FIVE, FIVE_IDS, {}, thresholds=(0.2, 0.5))
    everyone = result.group("all")

    assert (everyone.photos, everyone.identities, everyone.impostor_pairs, everyone.genuine_pairs) == (5, 3, 8, 2)
    strict = everyone.row_at(0.2)
    assert (strict.false_matches, strict.fmr) == (0, 0.0)
    assert (strict.false_non_matches, strict.fnmr) == (1, 0.5)  # a-a at 0.25 is missed
    tie = everyone.row_at(0.5)  # distances equal to the threshold match
    assert (tie.false_matches, tie.impostor_pairs, tie.fmr) == (3, 8, 0.375)
    assert (tie.false_non_matches, tie.genuine_pairs, tie.fnmr) == (0, 2, 0.0)
    # The intervals are identity-level: never narrower than a Wilson interval that treats pairs as independent
    assert tie.fmr_low <= wilson_interval(3, 8)[0] and tie.fmr_high >= wilson_interval(3, 8)[1]
    assert (tie.fnmr_low, tie.fnmr_high) == wilson_bounds(0.0, 2, t_quantile_975(1))  # two people, no miss


def test_fnmr_is_none_without_genuine_pairs():
    result = audit_compute(_on_a_line(0.0, 0.25, 0.5), ["a", "b", "c"], {}, thresholds=(0.3,))
    row = result.group("all").row_at(0.3)

    assert row.genuine_pairs == 0
    assert (row.fnmr, row.fnmr_low, row.fnmr_high) == (None, None, None)
    assert row.fmr == pytest.approx(2 / 3)  # 0.25 and 0.25 match, 0.5 does not


def test_thresholds_merge_the_grid_and_extras_without_duplicates():
    # 0.1 * 6 is 0.6000000000000001: still the grid's 0.6
    result = audit_compute(FIVE, FIVE_IDS, {}, extra_thresholds=(0.6, 0.1 * 6, 0.42))

    assert DEFAULT_THRESHOLDS == (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
    assert result.thresholds == (0.3, 0.35, 0.4, 0.42, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
    assert [row.threshold for row in result.group("all").rows] == list(result.thresholds)


def test_audit_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="identity labels"):
        audit_compute(FIVE, FIVE_IDS[:4], {})
    with pytest.raises(ValueError, match="no identity label"):
        audit_compute(FIVE, ["a", "a", "", "c", "c"], {})
    with pytest.raises(ValueError, match="sex"):
        audit_compute(FIVE, FIVE_IDS, {"sex": ["F"] * 4})


def test_insufficient_flag_follows_people_and_effective_pairs():
    # Given 5 photos of 3 people with 8 impostor pairs, 3 of them within 0.6
    def flagged(min_identities: int, min_effective_pairs: int) -> bool:
        result = audit_compute(
            FIVE, FIVE_IDS, {}, min_identities=min_identities, min_effective_pairs=min_effective_pairs
        )
        return result.group("all").insufficient

    effective = audit_compute(FIVE, FIVE_IDS, {}).group("all").effective_pairs

    # Then the group is flagged exactly when the people or the effective sample (not the 8 raw pairs) fall short
    assert effective < 8
    assert not flagged(3, math.floor(effective))
    assert flagged(4, 0)
    assert flagged(3, math.floor(effective) + 1)
    assert flagged(20, 30)  # the defaults
    reasons = audit_compute(FIVE, FIVE_IDS, {}).group("all").insufficient_reasons
    assert reasons[0] == "3 identities, fewer than 20"
    pairs = "pair" if f"{effective:.0f}" == "1" else "pairs"
    assert reasons[1].startswith(f"{effective:.0f} effective impostor {pairs} at 0.6 (8 pairs), fewer than 30")


# Ratios to the best group


def _three_groups():
    # Given three groups of distinct people, far apart from one another:
    #   A: 0, 0.375, 1, 2             impostor distances .375 .625 1 1 1.625 2   -> 0 at 0.2, 1/6 at 0.5
    #   B: 10, 10.125, 10.25, 12      impostor distances .125 .125 .25 1.75 1.875 2 -> 2/6 at 0.2, 3/6 at 0.5
    #   C: 20, 25                     one pair, no false match, too few pairs
    encodings = _on_a_line(0, 0.375, 1, 2, 10, 10.125, 10.25, 12, 20, 25)
    identities = [str(i) for i in range(10)]
    attributes = {"g": ["A"] * 4 + ["B"] * 4 + ["C"] * 2}
    return audit_compute(
        encodings, identities, attributes, thresholds=(0.1, 0.2, 0.5), min_identities=3, min_effective_pairs=0
    )


def test_fmr_ratio_is_taken_against_the_lowest_group_with_enough_data():
    # When the audit runs (C has the lowest FMR, 0, but only two people)
    result = _three_groups()

    # Then A is the reference, B is three times worse, and C gets no ratio
    assert result.group("g=C").insufficient
    a, b, c = (result.group(f"g={name}").row_at(0.5) for name in "ABC")
    assert (a.fmr, b.fmr) == (pytest.approx(1 / 6), pytest.approx(3 / 6))
    assert a.fmr_ratio_to_best == pytest.approx(1.0)
    assert b.fmr_ratio_to_best == pytest.approx(3.0)
    assert b.fmr_ratio_best_group == "g=A"
    assert c.fmr_ratio_to_best is None
    assert c.fmr_ratio_note == "this group has insufficient data"


def test_the_all_group_is_never_the_reference():
    # "all" has the lowest FMR at 0.5 (4 of 45 pairs; cross-group pairs never match)
    everyone = _three_groups().group("all").row_at(0.5)

    assert everyone.fmr == pytest.approx(4 / 45)
    assert everyone.fmr_ratio_best_group == "g=A"
    assert everyone.fmr_ratio_to_best == pytest.approx((4 / 45) / (1 / 6))


def test_no_ratio_when_the_best_group_has_no_false_matches():
    # At 0.2, B has 2 false matches but A has none
    result = _three_groups()
    b = result.group("g=B").row_at(0.2)

    assert b.false_matches == 2
    assert b.fmr_ratio_to_best is None
    assert b.fmr_ratio_note == "best group (g=A) has no false matches at this threshold"


def test_no_ratio_when_no_demographic_group_has_enough_data():
    # Given "all" with enough data (3 people, 8 pairs) but sex=F (a, a) and sex=M (b, c, c) without
    result = audit_compute(
        FIVE, FIVE_IDS, {"sex": ["F", "F", "M", "M", "M"]}, thresholds=(0.6,), min_identities=3, min_effective_pairs=0
    )

    # Then "all" cannot be its own reference, and the small groups get no ratio either
    everyone, men = result.group("all"), result.group("sex=M")
    assert not everyone.insufficient and men.insufficient
    assert everyone.row_at(0.6).fmr_ratio_to_best is None
    assert everyone.row_at(0.6).fmr_ratio_note == "no group has enough data"
    assert men.row_at(0.6).fmr_ratio_note == "this group has insufficient data"


# Threshold for a target FMR


TEN = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], dtype=np.float32)


@pytest.mark.parametrize(("target", "allowed"), [(0.0, 0), (0.05, 0), (0.1, 1), (0.25, 2), (0.5, 5), (0.99, 9)])
def test_threshold_for_target_fmr_is_the_largest_that_meets_the_target(target, allowed):
    t = threshold_for_target_fmr(TEN, target)

    assert t is not None
    assert count_at_most(TEN, t) == allowed  # FMR(t) <= target
    # any larger threshold breaks it (distances are stored, and compared, in float32)
    assert count_at_most(TEN, float(np.nextafter(np.float32(t), np.float32(np.inf)))) > allowed
    assert t == pytest.approx(float(TEN[allowed]))


def test_threshold_for_target_fmr_edges():
    assert threshold_for_target_fmr(TEN, 1.0) == pytest.approx(1.0)
    assert threshold_for_target_fmr(np.array([], dtype=np.float32), 0.01) is None
    # Ties: with 0.2 twice, only one pair may match for target 0.5 of 4, so t falls below both
    ties = np.array([0.1, 0.2, 0.2, 0.5], dtype=np.float32)
    t = threshold_for_target_fmr(ties, 0.5)
    assert count_at_most(ties, t) == 1
    assert t == pytest.approx(0.2)
    # 0.29 * 100 is 28.999999999999996 in floating point; floor must still give 29
    hundred = np.arange(1, 101, dtype=np.float32) / 100
    assert count_at_most(hundred, threshold_for_target_fmr(hundred, 0.29)) == 29
    with pytest.raises(ValueError):
        threshold_for_target_fmr(TEN, 1.5)


def test_audit_reports_threshold_at_target_and_its_fnmr():
    # 8 impostor pairs: target 1/8 allows one match, so t is just below the second (0.5)
    at_one_in_eight = audit_compute(FIVE, FIVE_IDS, {}, target_fmr=0.125).group("all")
    # target 0 allows none, so t is just below 0.25, which also loses the a-a pair at 0.25
    at_zero = audit_compute(FIVE, FIVE_IDS, {}, target_fmr=0.0).group("all")

    assert at_one_in_eight.threshold_at_target == pytest.approx(0.5)
    assert at_one_in_eight.threshold_at_target < 0.5
    assert at_one_in_eight.fnmr_at_target == 0.0
    assert at_one_in_eight.target_fmr_resolvable
    assert at_zero.threshold_at_target < 0.25
    assert at_zero.fnmr_at_target == 0.5
    assert not audit_compute(FIVE, FIVE_IDS, {}).group("all").target_fmr_resolvable  # 8 pairs, target 0.001


# Histogram


def test_histogram_holds_cumulative_counts_at_each_edge():
    distances = np.array([0.0, 0.004, 0.005, 0.012, 1.2, 1.6], dtype=np.float32)

    hist = histogram(distances)

    assert hist.edges.size == 301
    assert hist.edges[0] == 0.0 and hist.edges[-1] == pytest.approx(1.5)
    assert hist.counts[:4].tolist() == [1, 3, 3, 4]
    assert hist.counts[-1] == 5 and hist.total == 6  # 1.6 lies beyond max_distance
    assert np.all(np.diff(hist.counts) >= 0)


def test_stored_distances_reproduce_the_rates():
    rng = np.random.default_rng(3)
    encodings = rng.normal(0, 0.06, size=(60, 128))
    identities = [str(i // 2) for i in range(60)]

    group = audit_compute(encodings, identities, {}).group("all")

    assert group.impostor_distances.dtype == np.float32
    assert group.impostor_distances.size == 60 * 59 // 2 - 30
    assert np.all(np.diff(group.impostor_distances) >= 0)
    for row in group.rows:
        count = count_at_most(group.impostor_distances, row.threshold)
        assert (count, group.impostor_distances.size) == (row.false_matches, row.impostor_pairs)
        assert math.isclose(count / row.impostor_pairs, row.fmr)


# Real photographs


def test_real_faces_asian_adults_false_match_more_than_white_adults(faces):
    # Given 12 adult White and 12 adult Asian UTKFace photos (each a different person),
    # encoded by the portal's engine
    from matching.engine import detect_faces
    from matching.imaging import image_normalise, rgb_array

    adult = {"18-29", "30-44", "45-59", "60+"}
    rows = []
    for race in ("White", "Asian"):
        rows += [r for r in faces.where(race=race) if r["age_band"] in adult][:12]
    encodings, kept = [], []
    for row in rows:
        array = rgb_array(image_normalise(faces.read(row["file"]), max_bytes=2**24, max_pixels=10**8).content)
        found = detect_faces(array)
        if found:
            encodings.append(found[0].encoding)
            kept.append(row)
    assert len(kept) >= 22

    # When the audit runs
    result = audit_compute(
        np.array(encodings),
        [r["identity"] for r in kept],
        {"race": [r["race"] for r in kept]},
        min_identities=10,
        min_effective_pairs=5,
    )

    # Then there are no genuine pairs, and at 0.6 Asian adults false-match several times as often as White ones;
    # with a dozen people each, the identity-level intervals are (rightly) wider than pair-counting ones
    assert result.group("all").genuine_pairs == 0
    white, asian = result.group("race=White").row_at(0.6), result.group("race=Asian").row_at(0.6)
    assert asian.fmr > white.fmr_high
    assert asian.fmr_ratio_best_group == "race=White"
    assert asian.fmr_ratio_to_best > 3
    naive = wilson_interval(asian.false_matches, asian.impostor_pairs)
    assert asian.fmr_high - asian.fmr_low > naive[1] - naive[0]


# Identity-level intervals


def _clustered_people(seed: int = 7, people: int = 30):
    """Synthetic 128-d faces: people at random centres, one to three photos each, some people look-alike-prone."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.045, size=(people, 128))
    centres[: people // 5] *= 0.6  # a few people close to many others drive the FMR, as in real galleries
    encodings, identities = [], []
    for person in range(people):
        for _ in range(rng.integers(1, 4)):
            encodings.append(centres[person] + rng.normal(0, 0.02, size=128))
            identities.append(f"p{person}")
    return np.array(encodings), identities


def _cimat():
    """cimat 0.1.2 (the authors' package), with stand-ins for three imports it uses outside the estimator.

    cimat pulls scikit-learn, SciPy and tqdm; what it uses of them is a 2x2 confusion count
    (sklearn.metrics.confusion_matrix), the normal quantile (scipy.stats.norm.ppf) and a progress bar.
    Those are replaced by exact equivalents (the count from numpy, the quantile from the standard
    library); the variance estimator and the Wilson interval under test are cimat's own code.
    """
    import statistics
    import sys
    import types

    for name in ("sklearn", "sklearn.metrics", "scipy", "scipy.stats", "tqdm"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)

    def confusion_matrix(y_true, y_pred):
        y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
        return np.array(
            [[(~y_true & ~y_pred).sum(), (~y_true & y_pred).sum()], [(y_true & ~y_pred).sum(), (y_true & y_pred).sum()]]
        )

    metrics = sys.modules["sklearn.metrics"]
    if not hasattr(metrics, "confusion_matrix"):
        metrics.confusion_matrix = confusion_matrix
        sys.modules["sklearn"].metrics = metrics
    stats = sys.modules["scipy.stats"]
    if not hasattr(stats, "norm"):
        stats.norm = types.SimpleNamespace(ppf=statistics.NormalDist().inv_cdf)
        sys.modules["scipy"].stats = stats
    if not hasattr(sys.modules["tqdm"], "tqdm"):
        sys.modules["tqdm"].tqdm = lambda iterable, *a, **k: iterable
    from cimat import UncertaintyEstimator

    return UncertaintyEstimator


def test_identity_level_interval_matches_the_cimat_oracle():
    # Given clustered synthetic faces, scored for cimat as similarities (-distance) per pair of people
    from matching.accuracy.rates import fmr_at, fnmr_at, pair_set

    encodings, identities = _clustered_people()
    codes = np.unique(identities, return_inverse=True)[1]
    pairs = pair_set(encodings, codes, np.arange(len(identities)))
    scores: dict[int, dict[int, list[float]]] = {p: {} for p in range(pairs.people)}
    for distance, (i, j) in zip(pairs.impostor, pairs.impostor_people, strict=True):
        scores[int(i)].setdefault(int(j), []).append(-float(distance))
        scores[int(j)].setdefault(int(i), []).append(-float(distance))
    for distance, i in zip(pairs.genuine, pairs.genuine_people, strict=True):
        scores[int(i)].setdefault(int(i), []).append(-float(distance))
    estimator = _cimat()(scores=scores)

    checked = 0
    for threshold in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
        # (no distance sits exactly on these thresholds, so cimat's strict comparison agrees with our <=)
        fmr = fmr_at(pairs.impostor, pairs.impostor_people, threshold)
        fnmr = fnmr_at(pairs.genuine, pairs.genuine_people, threshold)
        var_fnr, var_fpr = estimator.compute_variance(threshold=-threshold)
        fnr_ci, fpr_ci = estimator.get_binerror_ci(var_fnr=var_fnr, var_fpr=var_fpr)

        # Then cimat's rates, variances and intervals equal ours with the plug-in estimator (tolerance 1e-9)
        ours_fmr = _plugin(pairs.impostor, pairs.impostor_people, threshold, fnmr=False)
        ours_fnmr = _plugin(pairs.genuine, pairs.genuine_people, threshold, fnmr=True)
        assert estimator.fp / (estimator.fp + estimator.tn) == pytest.approx(fmr.rate, abs=1e-12)
        assert estimator.fn / (estimator.fn + estimator.tp) == pytest.approx(fnmr.rate, abs=1e-12)
        if 2 <= fmr.errors <= fmr.pairs - 2:  # cimat treats 0, 1, n-1 and n errors by special rules
            assert ours_fmr.rate * (1 - ours_fmr.rate) / ours_fmr.effective_n == pytest.approx(var_fpr, rel=1e-9)
            assert (ours_fmr.low, ours_fmr.high) == pytest.approx(tuple(fpr_ci), abs=1e-9)
            # and the interval the portal stores is never narrower than cimat's
            assert fmr.low <= fpr_ci[0] + 1e-12 and fmr.high >= fpr_ci[1] - 1e-12
            checked += 1
        if 2 <= fnmr.errors <= fnmr.pairs - 2:
            assert (ours_fnmr.low, ours_fnmr.high) == pytest.approx(tuple(fnr_ci), abs=1e-9)
            assert fnmr.low <= fnr_ci[0] + 1e-12 and fnmr.high >= fnr_ci[1] - 1e-12
            checked += 1
    assert checked >= 5


def _plugin(sorted_distances, people, threshold, *, fnmr):
    from matching.accuracy.rates import count_at_most, identity_rate

    count = count_at_most(sorted_distances, threshold)
    if fnmr:
        errors = np.ones(len(sorted_distances), dtype=bool)
        errors[:count] = False
        return identity_rate(errors, np.asarray(people), estimator="plugin")
    errors = np.zeros(len(sorted_distances), dtype=bool)
    errors[:count] = True
    people = np.asarray(people)
    return identity_rate(errors, people[:, 0], people[:, 1], estimator="plugin")


def test_pairs_sharing_look_alike_people_widen_the_interval():
    # Given one person close to everyone (all their 9 pairs match) and 36 other pairs that never do
    from matching.accuracy.rates import identity_rate

    first, second = np.triu_indices(10, k=1)
    errors = first == 0

    rate = identity_rate(errors, first, second)

    # Then the interval rests on far fewer than 45 independent pairs
    assert rate.rate == pytest.approx(9 / 45)
    assert rate.effective_n < 45 / 2
    naive = wilson_interval(9, 45)
    assert rate.low < naive[0] and rate.high > naive[1]


def test_a_derived_attribute_is_not_crossed_with_its_source():
    attributes = {
        "age_band": ["0-9", "0-9", "30-44"],
        "age_group": ["under 18", "under 18", "18 and over"],
        "sex": ["F", "M", "F"],
    }

    keys = {g.key for g in enumerate_groups(attributes, 3)}

    assert "age_band=0-9 & age_group=under 18" not in keys
    assert "age_band=0-9 & age_group=under 18" not in keys
    assert {"age_band=0-9 & sex=F", "age_group=under 18 & sex=F"} <= keys  # other crossings stay
