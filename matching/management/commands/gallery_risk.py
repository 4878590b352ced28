from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from matching.accuracy.gallery_risk import (
    EVERYONE,
    in_100_interval,
    one_to_many_document,
    operating_point_for,
    threshold_consequences,
)
from portal.models import Organisation


class Command(BaseCommand):
    help = (
        "Print what a search of an organisation's gallery means (1:N): per group, out of 100 searches for a "
        "stranger how many return someone, and out of 100 searches for someone enrolled how many miss them; and "
        "the threshold the portal proposes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organisation", required=True, help="the organisation's slug")
        parser.add_argument("--thresholds", default="0.4,0.45,0.5,0.55,0.6")
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="print the audit JSON's one_to_many section instead"
        )

    def handle(self, *args, organisation: str, thresholds: str, as_json: bool, **options) -> None:
        org = Organisation.objects.filter(slug=organisation).first()
        if org is None:
            raise CommandError(f"No organisation {organisation!r}.")
        try:
            grid = [float(t) for t in thresholds.split(",") if t.strip()]
        except ValueError as error:
            raise CommandError(f"Thresholds must be numbers: {error}") from None
        if as_json:
            self.stdout.write(_dumps(one_to_many_document(org, grid)))
            return
        result = threshold_consequences(org)
        if result.model is None:
            raise CommandError(result.unavailable)
        point = operating_point_for(result)
        self.stdout.write(
            f"Gallery of {result.composition.total} searchable subjects; audit {result.run.pk} "
            f"({result.run.dataset.name}); threshold in use {org.distance_threshold}; ceiling {org.fpir_ceiling}."
        )
        if point.proposed is None:
            self.stdout.write("Proposed: none; no threshold keeps every measured group under the ceiling.")
        else:
            everyone = point.everyone
            self.stdout.write(
                f"Proposed: {point.proposed:.2f}. A stranger of any group: "
                f"{in_100_interval(everyone.fpir, everyone.fpir_low, everyone.fpir_high)} in 100 searches return "
                f"someone; {in_100_interval(everyone.fnir, everyone.fnir_low, everyone.fnir_high)} in 100 searches "
                f"for someone enrolled miss them." + (f" Held by {point.binding.key}." if point.binding else "")
            )
        for weak in point.weak:
            self.stdout.write(f"Weak evidence: {weak.sentence}")
        header = f"{'group':44} {'people':>6}  " + "  ".join(f"{t:>21}" for t in grid)
        self.stdout.write(
            "\nOut of 100 searches for a stranger, how many return someone / for someone enrolled, how many miss them:"
        )
        self.stdout.write(header)
        members = [(EVERYONE, result.model.population.size, None)]
        members += [(g.key, m.size, m) for g, m in result.groups]
        for key, people, indices in members:
            cells = []
            for threshold in grid:
                figure = (
                    result.everyone_at(threshold).figure if indices is None else result.model.group(indices, threshold)
                )
                if figure.insufficient:
                    cells.append(f"{'not measured':>21}")
                    continue
                missed = "—" if figure.fnir is None else f"{round(100 * figure.fnir)}"
                cells.append(f"{in_100_interval(figure.fpir, figure.fpir_low, figure.fpir_high):>15} /{missed:>4}")
            self.stdout.write(f"{key:44} {people:6}  " + "  ".join(cells))


def _dumps(document: dict) -> str:
    return json.dumps(document, indent=2, default=float)
