"""What a search of this organisation's gallery means (1:N), read from a stored audit run and the gallery's counts.

NIST reports 1:N accuracy as FPIR(N, T): the share of searches for someone who is not in a gallery of N subjects
that still return a candidate at or under T; and FNIR(N, T): the share of searches for someone who is enrolled
that miss them. A stranger is compared with every subject of the gallery, whatever their group, so the figures
come from the audit's pairs across all of its people and from the gallery's real composition
(``matching.accuracy.one_to_many``). Nothing is recomputed from photos.

The operating point: the threshold that misses the fewest true matches while, for every group the audit
measures, the top of the 95% interval of its FPIR stays at or under the organisation's ceiling. A group for
which no threshold keeps its strangers out without missing most true matches is named, and every candidate
involving it is weak evidence.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import Count, Q
from django.utils import timezone

from matching.accuracy.evaluation import audit_validity
from matching.accuracy.one_to_many import COLUMN_NAMES, GalleryModel, OneToMany, Population, profile, strata_build
from matching.accuracy.rates import ADULT, CHILD, age_band_lower
from matching.engine import engine_version
from matching.models import AuditGroup, AuditRun, PhotoKind, PhotoStatus, Subject
from portal.models import Organisation

# The words a normalised race takes back (profiles compare "asian"; people read "Asian").
RACE_WORDS = {"asian": "Asian", "black": "Black", "indian": "Indian", "white": "White", "other": "Others"}
ALARM_FPIR = 0.5
MISSES_MOST = 0.5
# The settings page's curve and the grid the operating point is chosen on.
CURVE_THRESHOLDS: tuple[float, ...] = tuple(round(0.25 + 0.01 * i, 2) for i in range(51))
TABLE_THRESHOLDS: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
EVERYONE = "everyone"


def record_profile(*, sex: str = "", age_band: str = "", ethnicity: str = "") -> dict[str, str]:
    """A gallery subject's or a case's probe record, in the same words."""
    return profile({"sex": sex, "race": ethnicity, "age_band": age_band})


def describe(attributes: Mapping[str, str], *, plural: bool = False) -> str:
    """A group in plain words ('Asian women', 'girls under 18'), or one of its people ('an Asian woman')."""
    words = profile(attributes)
    band = words.get("age_band", "")
    lower = age_band_lower(band) if band else None
    child = (lower is not None and lower < 18) or words.get("age_group") == CHILD
    adult = (lower is not None and lower >= 18) or words.get("age_group") == ADULT
    nouns = {
        ("F", True): ("girl", "girls"),
        ("M", True): ("boy", "boys"),
        ("F", False): ("woman", "women"),
        ("M", False): ("man", "men"),
        ("", True): ("child", "children"),
        ("", False): ("adult", "adults") if adult else ("person", "people"),
    }
    noun = nouns.get((words.get("sex", ""), child), ("person", "people"))[1 if plural else 0]
    race = next((v for k, v in attributes.items() if k.lower() in COLUMN_NAMES["race"] and v), "")
    race = RACE_WORDS.get(race, race)
    if race and words.get("race") != "other":
        noun = f"{race} {noun}"
    if band:
        noun += f" aged {band}"
    elif child and not (lower is not None):
        noun += " under 18"
    elif adult and words.get("sex") and lower is None:
        noun += " (18 and over)"
    if race and words.get("race") == "other":
        noun += f" recorded as race “{race}”"
    if plural:
        return noun
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


@dataclass(frozen=True)
class GalleryComposition:
    """Searchable subjects per recorded profile: a current face, or a reference photo still being processed."""

    total: int
    records: tuple[tuple[tuple[tuple[str, str], ...], int], ...]  # ((profile items), subjects), sorted

    def as_records(self) -> list[tuple[dict[str, str], int]]:
        return [(dict(items), count) for items, count in self.records]


def gallery_composition(organisation: Organisation) -> GalleryComposition:
    pending = [PhotoStatus.QUEUED, PhotoStatus.DETECTING, PhotoStatus.MATCHING]
    rows = (
        Subject.objects.filter(gallery__organisation=organisation, erased_at__isnull=True)
        .filter(
            Q(faces__engine_version=engine_version(), faces__purged_at__isnull=True)
            | Q(photos__kind=PhotoKind.REFERENCE, photos__status__in=pending)
        )
        .values("sex", "age_band", "ethnicity")
        .annotate(n=Count("id", distinct=True))
        .order_by()
    )
    counts: dict[tuple[tuple[str, str], ...], int] = {}
    for row in rows:
        recorded = record_profile(sex=row["sex"], age_band=row["age_band"], ethnicity=row["ethnicity"])
        key = tuple(sorted(recorded.items()))
        counts[key] = counts.get(key, 0) + row["n"]
    records = tuple(sorted(counts.items()))
    return GalleryComposition(total=sum(n for _, n in records), records=records)


def _composition_like(population: Population) -> GalleryComposition:
    """A gallery made of the audit's own people, as a record would hold them (sex, race, age band)."""
    counts: dict[tuple[tuple[str, str], ...], int] = {}
    for person in population.profiles:
        key = tuple(sorted((k, v) for k, v in person.items() if k in ("sex", "race", "age_band")))
        counts[key] = counts.get(key, 0) + 1
    records = tuple(sorted(counts.items()))
    return GalleryComposition(total=sum(n for _, n in records), records=records)


def consequence_run(organisation: Organisation) -> AuditRun | None:
    """The audit whose rows the 1:N figures read: the organisation's valid run, else the newest run of a shared set."""
    validity = audit_validity(organisation)
    if validity.valid:
        return validity.run
    return (
        AuditRun.objects.filter(
            dataset__organisation__isnull=True, completed_at__isnull=False, engine_version=engine_version()
        )
        .select_related("dataset")
        .order_by("-completed_at", "-id")
        .first()
    )


class _Cache(OrderedDict):
    """A few recent items per process: populations and models are read many times and never change."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def keep(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


_populations = _Cache(4)
_models = _Cache(16)


def _run_key(run: AuditRun) -> tuple:
    """A run's identity for the caches: its id and completion (a database may give a deleted row's id again)."""
    return (run.pk, run.completed_at)


def caches_clear() -> None:
    for cache in (_populations, _models, _points):
        cache.clear()


def population_for(run: AuditRun) -> Population | None:
    """The run's people and its pairs across all of them; None for a run stored without them."""
    if _run_key(run) in _populations:
        return _populations[_run_key(run)]
    everyone = run.groups.filter(key="all").first()
    people = run.people or []
    pairs = everyone.impostor_people_array if everyone is not None else None
    if everyone is None or not people or pairs is None:
        return None
    genuine_people = everyone.genuine_people_array if everyone.genuine_pairs else None
    population = Population.build(
        people,
        everyone.impostor_array,
        pairs,
        everyone.genuine_array if genuine_people is not None else np.zeros(0, np.float32),
        genuine_people if genuine_people is not None else np.zeros(0, np.int32),
    )
    return _populations.keep(_run_key(run), population)


def gallery_model(run: AuditRun, composition: GalleryComposition) -> GalleryModel | None:
    from django.conf import settings

    key = (_run_key(run), composition.records)
    if key in _models:
        return _models[key]
    population = population_for(run)
    if population is None:
        return None
    strata = strata_build(population, composition.as_records())
    model = GalleryModel(
        population,
        strata,
        min_people=run.min_identities,
        min_effective=settings.AUDIT_MIN_EFFECTIVE_SEARCHES,
    )
    return _models.keep(key, model)


@dataclass(frozen=True)
class GroupFigure:
    """One stranger group's 1:N figures at one threshold (or distance)."""

    key: str
    attributes: dict[str, str]
    figure: OneToMany

    @property
    def words(self) -> str:
        return describe(self.attributes, plural=True) if self.attributes else "anyone"


@dataclass
class WeakGroup:
    key: str
    attributes: dict[str, str]
    people: int
    best_threshold: float | None  # the largest threshold that keeps its strangers under the ceiling
    fnir: float | None  # what that threshold misses

    @property
    def words(self) -> str:
        return describe(self.attributes, plural=True)

    @property
    def sentence(self) -> str:
        who = self.words
        if self.best_threshold is None:
            return (
                f"For {who}, no threshold from {CURVE_THRESHOLDS[0]} up keeps strangers' searches under the ceiling: "
                f"this engine cannot keep strangers out, so every candidate for {describe(self.attributes)} is weak "
                "evidence."
            )
        missed = "most" if self.fnir is None else f"{round(100 * self.fnir)} in 100"
        one = describe(self.attributes)
        return (
            f"For {who}, this engine cannot keep strangers out without missing most true matches (at "
            f"{self.best_threshold:.2f} it would miss {missed}): every candidate for {one} is weak evidence."
        )


@dataclass
class OperatingPoint:
    ceiling: float
    proposed: float | None
    binding: GroupFigure | None  # the group that stops the threshold going higher
    everyone: OneToMany | None  # a stranger of any group, and the miss rate for anyone enrolled, at the proposal
    weak: list[WeakGroup] = field(default_factory=list)

    @property
    def misses_most(self) -> bool:
        return bool(self.everyone and self.everyone.fnir is not None and self.everyone.fnir >= MISSES_MOST)


@dataclass
class ThresholdConsequences:
    """Per-group 1:N figures against threshold for this gallery, and the operating point (the settings page)."""

    run: AuditRun | None
    composition: GalleryComposition
    model: GalleryModel | None
    thresholds: list[float]
    in_use: float
    ceiling: float
    groups: list[tuple[AuditGroup, np.ndarray]] = field(default_factory=list)
    unavailable: str = ""
    assumed: str = ""  # set when the gallery is empty and the audit's own people stand in for it

    def figures_at(self, threshold: float) -> list[GroupFigure]:
        if self.model is None:
            return []
        return [GroupFigure(g.key, g.attributes, self.model.group(members, threshold)) for g, members in self.groups]

    @property
    def everyone_members(self) -> np.ndarray:
        """Every audited person: a stranger of any group."""
        return np.arange(self.model.population.size if self.model else 0)

    def everyone_at(self, threshold: float) -> GroupFigure | None:
        if self.model is None:
            return None
        return GroupFigure(EVERYONE, {}, self.model.group(self.everyone_members, threshold))

    def worst_at(self, threshold: float) -> GroupFigure | None:
        measured = [f for f in self.figures_at(threshold) if f.figure.measured]
        return max(measured, key=lambda f: (f.figure.fpir, f.figure.fpir_high, f.key), default=None)

    @property
    def alarm(self) -> list[GroupFigure]:
        """Measured groups for which the threshold in use returns a candidate in more than half of searches."""
        return sorted(
            (f for f in self.figures_at(self.in_use) if f.figure.measured and f.figure.fpir > ALARM_FPIR),
            key=lambda f: -f.figure.fpir,
        )

    def operating_point(self) -> OperatingPoint:
        """The operating point for this gallery (``operating_point_choose``), on the curve's grid."""
        if self.model is None:
            return OperatingPoint(self.ceiling, None, None, None)
        grid = list(CURVE_THRESHOLDS)
        rows = {g.key: [self.model.group(m, t) for t in grid] for g, m in self.groups}
        column, binding, weak = operating_point_choose(rows, self.ceiling)
        groups = {g.key: (g, m) for g, m in self.groups}
        named = [
            WeakGroup(
                key, groups[key][0].attributes, int(groups[key][1].size), None if best is None else grid[best], fnir
            )
            for key, best, fnir in weak
        ]
        if column is None:
            return OperatingPoint(self.ceiling, None, None, None, named)
        held = GroupFigure(binding, groups[binding][0].attributes, rows[binding][column]) if binding else None
        everyone = self.everyone_at(grid[column])
        return OperatingPoint(self.ceiling, grid[column], held, everyone.figure if everyone else None, named)


def _at(grid: list[float], column: int | None) -> float | None:
    return None if column is None else grid[column]


def operating_point_choose(
    rows: Mapping[str, list[OneToMany]], ceiling: float
) -> tuple[int | None, str | None, list[tuple[str, int | None, float | None]]]:
    """The column of the threshold that misses fewest true matches while every measured group's FPIR (the top of
    its 95% interval) stays at or under the ceiling; the group that stops it going higher; and the weak groups.

    ``rows`` holds each group's figures at the thresholds of one grid, in order. FPIR only grows with the
    threshold, so a group that passes the ceiling at one threshold is taken to pass it at every higher one, even
    where its figure there is too thin to be called measured: a group that drops out of measurement never lets
    the threshold through. A group whose highest threshold under the ceiling misses most true matches, or that
    no threshold keeps under it, is weak evidence: it is named (with that threshold's column and miss rate),
    and holds nobody else's threshold down. With every measured group weak, nothing is proposed.
    """
    width = len(next(iter(rows.values()), []))
    measured = {key: any(f.measured for f in figures) for key, figures in rows.items()}
    limit = {
        key: min((i for i, f in enumerate(figures) if f.measured and f.fpir_high > ceiling), default=width)
        for key, figures in rows.items()
    }
    weak: list[tuple[str, int | None, float | None]] = []
    for key, figures in rows.items():
        if not measured[key] or limit[key] == width:
            continue
        best = limit[key] - 1
        if best < 0:
            weak.append((key, None, None))
        elif figures[best].fnir is not None and figures[best].fnir >= MISSES_MOST:
            weak.append((key, best, figures[best].fnir))
    weak_keys = {key for key, _, _ in weak}
    holding = {key: limit[key] for key in rows if measured[key] and key not in weak_keys}
    if not holding or min(holding.values()) == 0:
        return None, None, weak
    column = min(holding.values()) - 1
    binding = None
    if column + 1 < width:
        binding = max((k for k, i in holding.items() if i == column + 1), key=lambda k: rows[k][column + 1].fpir_high)
    return column, binding, weak


def threshold_consequences(
    organisation: Organisation,
    *,
    thresholds: Iterable[float] = CURVE_THRESHOLDS,
    in_use: float | None = None,
    run: AuditRun | None = None,
) -> ThresholdConsequences:
    """The 1:N figures of this gallery, from ``run`` (by default the organisation's valid audit, else the newest
    shared one)."""
    run = run or consequence_run(organisation)
    composition = gallery_composition(organisation)
    grid = sorted({round(float(t), 6) for t in thresholds})
    in_use = organisation.distance_threshold if in_use is None else in_use
    result = ThresholdConsequences(run, composition, None, grid, in_use, organisation.fpir_ceiling)
    if run is None:
        result.unavailable = "No audit has been run: nothing can say what a search of this gallery means."
        return result
    population = population_for(run)
    if population is None:
        result.unavailable = (
            f"Audit {run.pk} was stored before the people of each pair were kept; run the audit again to see "
            "what a search of the whole gallery means."
        )
        return result
    if not composition.total:
        # Nothing enrolled yet: a gallery like the audit's own people stands in, and the page says so.
        result.composition = composition = _composition_like(population)
        result.assumed = (
            f"No subject is enrolled yet: these figures are for a gallery like the audit's own {composition.total} "
            "people, and change as you enrol."
        )
    result.model = gallery_model(run, composition)
    population = result.model.population
    for group in run.groups.exclude(key="all").defer("impostor_distances", "impostor_people", "genuine_distances"):
        result.groups.append((group, population.members(group.attributes)))
    return result


_points = _Cache(16)


def operating_point_for(consequences: ThresholdConsequences) -> OperatingPoint:
    """The operating point, kept per process for the same audit, gallery composition and ceiling."""
    if consequences.model is None or consequences.run is None:
        return consequences.operating_point()
    key = (_run_key(consequences.run), consequences.composition.records, consequences.ceiling)
    if key not in _points:
        _points.keep(key, consequences.operating_point())
    return _points[key]


def groups_of_person(groups: Iterable[tuple[AuditGroup, np.ndarray]], person: Mapping[str, str]):
    """The audited groups a person falls in, as recorded (every attribute of the group known and equal)."""
    words = dict(person)
    for group, members in groups:
        wanted = profile(group.attributes)
        if wanted and all(words.get(k) == v for k, v in wanted.items()):
            yield group, members


def one_to_many_document(
    organisation: Organisation, thresholds: Iterable[float] = TABLE_THRESHOLDS, *, run: AuditRun | None = None
) -> dict[str, Any]:
    """The 1:N figures for this organisation's gallery now, from ``run`` (by default the one the settings page
    reads), as the audit JSON's ``one_to_many`` section."""
    consequences = threshold_consequences(organisation, run=run)
    point = operating_point_for(consequences)
    document: dict[str, Any] = {
        "gallery": {
            "subjects": consequences.composition.total,
            "composition": [{"record": dict(items), "subjects": n} for items, n in consequences.composition.records],
        },
        "run": consequences.run.pk if consequences.run else None,
        "computed_at": timezone.now().isoformat(),
        "unavailable": consequences.unavailable or None,
        "assumed_gallery": consequences.assumed or None,
        "threshold_in_use": consequences.in_use,
        "fpir_ceiling": consequences.ceiling,
        "operating_point": None,
        "groups": [],
    }
    if consequences.model is None:
        return document
    document["strata"] = [
        {"path": dict(s.path), "audit_people": int(s.members.size), "subjects": round(s.subjects, 3)}
        for s in consequences.model.strata
    ]
    document["operating_point"] = {
        "threshold": point.proposed,
        "binding_group": point.binding.key if point.binding else None,
        "misses_most": point.misses_most,
        "everyone": _figure_document(point.everyone) if point.everyone else None,
        "weak_evidence": [
            {"group": w.key, "people": w.people, "best_threshold": w.best_threshold, "fnir_there": w.fnir}
            for w in point.weak
        ],
    }
    grid = sorted({*thresholds, consequences.in_use, *([point.proposed] if point.proposed else [])})
    rows = [(EVERYONE, {}, np.arange(consequences.model.population.size))]
    rows += [(g.key, g.attributes, m) for g, m in consequences.groups]
    for key, attributes, members in rows:
        document["groups"].append(
            {
                "key": key,
                "attributes": attributes,
                "rates": [_figure_document(consequences.model.group(members, t)) for t in grid],
            }
        )
    return document


def _figure_document(figure: OneToMany) -> dict[str, Any]:
    return {
        "threshold": figure.threshold,
        "gallery_size": figure.gallery_size,
        "people": figure.people,
        "fpir": figure.fpir,
        "fpir_ci95": [figure.fpir_low, figure.fpir_high],
        "fpir_effective_n": figure.effective_n,
        "expected": figure.expected,
        "expected_ci95": [figure.expected_low, figure.expected_high],
        "fnir": figure.fnir,
        "fnir_ci95": [figure.fnir_low, figure.fnir_high],
        "fnir_people": figure.fnir_people,
        "fnir_from": figure.fnir_from or None,
        "insufficient": figure.insufficient,
        "insufficient_reasons": list(figure.reasons),
    }


def in_100(value: float | None) -> str:
    """A share as a natural frequency out of 100 searches: '48', '<1', '0'."""
    if value is None:
        return "—"
    shown = 100 * value
    if shown == 0:
        return "0"
    if shown < 1:
        return "<1"
    if shown > 99 and value < 1:
        return ">99"
    return f"{shown:.0f}"


def in_100_interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "—"
    return f"{in_100(value)} ({in_100(low)}–{in_100(high)})"


def count_text(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if value < 0.1:
        return "<0.1"
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"
