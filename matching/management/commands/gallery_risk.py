from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from matching.accuracy.gallery_risk import share_text, threshold_consequences
from portal.models import Organisation


class Command(BaseCommand):
    help = "Print what a search of an organisation's gallery means for a stranger (FPIR, 1:N) at some thresholds."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organisation", required=True, help="the organisation's slug")
        parser.add_argument("--thresholds", default="0.4,0.5,0.6")

    def handle(self, *args, organisation: str, thresholds: str, **options) -> None:
        org = Organisation.objects.filter(slug=organisation).first()
        if org is None:
            raise CommandError(f"No organisation {organisation!r}.")
        try:
            grid = [float(t) for t in thresholds.split(",") if t.strip()]
        except ValueError as error:
            raise CommandError(f"Thresholds must be numbers: {error}") from None
        result = threshold_consequences(org, thresholds=grid)
        if result.run is None:
            raise CommandError("No audit to read: run audit_run first.")
        self.stdout.write(
            f"Gallery of {result.composition.total} searchable subjects; audit {result.run.pk} "
            f"({result.run.dataset.name}); {result.run.interval_method}."
        )
        self.stdout.write(
            f"{'threshold':9}  {'group':42} {'people':>6}  {'compared':>8}  {'FPIR (95% CI)':22} strangers this close"
        )
        for column, threshold in enumerate(result.thresholds):
            worst = result.worst[column]
            fnmr = result.fnmr[column]
            missed = (
                f"{share_text(fnmr[0])} ({share_text(fnmr[1])}–{share_text(fnmr[2])})" if fnmr[0] is not None else "—"
            )
            self.stdout.write(
                f"{threshold:<9}  worst: {worst.key if worst else '—'}; FNMR (true matches missed) {missed}"
            )
            for group, risks in sorted(result.groups, key=lambda item: -(item[1][column].fpir or 0)):
                if group.insufficient:
                    continue
                risk = risks[column]
                self.stdout.write(
                    f"{'':9}  {group.key:42} {group.identities:6}  {risk.gallery_size:8}  {risk.fpir_text:22} "
                    f"{risk.expected_text}"
                )
