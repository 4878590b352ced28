from __future__ import annotations

import json
import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from matching.accuracy import evaluation, gallery_risk
from matching.models import AuditDataset
from portal.models import Organisation


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


class Command(BaseCommand):
    help = "Measure per-group false match and false non-match rates on an imported evaluation set."

    def add_arguments(self, parser) -> None:
        parser.add_argument("dataset_id", type=int)
        parser.add_argument("--thresholds", help="Comma-separated grid, e.g. 0.3,0.35,...,0.7")
        parser.add_argument(
            "--organisation", help="Slug; default: the set's owner, or every organisation for a shared set."
        )
        parser.add_argument("--json", type=Path, help="Write the stored results here as JSON.")
        parser.add_argument("--min-identities", type=int)
        parser.add_argument("--min-effective-pairs", type=int)

    def handle(self, *args, dataset_id: int, **options) -> None:
        dataset = AuditDataset.objects.filter(pk=dataset_id).first()
        if dataset is None:
            raise CommandError(f"No evaluation set {dataset_id}.")
        try:
            thresholds = [float(t) for t in options["thresholds"].split(",")] if options.get("thresholds") else None
        except ValueError:
            raise CommandError("--thresholds takes numbers separated by commas.") from None
        if thresholds and not all(0 < t < 2 for t in thresholds):
            raise CommandError("Thresholds must lie between 0 and 2.")
        run_options = {
            "thresholds": thresholds,
            "min_identities": options.get("min_identities"),
            "min_effective_pairs": options.get("min_effective_pairs"),
        }
        try:
            if options.get("organisation"):
                organisation = Organisation.objects.filter(slug=options["organisation"]).first()
                if organisation is None:
                    raise CommandError(f"No organisation with slug {options['organisation']}.")
                runs = [
                    evaluation.audit_run_create(
                        dataset=dataset, organisation=organisation, acting_user=None, **run_options
                    )
                ]
            else:
                runs = evaluation.audit_run_for_each_organisation(dataset=dataset, acting_user=None, **run_options)
        except evaluation.AuditError as error:
            raise CommandError(str(error)) from None

        documents = [evaluation.audit_run_document(run) for run in runs]
        for run, document in zip(runs, documents, strict=True):
            if run.organisation is not None:
                document["one_to_many"] = gallery_risk.one_to_many_document(run.organisation, run=run)
        for document in documents:
            self._print(document)
        if options.get("json"):
            payload = documents[0] if len(documents) == 1 else {"runs": documents}
            # 0600, like every file the portal writes: the figures describe the organisation's gallery.
            descriptor = os.open(options["json"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(json.dumps(payload, indent=2, default=float))
            options["json"].chmod(0o600)
            self.stdout.write(f"Wrote {options['json']}")

    def _print(self, document: dict) -> None:
        run = document["run"]
        t = run["threshold_in_use"]
        self.stdout.write(
            f"\nAudit run {run['id']} for {run['organisation'] or 'no organisation'}: {run['photos']} photos, "
            f"{run['engine_version']}, threshold in use {t}"
        )
        self.stdout.write(
            f"{'group':44} {'ids':>5} {'impostor':>9} {'FMR@' + str(t):>9} {'95% CI':>17} {'ratio':>7} {'FNMR':>7}"
        )
        for group in document["groups"]:
            rate = next((r for r in group["rates"] if abs(r["threshold"] - t) < 1e-9), None)
            if rate is None:
                continue
            low, high = rate["fmr_ci95"]
            ci = f"{_percent(low)}–{_percent(high)}" if low is not None else "—"
            ratio = f"{rate['fmr_ratio_to_best']:.1f}x" if rate["fmr_ratio_to_best"] is not None else "—"
            flag = "  insufficient data" if group["insufficient"] else ""
            self.stdout.write(
                f"{group['key'][:44]:44} {group['identities']:5} {group['impostor_pairs']:9} "
                f"{_percent(rate['fmr']):>9} {ci:>17} {ratio:>7} {_percent(rate['fnmr']):>7}{flag}"
            )
