from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from matching.models import AuditSample, Face
from matching.sealing import encoding_reseal


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored encoding with the first key in FACE_ENCODING_KEYS. Put the new key first, "
        "keep the old one after it, run this, then remove the old key."
    )

    def handle(self, *args, **options) -> None:
        for model in (Face, AuditSample):
            done = 0
            ids = list(model.objects.exclude(encoding=b"").values_list("pk", flat=True))
            for start in range(0, len(ids), 500):
                with transaction.atomic():
                    for row in model.objects.select_for_update().filter(pk__in=ids[start : start + 500]):
                        model.objects.filter(pk=row.pk).update(encoding=encoding_reseal(row.encoding))
                        done += 1
            self.stdout.write(f"{model._meta.verbose_name_plural}: {done} encodings re-encrypted")
