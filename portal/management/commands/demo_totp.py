"""Stands in for a demo user's phone: prints the current code of their authenticator (TOTP) device.

Only for the demo organisation's accounts (and its superuser `root`), and never with DEPLOYMENT=production:
a real member's second factor is their phone, and nothing on the server prints their codes.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_ORGANISATION = "demo"
DEMO_EMAIL_DOMAIN = "demo.example.org"


def demo_totp_code(user) -> tuple[str, int]:
    """The code the user's authenticator shows now, and the seconds it stays valid."""
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user).order_by("-confirmed", "-id").first()
    if device is None:
        raise CommandError(
            f"{user.get_username()} has no authenticator yet: log in as {user.get_username()} first, "
            "which opens the enrolment page, then run this again."
        )
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    code = f"{totp.token():0{device.digits}d}"
    return code, int(device.step - (totp.time - device.t0) % device.step)


def is_demo_account(user) -> bool:
    membership = getattr(user, "membership", None)
    if membership is not None:
        return membership.organisation.slug == DEMO_ORGANISATION
    return user.is_superuser and user.get_username() == "root" and user.email == f"root@{DEMO_EMAIL_DOMAIN}"


class Command(BaseCommand):
    help = "Print the current authenticator code of a demo account (seed_demo's users only; not in production)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")

    def handle(self, *args, username: str, **options) -> None:
        if settings.DEPLOYMENT == "production":
            raise CommandError("demo_totp is for the demo only; it refuses DEPLOYMENT=production.")
        user = get_user_model().objects.select_related("membership__organisation").filter(username=username).first()
        if user is None or not is_demo_account(user):
            raise CommandError(f"{username} is not an account of the demo organisation.")
        code, seconds = demo_totp_code(user)
        self.stdout.write(f"{code}   (code for {username}; valid for about {seconds} more seconds)")
