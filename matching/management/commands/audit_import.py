from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from matching.accuracy import evaluation
from portal.models import Organisation


class Command(BaseCommand):
    help = "Import a labelled evaluation set (CSV manifest with file, identity and demographic columns) from a folder."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--manifest", required=True, type=Path)
        parser.add_argument("--images", required=True, type=Path, help="Folder the manifest's paths are relative to.")
        parser.add_argument("--organisation", help="Slug; omit to share the set with every organisation.")
        parser.add_argument(
            "--attributes", help="Comma-separated demographic columns (default: every column but bookkeeping ones)."
        )

    def handle(self, *args, name: str, manifest: Path, images: Path, organisation: str | None, **options) -> None:
        if not manifest.is_file():
            raise CommandError(f"No manifest at {manifest}.")
        if not images.is_dir():
            raise CommandError(f"No images folder at {images}.")
        owner = None
        if organisation:
            owner = Organisation.objects.filter(slug=organisation).first()
            if owner is None:
                raise CommandError(f"No organisation with slug {organisation}.")
        attributes = [a.strip() for a in options["attributes"].split(",")] if options.get("attributes") else None
        try:
            dataset = evaluation.audit_dataset_create(
                name=name, organisation=owner, manifest=manifest.read_bytes(), acting_user=None, attributes=attributes
            )
        except evaluation.AuditError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Dataset {dataset.pk}: {dataset.rows_total} rows; attributes {', '.join(dataset.attributes)}"
        )

        def progress(current) -> None:
            self.stdout.write(f"  {current.rows_done}/{current.rows_total}", ending="\r")

        dataset = evaluation.audit_dataset_import(dataset_id=dataset.pk, images_dir=images, progress=progress)
        self.stdout.write(
            f"Dataset {dataset.pk}: {dataset.accepted_count} photos accepted, {dataset.refused_count} refused."
        )
        reasons: dict[str, int] = {}
        for row in dataset.report:
            if row["status"] == "refused":
                reasons[row["detail"]] = reasons.get(row["detail"], 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:10]:
            self.stdout.write(f"  refused {count:4}: {reason}")
        self.stdout.write(str(dataset.pk))
