"""The bias panel: what the stored audit says about the groups a candidate involves.

Everything here is read from the rows of the organisation's latest valid audit
run; nothing is recomputed from photos. The score-local rate is read from each
group's stored, sorted impostor distances.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from matching.audit import local_rate, wilson_interval
from matching.evaluation import ADULT, AGE_GROUP, CHILD, AuditValidity, age_band_lower, audit_validity
from matching.models import AuditGroup, AuditRate, Candidate
from portal.models import Organisation

ELEVATED_RATIO = 3.0
# Audit columns that may hold each of the portal's recorded attributes.
COLUMN_NAMES = {"sex": ("sex", "gender"), "ethnicity": ("race", "ethnicity"), "age_band": ("age_band",)}
SEX_WORDS = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


@dataclass(frozen=True)
class GroupFigure:
    key: str
    insufficient: bool
    identities: int
    impostor_pairs: int
    fmr: float | None
    fmr_low: float | None
    fmr_high: float | None
    fmr_ratio: float | None
    local_count: int
    local_pairs: int
    local_per_1000: float | None
    local_ratio: float | None = None

    @property
    def fmr_text(self) -> str:
        if self.fmr is None:
            return "—"
        return f"{percent(self.fmr)} (95% CI {percent(self.fmr_low)}–{percent(self.fmr_high)})"

    @property
    def local_sentence(self) -> str:
        if self.local_per_1000 is None:
            return "no pairs of different people in this group"
        if self.local_count == 0:
            return f"none of {self.local_pairs:,} pairs"
        return f"{self.local_per_1000:.1f} in 1,000 pairs ({self.local_count} of {self.local_pairs:,})"


@dataclass
class BiasPanel:
    valid: bool
    reason: str
    distance: float
    threshold: float
    run_id: int | None = None
    run_label: str = ""
    engine_version: str = ""
    severity: str = "unknown"  # "elevated", "standard" or "unknown" (no valid audit)
    reasons: list[str] = field(default_factory=list)
    child_warning: str = ""
    involved: list[GroupFigure] = field(default_factory=list)
    table: list[GroupFigure] = field(default_factory=list)
    best_group: str = ""
    people: dict[str, dict[str, str]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """What the reviewer was shown, stored with the decision so later audits cannot rewrite it."""
        data = asdict(self)
        data["involved"] = [asdict(g) for g in self.involved]
        data["table"] = [asdict(g) for g in self.table]
        return data


def percent(value: float | None) -> str:
    if value is None:
        return "—"
    value *= 100
    return f"{value:.2f}%" if 0 < value < 1 else f"{value:.1f}%"


def _normalise(column: str, value: str) -> str:
    value = value.strip()
    if column in COLUMN_NAMES["sex"]:
        return SEX_WORDS.get(value.lower(), value)
    return value.lower().rstrip("s") if column in COLUMN_NAMES["ethnicity"] else value


def _recorded(sex: str, age_band: str, ethnicity: str) -> dict[str, str]:
    values = {"sex": sex, "age_band": age_band, "ethnicity": ethnicity}
    return {name: value for name, value in values.items() if value}


def _group_matches(group: AuditGroup, person: dict[str, str]) -> bool:
    """True when every attribute the group is defined by is one the person has, with the same value."""
    for column, value in group.attributes.items():
        if column == AGE_GROUP:
            lower = age_band_lower(person.get("age_band", ""))
            if lower is None or value != (CHILD if lower < 18 else ADULT):
                return False
            continue
        field_name = next((f for f, names in COLUMN_NAMES.items() if column.lower() in names), None)
        if field_name is None or field_name not in person:
            return False
        if _normalise(column, value) != _normalise(column, person[field_name]):
            return False
    return bool(group.attributes)


def _figure(group: AuditGroup, rate: AuditRate | None, threshold: float, distance: float) -> GroupFigure:
    impostors = group.impostor_array
    if rate is not None:
        fmr, low, high, ratio = rate.fmr, rate.fmr_low, rate.fmr_high, rate.fmr_ratio_to_best
    else:
        # The threshold changed since the run: read the rate from the stored distances.
        count, pairs, _ = local_rate(impostors, threshold)
        fmr = count / pairs if pairs else None
        low, high = wilson_interval(count, pairs) if pairs else (None, None)
        ratio = None
    count, pairs, per_1000 = local_rate(impostors, distance)
    return GroupFigure(
        key=group.key,
        insufficient=group.insufficient,
        identities=group.identities,
        impostor_pairs=group.impostor_pairs,
        fmr=fmr,
        fmr_low=low,
        fmr_high=high,
        fmr_ratio=ratio,
        local_count=count,
        local_pairs=pairs,
        local_per_1000=per_1000,
    )


def _local(figure: GroupFigure) -> float:
    return figure.local_count / figure.local_pairs if figure.local_pairs else 0.0


def _best_rate(figure: GroupFigure) -> float:
    """The best group's rate for ratios. A best group with no pair this close is taken at the top of its
    95% interval: zero observed is not zero, and dividing by it would make every ratio look huge."""
    if figure.local_count:
        return _local(figure)
    return wilson_interval(0, figure.local_pairs)[1]


@dataclass
class AuditContext:
    """The stored audit rows one organisation's panels read, loaded once for many candidates."""

    validity: AuditValidity
    groups: list[AuditGroup] = field(default_factory=list)
    rates: dict[tuple[int, float], AuditRate] = field(default_factory=dict)

    @classmethod
    def load(cls, organisation: Organisation) -> AuditContext:
        validity = audit_validity(organisation)
        if not validity.valid:
            return cls(validity)
        run = validity.run
        groups = list(run.groups.exclude(key="all"))
        rates = {(r.group_id, round(r.threshold, 6)): r for r in AuditRate.objects.filter(group__run=run)}
        return cls(validity, groups, rates)


def bias_panel(candidate: Candidate, context: AuditContext | None = None) -> BiasPanel:
    subject, case = candidate.subject, candidate.case
    organisation = case.organisation
    threshold = candidate.search.threshold
    context = context or AuditContext.load(organisation)
    people = {
        "subject": _recorded(subject.sex, subject.age_band, subject.ethnicity),
        "probe": _recorded(case.probe_sex, case.probe_age_band, case.probe_ethnicity),
    }
    validity = context.validity
    panel = BiasPanel(valid=validity.valid, reason=validity.reason, distance=candidate.distance, threshold=threshold)
    panel.people = people
    children = [(role, age_band_lower(p["age_band"])) for role, p in people.items() if p.get("age_band") is not None]
    under_18 = [role for role, lower in children if lower is not None and lower < 18]
    under_10 = [role for role, lower in children if lower is not None and lower < 10]
    if under_18:
        panel.reasons.append(f"The {' and the '.join(under_18)} {'is' if len(under_18) == 1 else 'are'} under 18.")

    run = validity.run if validity.valid else None
    if run is None:
        panel.severity = "unknown"
        if under_10:
            panel.child_warning = (
                "This involves a child under 10. Face matching is known to confuse young children with each "
                "other far more often than adults, and there is no valid audit to say how often here."
            )
        return panel

    panel.run_id, panel.engine_version = run.pk, run.engine_version
    panel.run_label = f"audit {run.pk} of “{run.dataset.name}”, {run.photos} photos, {run.completed_at:%Y-%m-%d}"
    groups = list(run.groups.exclude(key="all"))
    rates = {
        r.group_id: r
        for r in AuditRate.objects.filter(
            group__run=run, threshold__gte=threshold - 1e-9, threshold__lte=threshold + 1e-9
        )
    }
    figures = {g.key: _figure(g, rates.get(g.id), threshold, candidate.distance) for g in groups}
    sufficient = [f for f in figures.values() if not f.insufficient and f.local_pairs]
    best = min(sufficient, key=lambda f: (_local(f), -f.local_pairs), default=None)
    if best is not None:
        panel.best_group = best.key
        floor = _best_rate(best)
        for key, figure in figures.items():
            ratio = _local(figure) / floor if figure.local_count and floor > 0 else None
            figures[key] = GroupFigure(**{**asdict(figure), "local_ratio": ratio})
    panel.table = sorted(figures.values(), key=lambda f: (-(f.local_per_1000 or 0), f.key))

    involved_keys = {g.key for g in groups for person in people.values() if person and _group_matches(g, person)}
    panel.involved = [figures[k] for k in sorted(involved_keys, key=lambda k: (k.count("&"), k))]
    for figure in panel.involved:
        if figure.insufficient:
            panel.reasons.append(f"{figure.key}: insufficient data in the audit.")
        elif figure.local_ratio is not None and figure.local_ratio >= ELEVATED_RATIO:
            panel.reasons.append(
                f"{figure.key}: pairs of different people this close are {figure.local_ratio:.1f}× as common "
                f"as in the best-measured group ({panel.best_group})."
            )
    if under_10:
        young = next((f for f in figures.values() if f.key == "age_band=0-9"), None)
        if young is not None and young.fmr is not None:
            panel.child_warning = (
                f"This involves a child under 10. In this audit, {100 * young.fmr:.0f}% of pairs of different "
                f"children aged 0–9 were within the threshold of {threshold:.2f} "
                f"({young.local_sentence} were at least as close as this candidate). At these ages the matcher "
                "cannot reliably tell different children apart: treat this candidate as very weak evidence."
            )
        else:
            panel.child_warning = (
                "This involves a child under 10. The audit has no measurement for ages 0–9, and face matching is "
                "known to confuse young children with each other far more often than adults."
            )
    panel.severity = "elevated" if panel.reasons else "standard"
    return panel
