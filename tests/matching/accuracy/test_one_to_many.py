"""The 1:N model: hypergeometric draws from strata of the audit's people, with a jackknife over people."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from matching.accuracy.one_to_many import (
    GalleryModel,
    Population,
    log_gamma,
    log_no_match,
    profile,
    strata_build,
)


def _population(groups, photos=None, pairs=(), genuine=(), genuine_people=()):
    """People with attributes, and impostor pairs given as (distance, first, second)."""
    ordered = sorted(pairs)
    return Population.build(
        [(1 if photos is None else photos[i], attrs) for i, attrs in enumerate(groups)],
        np.array([d for d, _, _ in ordered], dtype=np.float32),
        np.array([[a, b] for _, a, b in ordered], dtype=np.int32).reshape(-1, 2),
        np.array(genuine, dtype=np.float32),
        np.array(genuine_people, dtype=np.int32),
    )


def test_log_gamma_agrees_with_the_standard_library():
    values = np.concatenate([np.linspace(0.01, 12, 400), np.linspace(12, 4000, 400)])

    ours = log_gamma(values)

    assert np.allclose(ours, [math.lgamma(v) for v in values], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("pool", "matches", "drawn"), [(6, 0, 3), (6, 2, 3), (7, 3, 4), (5, 1, 5), (8, 5, 4)])
def test_no_match_is_the_share_of_all_subsets_of_the_pool_without_a_match(pool, matches, drawn):
    # Given a pool of people, some of whom match the stranger
    flags = [True] * matches + [False] * (pool - matches)

    # When every subset of the gallery's size is counted
    subsets = list(combinations(flags, drawn))
    exact = sum(not any(s) for s in subsets) / len(subsets)

    # Then the hypergeometric is that share exactly
    assert math.exp(log_no_match(np.array(matches), np.array(pool), np.array(drawn))) == pytest.approx(exact, abs=1e-9)


def test_a_gallery_larger_than_its_pool_is_extrapolated_and_an_empty_pool_tells_nothing():
    # 2 of 4 match: no match among all 4 is impossible, and so among 8
    assert log_no_match(np.array(2.0), np.array(4.0), np.array(8.0)) == -np.inf
    # none of 4 match: none among 8 either
    assert log_no_match(np.array(0.0), np.array(4.0), np.array(8.0)) == 0.0
    assert log_no_match(np.array(0.0), np.array(0.0), np.array(3.0)) == 0.0


def test_profile_reads_audit_columns_in_the_words_of_gallery_records():
    assert profile({"gender": "female", "ethnicity": "Asians", "age_band": "10-17"}) == {
        "sex": "F",
        "race": "asian",
        "age_band": "10-17",
        "age_group": "under 18",
    }


def test_strata_cut_only_where_every_part_keeps_more_audit_people_than_subjects():
    # Given 12 women and 12 men in the audit
    people = [{"sex": "F"}] * 12 + [{"sex": "M"}] * 12
    population = _population(people)

    # When the gallery has 5 women and 5 men, the audit is cut by sex
    strata = strata_build(population, [({"sex": "F"}, 5), ({"sex": "M"}, 5)])
    assert sorted((dict(s.path)["sex"], s.members.size, s.subjects) for s in strata) == [("F", 12, 5.0), ("M", 12, 5.0)]

    # But 12 women in the gallery need more than 12 audit women to be drawn from them: no cut
    strata = strata_build(population, [({"sex": "F"}, 12), ({"sex": "M"}, 5)])
    assert [(s.path, s.members.size, s.subjects) for s in strata] == [((), 24, 17.0)]


def test_a_subject_whose_record_leaves_the_cut_unknown_is_shared_in_proportion_to_the_audit():
    # Given 10 women and 30 men in the audit, and a gallery of 8 people whose sex is unknown
    population = _population([{"sex": "F"}] * 10 + [{"sex": "M"}] * 30)

    strata = strata_build(population, [({}, 8)])

    # Then a quarter of them are drawn from the women, three quarters from the men
    assert sorted((dict(s.path)["sex"], s.subjects) for s in strata) == [("F", 2.0), ("M", 6.0)]


def test_a_value_the_audit_never_saw_is_not_cut_on():
    population = _population([{"race": "White"}] * 20 + [{"race": "Black"}] * 20)

    strata = strata_build(population, [({"race": "asian"}, 3), ({"race": "white"}, 3)])

    assert [s.path for s in strata] == [()]


def _line_of_look_alikes():
    """Six people; person 0 looks like 1 (0.3) and 2 (0.5); 3 looks like 4 (0.45); all other pairs are far."""
    pairs = [(0.3, 0, 1), (0.5, 0, 2), (0.45, 3, 4)]
    pairs += [(0.9, a, b) for a, b in combinations(range(6), 2) if (a, b) not in {(0, 1), (0, 2), (3, 4)}]
    return _population([{"sex": "F"}] * 6, pairs=pairs)


def test_fpir_is_the_mean_over_strangers_of_the_chance_that_someone_in_the_gallery_is_that_close():
    # Given six audit people, and a gallery of 2 subjects drawn from them
    population = _line_of_look_alikes()
    model = GalleryModel(population, strata_build(population, [({}, 2)], min_pool=1), min_people=1, min_effective=0)

    # When the figure at 0.46 is computed for everyone
    figure = model.group(np.arange(6), 0.46)

    # Then each stranger's chance is that of drawing a look-alike among 2 of the 5 others
    def chance(k: int) -> float:
        return 1 - math.comb(5 - k, 2) / math.comb(5, 2)

    expected = np.mean([chance(1), chance(1), chance(0), chance(1), chance(1), chance(0)])
    assert figure.fpir == pytest.approx(expected)
    assert figure.expected == pytest.approx(np.mean([2 * k / 5 for k in (1, 1, 0, 1, 1, 0)]))
    assert figure.fpir_low <= figure.fpir <= figure.fpir_high


def test_a_figure_on_too_few_people_or_too_little_evidence_reads_not_measured():
    population = _line_of_look_alikes()
    model = GalleryModel(population, strata_build(population, [({}, 2)], min_pool=1), min_people=20, min_effective=3)

    figure = model.group(np.arange(6), 0.46)

    assert figure.insufficient and not figure.measured
    assert any("6 in the audit, fewer than 20" in reason for reason in figure.reasons)


def test_fnir_comes_from_the_groups_own_genuine_pairs_or_says_it_is_everyones():
    # Given two people with two photos each: person 0's pair at 0.3, person 1's at 0.7
    population = _population(
        [{"sex": "F"}, {"sex": "M"}, {"sex": "M"}],
        photos=[2, 2, 1],
        pairs=[(0.9, 0, 1), (0.9, 0, 2), (0.9, 1, 2)],
        genuine=[0.3, 0.7],
        genuine_people=[0, 1],
    )
    model = GalleryModel(population, strata_build(population, [({}, 1)], min_pool=1), min_people=1, min_effective=0)

    women = model.group(population.members({"sex": "F"}), 0.5)
    third = model.group(np.array([2]), 0.5)

    assert (women.fnir, women.fnir_from, women.fnir_people) == (0.0, "group", 1)
    assert (third.fnir, third.fnir_from) == (0.5, "everyone")
