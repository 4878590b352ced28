"""The bias panel: what the stored audit says about the groups a candidate involves.

Everything here is read from the rows of the organisation's latest valid audit
run; nothing is recomputed from photos. The score-local rate is read from each
group's stored, sorted impostor distances.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from matching.accuracy.evaluation import AuditValidity, age_band_lower, audit_validity
from matching.accuracy.gallery_risk import (
    GalleryComposition,
    count_text,
    gallery_composition,
    group_matches,
    interval_text,
    share_text,
)
from matching.accuracy.rates import fmr_at, local_rate, one_to_many, wilson_interval
from matching.models import AuditGroup, AuditRate, Candidate
from portal.models import Organisation

ELEVATED_RATIO = 3.0


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
    # 1:N, for this organisation's gallery as it was when the panel was drawn: subjects a stranger of the
    # group is compared with, FPIR and expected subjects within the threshold, and at this candidate's distance.
    gallery_size: int | None = None
    fpir: float | None = None
    fpir_low: float | None = None
    fpir_high: float | None = None
    expected: float | None = None
    expected_low: float | None = None
    expected_high: float | None = None
    local_fpir: float | None = None
    local_fpir_low: float | None = None
    local_fpir_high: float | None = None
    local_expected: float | None = None
    local_expected_low: float | None = None
    local_expected_high: float | None = None
    local_low: float | None = None  # identity-level interval of the score-local rate
    local_high: float | None = None

    @property
    def fmr_text(self) -> str:
        if self.fmr is None:
            return "—"
        return f"{percent(self.fmr)} (95% CI {percent(self.fmr_low)}–{percent(self.fmr_high)})"

    @property
    def fmr_short(self) -> str:
        return interval_text(self.fmr, self.fmr_low, self.fmr_high, percent)

    @property
    def local_short(self) -> str:
        if self.local_per_1000 is None:
            return "—"
        if self.local_low is None:
            return f"{self.local_per_1000:.1f} ({self.local_count} of {self.local_pairs:,})"
        return (
            f"{self.local_per_1000:.1f} ({1000 * self.local_low:.1f}–{1000 * self.local_high:.1f}; "
            f"{self.local_count} of {self.local_pairs:,} pairs)"
        )

    @property
    def fpir_text(self) -> str:
        return interval_text(self.fpir, self.fpir_low, self.fpir_high, share_text)

    @property
    def expected_text(self) -> str:
        return interval_text(self.expected, self.expected_low, self.expected_high, count_text)

    @property
    def local_fpir_text(self) -> str:
        return interval_text(self.local_fpir, self.local_fpir_low, self.local_fpir_high, share_text)

    @property
    def local_expected_text(self) -> str:
        return interval_text(self.local_expected, self.local_expected_low, self.local_expected_high, count_text)

    @property
    def local_interval_text(self) -> str:
        if self.local_low is None:
            return ""
        return f"95% CI {1000 * self.local_low:.1f}–{1000 * self.local_high:.1f} in 1,000"

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
    headline: str = ""  # the largest measured risk among the groups involved, against a named group
    headline_hidden: str = ""  # the same at the threshold only, for while scores are hidden
    comparison_group: str = ""
    interval_method: str = ""
    gallery_total: int | None = None
    scores_hidden: bool = False
    child_warning_hidden: str = ""
    best_group_hidden: str = ""

    def snapshot(self) -> dict[str, Any]:
        """What the reviewer was shown, stored with the decision so later audits cannot rewrite it."""
        data = asdict(self)
        data["involved"] = [asdict(g) for g in self.involved]
        data["table"] = [asdict(g) for g in self.table]
        return data

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> BiasPanel:
        """A stored snapshot drawn again as it was shown; snapshots from before a field existed lack it."""
        names = {f.name for f in fields(cls)}
        figure_names = {f.name for f in fields(GroupFigure)}

        def figure(item: dict[str, Any]) -> GroupFigure:
            return GroupFigure(**{k: v for k, v in item.items() if k in figure_names})

        panel = cls(**{k: v for k, v in data.items() if k in names and k not in ("involved", "table")})
        panel.involved = [figure(g) for g in data.get("involved", [])]
        panel.table = [figure(g) for g in data.get("table", [])]
        return panel

    def hidden(self) -> BiasPanel:
        """The panel while scores are hidden: group-level rates at the threshold, no distance, no local rate."""

        def strip(figure: GroupFigure) -> GroupFigure:
            local = {k: None for k in _LOCAL_FIELDS}
            return GroupFigure(**{**asdict(figure), **local, "local_count": 0, "local_pairs": 0})

        panel = BiasPanel(**{**{f.name: getattr(self, f.name) for f in fields(self)}})
        panel.distance = None
        panel.scores_hidden = True
        panel.headline = self.headline_hidden
        panel.reasons = [r for r in self.reasons if "this close" not in r]
        panel.involved = [strip(g) for g in self.involved]
        panel.table = sorted((strip(g) for g in self.table), key=lambda g: (-(g.fmr or 0), g.key))
        panel.child_warning = self.child_warning_hidden or self.child_warning
        panel.best_group = self.best_group_hidden
        return panel


_LOCAL_FIELDS = (
    "local_per_1000",
    "local_ratio",
    "local_fpir",
    "local_fpir_low",
    "local_fpir_high",
    "local_expected",
    "local_expected_low",
    "local_expected_high",
    "local_low",
    "local_high",
)


def percent(value: float | None) -> str:
    if value is None:
        return "—"
    value *= 100
    return f"{value:.2f}%" if 0 < value < 1 else f"{value:.1f}%"


def _recorded(sex: str, age_band: str, ethnicity: str) -> dict[str, str]:
    values = {"sex": sex, "age_band": age_band, "ethnicity": ethnicity}
    return {name: value for name, value in values.items() if value}


def _group_matches(group: AuditGroup, person: dict[str, str]) -> bool:
    """True when every attribute the group is defined by is one the person has, with the same value."""
    return group_matches(group.attributes, person)


def _figure(
    group: AuditGroup,
    rate: AuditRate | None,
    threshold: float,
    distance: float,
    composition: GalleryComposition | None = None,
) -> GroupFigure:
    impostors = group.impostor_array
    people = group.impostor_people_array
    if rate is not None:
        fmr, low, high, ratio = rate.fmr, rate.fmr_low, rate.fmr_high, rate.fmr_ratio_to_best
    else:
        # The threshold changed since the run: read the rate from the stored distances.
        if people is not None:
            measured = fmr_at(impostors, people, threshold)
            fmr, low, high = measured.rate, measured.low, measured.high
        else:
            count, pairs, _ = local_rate(impostors, threshold)
            fmr = count / pairs if pairs else None
            low, high = wilson_interval(count, pairs) if pairs else (None, None)
        ratio = None
    count, pairs, per_1000 = local_rate(impostors, distance)
    extra: dict[str, Any] = {}
    if people is not None and pairs:
        size = composition.size_for(group.attributes) if composition is not None else 0
        at_threshold = one_to_many(impostors, people, threshold, size)
        at_distance = one_to_many(impostors, people, distance, size)
        extra.update(local_low=at_distance.rate.low, local_high=at_distance.rate.high)
        if composition is not None:
            extra.update(
                gallery_size=size,
                fpir=at_threshold.fpir,
                fpir_low=at_threshold.fpir_low,
                fpir_high=at_threshold.fpir_high,
                expected=at_threshold.expected,
                expected_low=at_threshold.expected_low,
                expected_high=at_threshold.expected_high,
                local_fpir=at_distance.fpir,
                local_fpir_low=at_distance.fpir_low,
                local_fpir_high=at_distance.fpir_high,
                local_expected=at_distance.expected,
                local_expected_low=at_distance.expected_low,
                local_expected_high=at_distance.expected_high,
            )
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
        **extra,
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
    composition: GalleryComposition | None = None

    @classmethod
    def load(cls, organisation: Organisation) -> AuditContext:
        validity = audit_validity(organisation)
        if not validity.valid:
            return cls(validity)
        run = validity.run
        groups = list(run.groups.exclude(key="all"))
        rates = {(r.group_id, round(r.threshold, 6)): r for r in AuditRate.objects.filter(group__run=run)}
        return cls(validity, groups, rates, gallery_composition(organisation))


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
    composition = context.composition or gallery_composition(organisation)
    panel.gallery_total = composition.total
    panel.interval_method = run.interval_method
    figures = {g.key: _figure(g, rates.get(g.id), threshold, candidate.distance, composition) for g in groups}
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
            opening = (
                f"This involves a child under 10. In this audit, {100 * young.fmr:.0f}% of pairs of different "
                f"children aged 0–9 (95% CI {100 * young.fmr_low:.0f}–{100 * young.fmr_high:.0f}%, "
                f"{young.identities} children) were within the threshold of {threshold:.2f}"
            )
            closing = (
                "At these ages the matcher cannot reliably tell different children apart: treat this candidate "
                "as very weak evidence."
            )
            panel.child_warning = (
                f"{opening} ({young.local_sentence} were at least as close as this candidate). {closing}"
            )
            panel.child_warning_hidden = f"{opening}. {closing}"
        else:
            panel.child_warning = (
                "This involves a child under 10. The audit has no measurement for ages 0–9, and face matching is "
                "known to confuse young children with each other far more often than adults."
            )
    panel.severity = "elevated" if panel.reasons else "standard"
    _headlines(panel, figures)
    return panel


def _describe(key: str) -> str:
    """'race=Asian & sex=M' -> 'race Asian, sex M': plain enough for a sentence, exact enough to look up."""
    return ", ".join(part.replace("=", " ") for part in key.split(" & "))


def _headlines(panel: BiasPanel, figures: dict[str, GroupFigure]) -> None:
    """One sentence: the largest measured 1:N risk among the groups involved, against the best-measured group."""
    involved = [f for f in panel.involved if f.expected is not None]
    if not involved:
        return
    measured = [f for f in involved if not f.insufficient] or involved
    comparison = figures.get(panel.best_group)
    panel.comparison_group = comparison.key if comparison else ""
    caveat = "" if not measured[0].insufficient else " (insufficient data)"
    local = max(measured, key=lambda f: (f.local_expected or 0, f.local_per_1000 or 0))
    if local.local_expected is not None:
        text = (
            f"A stranger in group {_describe(local.key)}{caveat} would have about {local.local_expected_text} "
            f"subjects in this gallery at least this close ({local.gallery_size:,} of its {panel.gallery_total:,} "
            f"subjects compared; audit of {local.identities} people)"
        )
        if comparison is not None and comparison.key != local.key and comparison.local_expected is not None:
            text += f"; for {_describe(comparison.key)}, {comparison.local_expected_text}"
        panel.headline = text + "."
    # While scores are hidden the comparison must not depend on the distance: the lowest FPIR at the threshold.
    at_threshold = [f for f in figures.values() if not f.insufficient and f.fpir is not None]
    comparison = min(at_threshold, key=lambda f: (f.fpir, f.expected or 0), default=None)
    panel.best_group_hidden = comparison.key if comparison else ""
    worst = max(measured, key=lambda f: (f.fpir or 0, f.expected or 0))
    text = (
        f"At the threshold of {panel.threshold:.2f}, a search for a stranger in group {_describe(worst.key)}{caveat} "
        f"returns a candidate in {worst.fpir_text} of searches, with about {worst.expected_text} subjects within "
        f"the threshold (audit of {worst.identities} people)"
    )
    if comparison is not None and comparison.key != worst.key and comparison.fpir is not None:
        text += f"; for {_describe(comparison.key)}, {comparison.fpir_text}"
    panel.headline_hidden = text + "."
    if not panel.headline:
        panel.headline = panel.headline_hidden


def panel_for(candidate: Candidate, *, hide_scores: bool) -> BiasPanel:
    """The live panel as this viewer may see it: while scores are hidden, only group-level rates at the threshold."""
    panel = bias_panel(candidate)
    return panel.hidden() if hide_scores else panel


@dataclass
class SeenPanel:
    """What one reviewer saw when deciding, and whether the current audit would now say something else."""

    reviewer: str
    decided_at: Any
    panel: BiasPanel
    differs: str


def snapshot_difference(snapshot: dict[str, Any], current: BiasPanel) -> str:
    """Empty when the current audit shows the same run and figures as the snapshot; else what changed."""
    if not snapshot:
        return "No panel was stored with this decision."
    if snapshot.get("run_id") != current.run_id:
        then = f"audit {snapshot.get('run_id')}" if snapshot.get("run_id") else "no valid audit"
        now = f"audit {current.run_id}" if current.run_id else "no valid audit"
        return f"The reviewer saw {then}; the current panel uses {now}. The figures shown are those the reviewer saw."
    then = {g["key"]: (g.get("fmr"), g.get("expected")) for g in snapshot.get("involved", [])}
    now = {g.key: (g.fmr, g.expected) for g in current.involved}
    if then != now:
        return (
            "The gallery or audit figures have changed since this decision; the figures shown are those the "
            "reviewer saw."
        )
    return ""


def _as_seen(snapshot: dict[str, Any], hide_scores: bool) -> BiasPanel:
    panel = BiasPanel.from_snapshot(snapshot) if snapshot else BiasPanel(False, "Not recorded.", 0.0, 0.0)
    return panel.hidden() if hide_scores else panel


def panels_seen(candidate: Candidate, *, hide_scores: bool = False) -> list[SeenPanel]:
    """Each decision's stored panel, oldest first, with a note where the current audit differs.

    A viewer from whom the policy still hides scores sees them without the distance, as on an open candidate.
    """
    current = bias_panel(candidate)
    seen = []
    for decision in candidate.decisions.select_related("reviewer").order_by("created_at"):
        snapshot = decision.bias_snapshot or {}
        seen.append(
            SeenPanel(
                reviewer=decision.reviewer.get_username(),
                decided_at=decision.created_at,
                panel=_as_seen(snapshot, hide_scores),
                differs=snapshot_difference(snapshot, current),
            )
        )
    return seen


def bias_panel_html(candidate: Candidate, *, hide_scores: bool) -> str:
    """The panel for the reviewer's page: the snapshots reviewers saw once a candidate is closed, else the live one."""
    from django.template.loader import render_to_string

    if not candidate.is_open and candidate.decisions.exists():
        seen = panels_seen(candidate, hide_scores=hide_scores)
        return render_to_string("reviews/bias_seen.html", {"seen_panels": seen})
    return render_to_string("reviews/bias_panel.html", {"panel": panel_for(candidate, hide_scores=hide_scores)})
