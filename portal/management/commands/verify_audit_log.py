from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from portal.audit import audit_chain_verify


class Command(BaseCommand):
    help = "Check the audit log's hash chain and report the first broken link."

    def handle(self, *args, **options) -> None:
        checked, broken = audit_chain_verify()
        if broken is None:
            self.stdout.write(f"Audit log intact: {checked} events, every link verified.")
            return
        where = f"event {broken.seq} (id {broken.event_id})" if broken.seq is not None else "the chain head"
        raise CommandError(f"Audit log broken at {where}: {broken.problem}. {checked} events before it verified.")
