from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from portal.audit import audit_chain_verify, checkpoints_read, checkpoints_stored


class Command(BaseCommand):
    help = (
        "Check every chain of the activity log (each row's HMAC, every link, every seal of views) and, with "
        "checkpoints, that no chain was cut short or rewritten since they were written. Reports every break."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--checkpoints",
            metavar="PATH",
            help="a checkpoint file, or a folder of them (copied from AUDIT_CHECKPOINT_DIR or the bucket)",
        )
        parser.add_argument(
            "--stored-checkpoints",
            action="store_true",
            help="read the checkpoints from the configured checkpoint storage (folder or S3 bucket)",
        )

    def handle(self, *args, **options) -> None:
        checkpoints = []
        try:
            if options["checkpoints"]:
                checkpoints += checkpoints_read(options["checkpoints"])
            if options["stored_checkpoints"]:
                checkpoints += checkpoints_stored()
        except OSError as error:
            raise CommandError(f"Cannot read the checkpoints: {error}") from None
        result = audit_chain_verify(checkpoints)
        summary = (
            f"{result.events} events in {result.chains} chains, {result.views} views "
            f"({result.unsealed_views} not sealed yet), {result.checkpoints} checkpoints"
        )
        if result.intact:
            self.stdout.write(f"Activity log intact: {summary}, every HMAC and link verified.")
            if not checkpoints:
                self.stdout.write("Without --checkpoints, events deleted from the end of a chain cannot be detected.")
            return
        for broken in result.breaks:
            self.stderr.write(f"Broken at {broken.where()}: {broken.problem}.")
        raise CommandError(f"Activity log broken in {len(result.breaks)} place(s); checked {summary}.")
