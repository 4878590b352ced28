from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from matching.services import faces_review_images_backfill


class Command(BaseCommand):
    help = (
        "Make the stored aligned image and thumbnail of faces detected before the worker made them, so that the "
        "comparison page and queue no longer make them from the photo. Safe to run twice, and while the portal runs."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--limit", type=int, help="At most this many faces in this run.")

    def handle(self, *args, limit: int | None = None, **options) -> None:
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1 (got {limit}); leave it out to make every face's images.")
        made = faces_review_images_backfill(limit=limit)
        self.stdout.write(f"Made the aligned image and thumbnail of {made} face(s).")
