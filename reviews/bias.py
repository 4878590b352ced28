"""The bias panel: what the organisation's audit says a candidate like this one is worth, in 1:N terms.

A reviewer should grasp it in ten seconds. One headline sentence says how often a search for a stranger like
this probe returns someone at least as close as this candidate, in this gallery, as a natural frequency; the
miss rate sits beside it; a group for which this engine cannot keep strangers out without missing most true
matches is named, and its candidates are called weak evidence. The tables and the method stay, collapsed.

Everything is read from the rows of the organisation's latest valid audit run and the gallery's current
counts (``matching.accuracy.gallery_risk``); nothing is recomputed from photos.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from matching.accuracy.evaluation import AuditValidity, audit_validity
from matching.accuracy.gallery_risk import (
    EVERYONE,
    OperatingPoint,
    ThresholdConsequences,
    count_text,
    describe,
    groups_of_person,
    in_100,
    in_100_interval,
    operating_point_for,
    record_profile,
    threshold_consequences,
)
from matching.accuracy.one_to_many import OneToMany
from matching.accuracy.rates import age_band_lower
from matching.models import Candidate
from portal.models import Organisation

# The headline's share of strangers' searches that makes a candidate's risk high, or elevated.
HIGH_FPIR, ELEVATED_FPIR = 0.5, 0.2
LABELS = {
    "weak": "Weak evidence",
    "high": "High risk of a false match",
    "elevated": "Elevated risk of a false match",
    "standard": "Standard caution",
    "unmeasured": "Not measured",
    "unknown": "No valid audit",
}


@dataclass(frozen=True)
class PanelRow:
    """One stranger group in the panel: its 1:N figures at the threshold and at this candidate's distance."""

    key: str
    words: str
    at_threshold: OneToMany
    at_distance: OneToMany | None = None
    ratio: float | None = None  # the headline figure's share over that of a stranger of any group

    @property
    def shown(self) -> OneToMany:
        return self.at_distance or self.at_threshold

    @property
    def threshold_text(self) -> str:
        return _figure_text(self.at_threshold)

    @property
    def distance_text(self) -> str:
        return _figure_text(self.at_distance) if self.at_distance else "—"

    @property
    def expected_text(self) -> str:
        figure = self.shown
        if figure.expected is None:
            return "—"
        return f"{count_text(figure.expected)} ({count_text(figure.expected_low)}–{count_text(figure.expected_high)})"

    @property
    def ratio_text(self) -> str:
        return "—" if self.ratio is None else f"{self.ratio:.1f}×"


def _figure_text(figure: OneToMany) -> str:
    if figure.fpir is None:
        return "not measured"
    text = in_100_interval(figure.fpir, figure.fpir_low, figure.fpir_high)
    return f"not measured ({text})" if figure.insufficient else text


@dataclass
class BiasPanel:
    valid: bool
    reason: str
    distance: float | None
    threshold: float
    run_id: int | None = None
    run_label: str = ""
    engine_version: str = ""
    interval_method: str = ""
    # "weak" (a group this engine cannot keep strangers out of), "high", "elevated", "standard", "unmeasured" or
    # "unknown" (no valid audit)
    severity: str = "unknown"
    headline: str = ""  # one sentence, at this candidate's distance
    headline_hidden: str = ""  # the same at the threshold, for while scores are hidden
    miss: str = ""  # how many searches for someone enrolled miss them, at the threshold
    weak: list[str] = field(default_factory=list)  # why a candidate of this group is weak evidence, when it is
    child_warning: str = ""
    reasons: list[str] = field(default_factory=list)
    probe_words: str = ""
    probe_source: str = ""
    subject_words: str = ""
    gallery_total: int | None = None
    people: dict[str, dict[str, str]] = field(default_factory=dict)
    rows: list[PanelRow] = field(default_factory=list)
    severity_hidden: str = ""
    scores_hidden: bool = False
    unavailable: str = ""

    @property
    def label(self) -> str:
        return LABELS.get(self.severity, self.severity)

    def snapshot(self) -> dict[str, Any]:
        """What the reviewer was shown, stored with the decision so later audits cannot rewrite it."""
        return asdict(self)

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> BiasPanel:
        """A stored snapshot drawn again as it was shown; snapshots from before a field existed lack it."""
        names = {f.name for f in fields(cls)}
        figure_names = {f.name for f in fields(OneToMany)}

        def figure(item: dict[str, Any] | None) -> OneToMany | None:
            if not item:
                return None
            values = {k: v for k, v in item.items() if k in figure_names}
            values["reasons"] = tuple(values.get("reasons", ()))
            return OneToMany(**values)

        panel = cls(**{k: v for k, v in data.items() if k in names and k != "rows"})
        panel.rows = [
            PanelRow(
                key=row["key"],
                words=row.get("words", row["key"]),
                at_threshold=figure(row["at_threshold"]),
                at_distance=figure(row.get("at_distance")),
                ratio=row.get("ratio"),
            )
            for row in data.get("rows", [])
        ]
        return panel

    def hidden(self) -> BiasPanel:
        """The panel while scores are hidden: the figures at the threshold only, nothing at the distance."""
        return replace(
            self,
            distance=None,
            scores_hidden=True,
            headline=self.headline_hidden,
            severity=self.severity_hidden or self.severity,
            rows=[
                replace(row, at_distance=None, ratio=_ratio(row.at_threshold, self._everyone(True)))
                for row in self.rows
            ],
        )

    def _everyone(self, at_threshold: bool) -> OneToMany | None:
        row = next((r for r in self.rows if r.key == EVERYONE), None)
        if row is None:
            return None
        return row.at_threshold if at_threshold else row.shown


def _ratio(figure: OneToMany, everyone: OneToMany | None) -> float | None:
    if everyone is None or not everyone.fpir or figure.fpir is None or figure.insufficient:
        return None
    return figure.fpir / everyone.fpir


@dataclass
class AuditContext:
    """What one organisation's panels read, loaded once for many candidates: the valid audit, the gallery model."""

    validity: AuditValidity
    consequences: ThresholdConsequences | None = None
    point: OperatingPoint | None = None

    @classmethod
    def load(cls, organisation: Organisation) -> AuditContext:
        validity = audit_validity(organisation)
        if not validity.valid:
            return cls(validity)
        consequences = threshold_consequences(organisation, run=validity.run)
        return cls(validity, consequences, operating_point_for(consequences))


def _probe(candidate: Candidate) -> tuple[dict[str, str], dict[str, str], str]:
    """(probe as recorded, the profile the panel uses, where it came from): unrecorded parts from the subject."""
    case, subject = candidate.case, candidate.subject
    recorded = record_profile(sex=case.probe_sex, age_band=case.probe_age_band, ethnicity=case.probe_ethnicity)
    theirs = record_profile(sex=subject.sex, age_band=subject.age_band, ethnicity=subject.ethnicity)
    merged = {**theirs, **recorded}
    if recorded and merged == recorded:
        source = "as the case records them"
    elif recorded:
        source = "as the case records them, completed from the subject's record"
    elif theirs:
        source = "from the subject's record: the case records nothing of them"
    else:
        source = "nothing is recorded of the person sought or of the subject"
    return recorded, merged, source


def _choose(rows: list[PanelRow]) -> PanelRow | None:
    """The probe's own group for the headline: of the groups it falls in that the audit measures, the one with the
    largest figure (a reviewer is warned of the largest measured risk), the more specific where two are equal."""
    measured = [r for r in rows if r.key != EVERYONE and r.shown.measured]
    return max(measured, key=lambda r: (r.shown.fpir, r.key.count("&"), r.key), default=None)


def bias_panel(candidate: Candidate, context: AuditContext | None = None) -> BiasPanel:
    subject, case = candidate.subject, candidate.case
    threshold = candidate.search.threshold
    context = context or AuditContext.load(case.organisation)
    recorded, probe, source = _probe(candidate)
    subject_record = record_profile(sex=subject.sex, age_band=subject.age_band, ethnicity=subject.ethnicity)
    validity = context.validity
    panel = BiasPanel(valid=validity.valid, reason=validity.reason, distance=candidate.distance, threshold=threshold)
    panel.people = {"subject": subject_record, "probe": recorded}
    panel.subject_words = describe(subject_record) if subject_record else "nothing recorded"
    panel.probe_words, panel.probe_source = (describe(probe) if probe else "anyone"), source
    _children(panel, probe, subject_record)
    if not validity.valid:
        panel.severity = panel.severity_hidden = "unknown"
        return panel
    run = validity.run
    panel.run_id, panel.engine_version, panel.interval_method = run.pk, run.engine_version, run.interval_method
    panel.run_label = f"audit {run.pk} of “{run.dataset.name}”, {run.photos} photos, {run.completed_at:%Y-%m-%d}"
    consequences = context.consequences
    panel.gallery_total = consequences.composition.total if consequences else None
    model = consequences.model if consequences else None
    if model is None:
        panel.unavailable = consequences.unavailable if consequences else "No 1:N figures for this audit."
        panel.severity = panel.severity_hidden = "unmeasured"
        panel.headline = panel.headline_hidden = f"Not measured: {panel.unavailable}"
        return panel

    def row(key: str, attributes: dict[str, str], members: np.ndarray) -> PanelRow:
        return PanelRow(
            key=key,
            words=describe(attributes) if attributes else "a stranger of any group",
            at_threshold=model.group(members, threshold),
            at_distance=model.group(members, candidate.distance),
        )

    everyone = row(EVERYONE, {}, np.arange(model.population.size))
    involved = [row(g.key, g.attributes, m) for g, m in groups_of_person(consequences.groups, probe)]
    rows = [*sorted(involved, key=lambda r: (r.key.count("&"), r.key)), everyone]
    panel.rows = [replace(r, ratio=_ratio(r.shown, everyone.shown)) for r in rows]
    chosen = _choose(panel.rows)
    _headlines(panel, chosen, everyone, probe)
    weak = {w.key: w for w in (context.point.weak if context.point else [])}
    weak_groups = [weak[r.key] for r in involved if r.key in weak]
    if weak_groups:
        panel.weak = list(dict.fromkeys(w.sentence for w in weak_groups))
        panel.severity = panel.severity_hidden = "weak"
    return panel


def _severity(figure: OneToMany | None) -> str:
    if figure is None or not figure.measured:
        return "unmeasured"
    if figure.fpir >= HIGH_FPIR:
        return "high"
    return "elevated" if figure.fpir >= ELEVATED_FPIR else "standard"


def _headlines(panel: BiasPanel, chosen: PanelRow | None, everyone: PanelRow, probe: dict[str, str]) -> None:
    """The one sentence, at the distance and at the threshold, with the miss rate beside it."""
    size = f"In this gallery of {panel.gallery_total:,} {'person' if panel.gallery_total == 1 else 'people'}"
    who = f"a stranger like this probe ({panel.probe_words})" if probe else "a stranger"
    source = chosen or (everyone if everyone.shown.measured else None)
    if source is None:
        why = "; ".join(everyone.at_threshold.reasons) or "the audit cannot measure it"
        panel.headline = panel.headline_hidden = (
            f"Not measured: the audit cannot say how often a search for {who} returns someone this close ({why})."
        )
        panel.severity = panel.severity_hidden = "unmeasured"
        return
    if chosen is None:
        missing = _unmeasured_reason(panel.rows)
        who = "a stranger of any group" + (f" (not measured for {panel.probe_words}: {missing})" if probe else "")
    elif chosen.key != EVERYONE and chosen.words != panel.probe_words:
        who = f"a stranger like this probe ({chosen.words})"
    at_distance, at_threshold = source.at_distance, source.at_threshold
    panel.headline = (
        f"{size}, about {in_100(at_distance.fpir)} in 100 searches for {who} return someone at least this close "
        f"(95% CI {in_100(at_distance.fpir_low)}–{in_100(at_distance.fpir_high)})."
    )
    panel.headline_hidden = (
        f"{size}, about {in_100(at_threshold.fpir)} in 100 searches for {who} return a candidate at this "
        f"threshold ({panel.threshold:.2f}; 95% CI {in_100(at_threshold.fpir_low)}–{in_100(at_threshold.fpir_high)})."
    )
    panel.severity = "unmeasured" if chosen is None and probe else _severity(at_distance)
    panel.severity_hidden = "unmeasured" if chosen is None and probe else _severity(at_threshold)
    if at_threshold.fnir is not None:
        if at_threshold.fnir_from == "group":
            whose = f"measured on {at_threshold.fnir_people} people of this group with two photos"
        else:
            whose = f"measured on the audit's {at_threshold.fnir_people} people with two photos, none of this group"
        panel.miss = (
            f"About {in_100(at_threshold.fnir)} in 100 searches for someone who is in the gallery miss them at this "
            f"threshold (95% CI {in_100(at_threshold.fnir_low)}–{in_100(at_threshold.fnir_high)}; {whose})."
        )
    else:
        panel.miss = (
            "The audit has no two photos of one person: how many true matches this threshold misses is not measured."
        )


def _unmeasured_reason(rows: list[PanelRow]) -> str:
    specific = [r for r in rows if r.key != EVERYONE]
    if not specific:
        return "the audit has no group for it"
    narrowest = min(specific, key=lambda r: (r.key.count("&"), r.key))
    return "; ".join(narrowest.shown.reasons) or "too little evidence"


def _children(panel: BiasPanel, probe: dict[str, str], subject: dict[str, str]) -> None:
    ages = [
        ("probe", age_band_lower(probe.get("age_band", ""))),
        ("subject", age_band_lower(subject.get("age_band", ""))),
    ]
    under_18 = [role for role, lower in ages if lower is not None and lower < 18]
    if under_18:
        panel.reasons.append(f"The {' and the '.join(under_18)} {'is' if len(under_18) == 1 else 'are'} under 18.")
    if any(lower is not None and lower < 10 for _, lower in ages):
        panel.child_warning = (
            "This involves a child under 10. Face matching confuses young children with each other far more often "
            "than adults, and their faces change fast: the figures above are for children as the audit measured them."
        )


def panel_for(candidate: Candidate, *, hide_scores: bool) -> BiasPanel:
    """The live panel as this viewer may see it: while scores are hidden, only the figures at the threshold."""
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
    if snapshot.get("headline") != current.headline:
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
