"""What reviewers found, beside what the audit predicted for the same searches.

Reviewers reject candidates: that is the portal's own evidence of how often a search returns a stranger. For
each month and each group of the person sought (as the case records them), this reads the searches whose
every candidate has been decided (not those whose probe was judged unsuitable for comparison), and counts:

* the candidates reviewers confirmed and rejected (the share rejected, with a Wilson interval);
* the searches that returned at least one candidate reviewers rejected: a stranger at or under the threshold.
  Whether or not the person sought is enrolled, that happens with probability FPIR (the rest of the gallery
  are strangers to them), so the audit's prediction for the same searches is the mean FPIR of the group at
  each search's threshold, for this gallery as it is now.

A group-month where the two intervals do not overlap is flagged: the audit and the reviewers disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

import numpy as np
from django.db.models import Count, Q
from django.db.models.functions import TruncMonth

from matching.accuracy.gallery_risk import ThresholdConsequences, describe, groups_of_person, record_profile
from matching.accuracy.rates import wilson_interval
from matching.models import Candidate, Outcome, Search
from portal.models import Organisation

ALL_SEARCHES = "all searches"


@dataclass
class Finding:
    month: date
    group: str
    words: str
    searches: int  # searches whose every candidate is decided
    confirmed: int
    rejected: int
    with_stranger: int  # searches with at least one rejected candidate
    predicted: float | None
    predicted_low: float | None
    predicted_high: float | None

    @property
    def rejected_share(self) -> tuple[float | None, float, float]:
        decided = self.confirmed + self.rejected
        low, high = wilson_interval(self.rejected, decided)
        return (self.rejected / decided if decided else None, low, high)

    @property
    def observed(self) -> tuple[float | None, float, float]:
        low, high = wilson_interval(self.with_stranger, self.searches)
        return (self.with_stranger / self.searches if self.searches else None, low, high)

    @property
    def disagreement(self) -> str:
        """'more' or 'fewer' when reviewers found strangers more or less often than the audit's interval allows."""
        observed, low, high = self.observed
        if observed is None or self.predicted is None:
            return ""
        if low > self.predicted_high:
            return "more"
        if high < self.predicted_low:
            return "fewer"
        return ""


def review_findings(organisation: Organisation, consequences: ThresholdConsequences) -> list[Finding]:
    """Per month and group of the person sought: decided candidates, and searches that returned a stranger."""
    still_open = Candidate.open_q("candidates__")
    searches = (
        Search.objects.filter(organisation=organisation)
        .annotate(
            month=TruncMonth("created_at"),
            candidates_open=Count("candidates", filter=still_open),
            confirmed=Count("candidates", filter=Q(candidates__outcome=Outcome.CONFIRMED)),
            rejected=Count("candidates", filter=Q(candidates__outcome=Outcome.REJECTED)),
            unsuitable=Count("candidates", filter=Q(candidates__outcome=Outcome.UNSUITABLE)),
        )
        # A search whose probe was judged unsuitable for comparison was never judged at all.
        .filter(candidates_open=0, unsuitable=0)
        .values(
            "month",
            "threshold",
            "confirmed",
            "rejected",
            "face__photo__case__probe_sex",
            "face__photo__case__probe_age_band",
            "face__photo__case__probe_ethnicity",
        )
        .order_by()
    )
    model = consequences.model
    single = [(g, m) for g, m in consequences.groups if len(g.attributes) == 1]
    rows: dict[tuple[date, str], dict] = defaultdict(
        lambda: {"searches": 0, "confirmed": 0, "rejected": 0, "with_stranger": 0, "thresholds": []}
    )
    words: dict[str, str] = {ALL_SEARCHES: "all searches"}
    members: dict[str, np.ndarray] = {}
    if model is not None:
        members[ALL_SEARCHES] = np.arange(model.population.size)
    for search in searches:
        probe = record_profile(
            sex=search["face__photo__case__probe_sex"],
            age_band=search["face__photo__case__probe_age_band"],
            ethnicity=search["face__photo__case__probe_ethnicity"],
        )
        keys = [ALL_SEARCHES]
        for group, group_members in groups_of_person(single, probe):
            keys.append(group.key)
            words[group.key] = describe(group.attributes, plural=True)
            members[group.key] = group_members
        month = search["month"].date() if hasattr(search["month"], "date") else search["month"]
        for key in keys:
            row = rows[(month, key)]
            row["searches"] += 1
            row["confirmed"] += search["confirmed"]
            row["rejected"] += search["rejected"]
            row["with_stranger"] += bool(search["rejected"])
            row["thresholds"].append(search["threshold"])
    findings = []
    ordered = sorted(rows.items(), key=lambda item: (item[0][0], item[0][1] != ALL_SEARCHES, item[0][1]))
    for (month, key), row in ordered:
        predicted = low = high = None
        if model is not None and key in members:
            figures = [model.group(members[key], t) for t in row["thresholds"]]
            if all(f.fpir is not None and not f.insufficient for f in figures):
                predicted = float(np.mean([f.fpir for f in figures]))
                low = float(np.mean([f.fpir_low for f in figures]))
                high = float(np.mean([f.fpir_high for f in figures]))
        findings.append(
            Finding(
                month=month,
                group=key,
                words=words.get(key, key),
                searches=row["searches"],
                confirmed=row["confirmed"],
                rejected=row["rejected"],
                with_stranger=row["with_stranger"],
                predicted=predicted,
                predicted_low=low,
                predicted_high=high,
            )
        )
    return findings
