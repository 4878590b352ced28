from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from portal.models import Membership, Organisation, Role

DEMO_USERS = [
    ("alice", Role.CASEWORKER),
    ("bob", Role.REVIEWER),
    ("dana", Role.ORG_ADMIN),
]
DEMO_PASSWORD = "demo-portal-2026"


class Command(BaseCommand):
    help = "Create a demo organisation with one user per role, and a superuser. Safe to run twice."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD)

    @transaction.atomic
    def handle(self, *args, password: str, **options) -> None:
        User = get_user_model()
        organisation, _ = Organisation.objects.get_or_create(
            slug="demo",
            defaults={
                "name": "Demo organisation",
                "permitted_purpose": "Demonstration with public test photos only",
                "legal_basis": "No personal data of real cases; demonstration",
                "use_case_approved_at": timezone.now(),
            },
        )
        lines = []
        for username, role in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.save(update_fields=["password"])
            Membership.objects.get_or_create(user=user, defaults={"organisation": organisation, "role": role})
            lines.append(f"  {username:8} {Role(role).label:20} password: {password if created else '(unchanged)'}")
        admin, created = User.objects.get_or_create(username="root", defaults={"is_superuser": True, "is_staff": True})
        if created:
            admin.set_password(password)
            admin.save(update_fields=["password"])
        lines.append(f"  {'root':8} {'Superuser':20} password: {password if created else '(unchanged)'}")
        self.stdout.write(f"Demo organisation “{organisation.name}”. Log in at /accounts/login/ as:")
        self.stdout.write("\n".join(lines))
