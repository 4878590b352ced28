"""What a search of this organisation's gallery means for a stranger (1:N), read from stored audit rows.

NIST reports 1:N accuracy as FPIR(N, T): the share of searches for someone who
is not in a gallery of N subjects that still return a candidate at or under T.
Here N is the number of gallery subjects a stranger of an audited group is
compared with in earnest: the subjects recorded in that group, plus those whose
record leaves any of the group's attributes unknown (with nothing recorded,
the whole gallery). Each figure comes from a group's stored, sorted impostor
distances and the people in each pair (see ``matching.accuracy.rates.one_to_many``), and
from the gallery's current counts; nothing is recomputed from photos.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import Count

from matching.accuracy.evaluation import ADULT, AGE_GROUP, CHILD, age_band_lower, audit_validity
from matching.accuracy.rates import OneToMany, fnmr_at, one_to_many, threshold_for_target_fmr
from matching.engine import engine_version
from matching.models import AuditGroup, AuditRun, Subject
from portal.models import Organisation

# Audit columns that may hold each of the portal's recorded attributes.
COLUMN_NAMES = {"sex": ("sex", "gender"), "ethnicity": ("race", "ethnicity"), "age_band": ("age_band",)}
SEX_WORDS = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}
ALARM_FPIR = 0.5
CURVE_THRESHOLDS: tuple[float, ...] = tuple(round(0.30 + 0.025 * i, 3) for i in range(17))


def _normalise(column: str, value: str) -> str:
    value = value.strip()
    if column in COLUMN_NAMES["sex"]:
        return SEX_WORDS.get(value.lower(), value)
    return value.lower().rstrip("s") if column in COLUMN_NAMES["ethnicity"] else value


def _field_for(column: str) -> str | None:
    return next((f for f, names in COLUMN_NAMES.items() if column.lower() in names), None)


def _agrees(column: str, value: str, person: dict[str, str]) -> bool | None:
    """True or False when the person's record decides the column, None when it leaves it unknown."""
    if column == AGE_GROUP:
        lower = age_band_lower(person.get("age_band", ""))
        return None if lower is None else value == (CHILD if lower < 18 else ADULT)
    field_name = _field_for(column)
    if field_name is None or not person.get(field_name):
        return None
    return _normalise(column, value) == _normalise(column, person[field_name])


def group_matches(attributes: dict[str, str], person: dict[str, str]) -> bool:
    """True when every attribute the group is defined by is recorded for the person, with the same value."""
    return bool(attributes) and all(_agrees(c, v, person) is True for c, v in attributes.items())


def group_may_include(attributes: dict[str, str], person: dict[str, str]) -> bool:
    """True unless the person's record places them outside the group (unknown counts as inside)."""
    return all(_agrees(c, v, person) is not False for c, v in attributes.items())


@dataclass(frozen=True)
class GalleryComposition:
    total: int
    records: tuple[tuple[dict[str, str], int], ...]  # (recorded attributes, subjects)

    def size_for(self, attributes: dict[str, str]) -> int:
        return sum(n for person, n in self.records if group_may_include(attributes, person))


def gallery_composition(organisation: Organisation) -> GalleryComposition:
    """Searchable subjects (a current face, not erased) per recorded sex, age band and race/ethnicity."""
    rows = (
        Subject.objects.filter(
            gallery__organisation=organisation,
            erased_at__isnull=True,
            faces__engine_version=engine_version(),
            faces__purged_at__isnull=True,
        )
        .values("sex", "age_band", "ethnicity")
        .annotate(n=Count("id", distinct=True))
        .order_by()
    )
    records = tuple(({k: row[k] for k in ("sex", "age_band", "ethnicity") if row[k]}, row["n"]) for row in rows)
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


def shared_advice(target_fmr: float) -> float | None:
    """The threshold the newest shared audit advises for this target FMR (worst sufficient group), if any."""
    run = (
        AuditRun.objects.filter(
            dataset__organisation__isnull=True, completed_at__isnull=False, engine_version=engine_version()
        )
        .order_by("-completed_at", "-id")
        .first()
    )
    if run is None:
        return None
    thresholds = [
        threshold_for_target_fmr(g.impostor_array, target_fmr)
        for g in run.groups.filter(insufficient=False).exclude(key="all")
    ]
    thresholds = [t for t in thresholds if t is not None]
    return min(thresholds) if thresholds else None


@dataclass(frozen=True)
class GroupRisk:
    """One audited group's 1:N figures at one threshold, as shown (and stored in a decision's snapshot)."""

    key: str
    insufficient: bool
    people: int
    gallery_size: int
    threshold: float
    expected: float | None
    expected_low: float | None
    expected_high: float | None
    fpir: float | None
    fpir_low: float | None
    fpir_high: float | None

    @property
    def expected_text(self) -> str:
        return interval_text(self.expected, self.expected_low, self.expected_high, count_text)

    @property
    def fpir_text(self) -> str:
        return interval_text(self.fpir, self.fpir_low, self.fpir_high, share_text)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def interval_text(value: float | None, low: float | None, high: float | None, shown: Callable) -> str:
    """A figure with its 95% interval, each formatted by `shown`; a dash when there is no figure."""
    if value is None:
        return "—"
    return f"{shown(value)} ({shown(low)}–{shown(high)})"


def count_text(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if value < 0.01:
        return "<0.01"
    if value < 10:
        return f"{value:.2g}" if value < 1 else f"{value:.1f}"
    return f"{value:,.0f}"


def share_text(value: float | None) -> str:
    if value is None:
        return "—"
    value *= 100
    if value == 0:
        return "0%"
    return f"{value:.2f}%" if value < 1 else f"{value:.0f}%"


def group_risk(group: AuditGroup, threshold: float, gallery_size: int) -> GroupRisk | None:
    """None for a run stored before the people of each pair were kept."""
    people = group.impostor_people_array
    if people is None:
        return None
    figure: OneToMany = one_to_many(group.impostor_array, people, threshold, gallery_size)
    return GroupRisk(
        key=group.key,
        insufficient=group.insufficient,
        people=group.identities,
        gallery_size=gallery_size,
        threshold=threshold,
        expected=figure.expected,
        expected_low=figure.expected_low,
        expected_high=figure.expected_high,
        fpir=figure.fpir,
        fpir_low=figure.fpir_low,
        fpir_high=figure.fpir_high,
    )


@dataclass
class ThresholdConsequences:
    """Per-group FPIR, worst sufficient group and FNMR against threshold, for this gallery (the settings page)."""

    run: AuditRun | None
    composition: GalleryComposition
    thresholds: list[float]
    groups: list[tuple[AuditGroup, list[GroupRisk]]]
    worst: list[GroupRisk | None]
    fnmr: list[tuple[float | None, float | None, float | None]]
    in_use: float
    in_use_risks: list[GroupRisk]

    @property
    def alarm(self) -> list[GroupRisk]:
        """Sufficient groups for which the threshold in use returns a candidate in more than half of searches."""
        return [r for r in self.in_use_risks if not r.insufficient and r.fpir is not None and r.fpir > ALARM_FPIR]

    def column(self, threshold: float) -> int | None:
        """The grid column of a threshold already computed, if it is on the grid (nothing is, without an audit)."""
        if len(self.worst) != len(self.thresholds):
            return None
        return next((i for i, t in enumerate(self.thresholds) if abs(t - threshold) < 1e-9), None)

    def risks_at(self, threshold: float) -> list[GroupRisk]:
        column = self.column(threshold)
        if column is not None:
            return [risks[column] for _, risks in self.groups]
        return self._risks_at(threshold)

    def worst_at(self, threshold: float) -> tuple[GroupRisk | None, tuple[float | None, float | None, float | None]]:
        column = self.column(threshold)
        if column is not None:
            return self.worst[column], self.fnmr[column]
        sufficient = [r for r in self._risks_at(threshold) if not r.insufficient and r.fpir is not None]
        worst = max(sufficient, key=lambda r: (r.fpir, r.expected or 0, r.fpir_high or 0), default=None)
        return worst, self._fnmr_at(threshold)

    def _risks_at(self, threshold: float) -> list[GroupRisk]:
        risks = []
        for group, _ in self.groups:
            risk = group_risk(group, threshold, self.composition.size_for(group.attributes))
            if risk is not None:
                risks.append(risk)
        return risks

    everyone: AuditGroup | None = None

    def _fnmr_at(self, threshold: float) -> tuple[float | None, float | None, float | None]:
        everyone = self.everyone
        people = everyone.genuine_people_array if everyone is not None else None
        if everyone is None or people is None or not everyone.genuine_pairs:
            return (None, None, None)
        rate = fnmr_at(everyone.genuine_array, people, threshold)
        return (rate.rate, rate.low, rate.high)


def threshold_consequences(
    organisation: Organisation, *, thresholds: Iterable[float] = CURVE_THRESHOLDS, in_use: float | None = None
) -> ThresholdConsequences:
    run = consequence_run(organisation)
    composition = gallery_composition(organisation)
    grid = sorted({round(float(t), 6) for t in thresholds})
    in_use = organisation.distance_threshold if in_use is None else in_use
    result = ThresholdConsequences(run, composition, grid, [], [], [], in_use, [])
    if run is None:
        return result
    stored = list(run.groups.all())
    result.everyone = next((g for g in stored if g.key == "all"), None)
    groups = [g for g in stored if g.key != "all" and g.impostor_people_array is not None]
    for group in groups:
        size = composition.size_for(group.attributes)
        result.groups.append((group, [group_risk(group, t, size) for t in grid]))
    for column in range(len(grid)):
        sufficient = [
            risks[column] for g, risks in result.groups if not g.insufficient and risks[column].fpir is not None
        ]
        result.worst.append(max(sufficient, key=lambda r: (r.fpir, r.expected or 0, r.fpir_high or 0), default=None))
        result.fnmr.append(result._fnmr_at(grid[column]))
    result.in_use_risks = result.risks_at(in_use)
    return result


def fpir_table(organisation: Organisation, thresholds: Iterable[float]) -> list[dict[str, Any]]:
    """Rows for a report: each threshold, each sufficient group's FPIR and expected strangers, and the FNMR."""
    consequences = threshold_consequences(organisation, thresholds=thresholds)
    rows = []
    for column, threshold in enumerate(consequences.thresholds):
        rows.append(
            {
                "threshold": threshold,
                "worst": consequences.worst[column].as_dict() if consequences.worst[column] else None,
                "fnmr": consequences.fnmr[column],
                "groups": [risks[column].as_dict() for g, risks in consequences.groups if not g.insufficient],
            }
        )
    return rows
