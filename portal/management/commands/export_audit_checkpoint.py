from __future__ import annotations

from django.core.files.storage import FileSystemStorage
from django.core.management.base import BaseCommand, CommandError

from portal.audit import audit_checkpoint_export


class Command(BaseCommand):
    help = (
        "Seal pending views, then write a signed checkpoint of every activity-log chain's head to the checkpoint "
        "storage (AUDIT_CHECKPOINT_DIR, or the bucket), or to --to PATH. The beat does this every "
        "AUDIT_CHECKPOINT_SECONDS."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--to", metavar="PATH", help="a folder to write to instead of the configured storage")

    def handle(self, *args, **options) -> None:
        storage = FileSystemStorage(location=options["to"]) if options["to"] else None
        try:
            name = audit_checkpoint_export(storage=storage)
        except OSError as error:
            raise CommandError(f"Cannot write the checkpoint: {error}") from None
        self.stdout.write(f"Checkpoint written: {name}")
