"""What a search of this gallery means: the composition, the 1:N figures per group and the operating point."""

from __future__ import annotations

from itertools import combinations

from django.utils import timezone

from matching.accuracy.gallery_risk import (
    gallery_composition,
    operating_point_choose,
    operating_point_for,
    record_profile,
    threshold_consequences,
)
from matching.accuracy.one_to_many import OneToMany
from matching.models import Photo, Subject
from tests.factories import audit_run_of_people, searchable_subjects, women_who_look_alike


def test_the_composition_counts_searchable_and_pending_subjects_but_not_erased_ones(org):
    # Given 3 searchable subjects, 2 whose photo waits for the worker, and 1 erased
    searchable_subjects(org, 3, sex="F", ethnicity="Asian")
    searchable_subjects(org, 1, sex="M")
    searchable_subjects(org, 1, sex="M")
    erased = Subject.objects.filter(sex="M").order_by("pk").first()
    Subject.objects.filter(pk=erased.pk).update(erased_at=timezone.now())
    pending = Subject.objects.filter(sex="M", erased_at__isnull=True).get()
    pending.faces.all().delete()
    Photo.objects.filter(subject=pending).update(status="queued")

    composition = gallery_composition(org)

    assert composition.total == 4
    assert dict(composition.records)[tuple(sorted(record_profile(sex="F", ethnicity="Asian").items()))] == 3


def test_a_stranger_is_compared_with_the_whole_gallery_not_only_their_own_group(org):
    # Given an audit in which every woman looks like every man at 0.5 (and no woman like another)
    people = [(1, {"sex": "F"})] * 20 + [(1, {"sex": "M"})] * 20
    impostor = [(0.5 if (a < 20) != (b < 20) else 0.9, a, b) for a, b in combinations(range(40), 2)]
    audit_run_of_people(org, people, impostor, groups=[{"sex": "F"}, {"sex": "M"}])
    # and a gallery of men only
    searchable_subjects(org, 10, sex="M")

    # When the figures for a woman stranger are read at 0.55
    consequences = threshold_consequences(org)
    women = next(f for f in consequences.figures_at(0.55) if f.key == "sex=F")

    # Then her searches return a man in every search: she meets the men
    assert women.figure.gallery_size == 10
    assert women.figure.fpir == 1.0


def test_the_proposal_misses_fewest_true_matches_with_every_group_under_the_ceiling(org):
    women_who_look_alike(org)
    searchable_subjects(org, 10, sex="F")
    searchable_subjects(org, 10, sex="M")

    point = operating_point_for(threshold_consequences(org))

    # 0.46 would let most of the women's strangers through; at 0.45 everyone enrolled misses half the matches
    assert point.proposed == 0.45 and point.binding.key == "sex=F"
    assert point.everyone.fnir == 0.5 and point.misses_most
    assert point.weak == []


def test_a_group_no_threshold_keeps_under_the_ceiling_is_named_and_holds_nobody_back(org):
    # Given 20 children who all look alike from the strictest threshold on, and 20 adults who look like nobody
    people = [(2, {"age_band": "0-9"})] * 20 + [(2, {"age_band": "30-44"})] * 20
    impostor = [(0.2 if b < 20 else 0.9, a, b) for a, b in combinations(range(40), 2)]
    genuine = [(0.3, i) for i in range(40)]
    audit_run_of_people(org, people, impostor, genuine, groups=[{"age_band": "0-9"}, {"age_band": "30-44"}])
    searchable_subjects(org, 10, age_band="0-9")
    searchable_subjects(org, 10, age_band="30-44")

    point = operating_point_for(threshold_consequences(org))

    assert [w.key for w in point.weak] == ["age_band=0-9"] and point.weak[0].best_threshold is None
    assert "For children aged 0-9, no threshold" in point.weak[0].sentence
    assert "every candidate for a child aged 0-9 is weak evidence" in point.weak[0].sentence
    # the adults' strangers stay out at every threshold shown, so the proposal is the loosest, missing nobody
    assert point.proposed == 0.75 and not point.misses_most


def _figure(fpir_high: float | None, measured: bool = True, fnir: float | None = 0.1) -> OneToMany:
    fpir = None if fpir_high is None else fpir_high / 2
    return OneToMany(
        0.5, 100, 30, fpir, 0.0, fpir_high, 30.0, 1.0, 0.0, 2.0, fnir=fnir, insufficient=not measured, reasons=()
    )


def test_a_group_that_drops_out_of_measurement_never_lets_the_threshold_through():
    # Given a group over the ceiling in the third column, whose figures further on are too thin to be measured
    rows = {
        "thin": [_figure(0.2), _figure(0.3), _figure(0.7), _figure(0.2, measured=False), _figure(0.2, measured=False)],
        "fine": [_figure(0.1)] * 5,
    }

    column, binding, weak = operating_point_choose(rows, ceiling=0.5)

    # Then the proposal stops before it: a group's strangers never get fewer as the threshold grows
    assert (column, binding, weak) == (1, "thin", [])


def test_a_group_whose_best_threshold_misses_most_is_weak_and_holds_nobody_back():
    rows = {
        "children": [_figure(0.3, fnir=0.7), _figure(0.6, fnir=0.6), _figure(0.9, fnir=0.4)],
        "adults": [_figure(0.1, fnir=0.7), _figure(0.2, fnir=0.6), _figure(0.3, fnir=0.4)],
    }

    column, binding, weak = operating_point_choose(rows, ceiling=0.5)

    assert weak == [("children", 0, 0.7)]
    assert (column, binding) == (2, None)


def test_nothing_is_proposed_when_every_measured_group_is_weak():
    rows = {"children": [_figure(0.9)] * 3, "thin": [_figure(0.1, measured=False)] * 3}

    assert operating_point_choose(rows, ceiling=0.5) == (None, None, [("children", None, None)])
