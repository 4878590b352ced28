"""Stands in for a demo user's phone: prints the current code of their authenticator (TOTP) device.

Only for the demo organisation's accounts (and its superuser `root`), and never with DEPLOYMENT=production:
a real member's second factor is their phone, and nothing on the server prints their codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_ORGANISATION = "demo"
DEMO_EMAIL_DOMAIN = "demo.example.org"


@dataclass(frozen=True)
class DemoCode:
    code: str
    seconds_left: int  # until the authenticator shows the next code
    used: bool  # already taken to sign in: the portal refuses it a second time


def demo_totp_code(user, now: float | None = None) -> DemoCode:
    """The code the user's authenticator shows now, how long it has left, and whether it was already used."""
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from portal.twofactor import totp_code_used, totp_seconds_left

    device = TOTPDevice.objects.filter(user=user).order_by("-confirmed", "-id").first()
    if device is None:
        raise CommandError(
            f"{user.get_username()} has no authenticator yet: log in as {user.get_username()} first, "
            "which opens the enrolment page, then run this again."
        )
    now = time.time() if now is None else now
    # What a phone shows: the code of the current time step, from the shared secret alone (no drift).
    phone = TOTP(device.bin_key, device.step, device.t0, device.digits)
    phone.time = now
    code = f"{phone.token():0{device.digits}d}"
    return DemoCode(code, totp_seconds_left(device, now), totp_code_used(device, code, now))


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
        user = (
            get_user_model()
            .objects.select_related("membership__organisation")
            .filter(username__iexact=username)
            .first()
        )
        if user is None or not is_demo_account(user):
            raise CommandError(f"{username} is not an account of the demo organisation.")
        shown = demo_totp_code(user)
        left = f"{shown.seconds_left} second{'s' if shown.seconds_left != 1 else ''}"
        if shown.used:
            self.stdout.write(
                f"{shown.code}   (code for {username}: already used to sign in, so it will be refused; "
                f"the next code comes in {left}: run this again then)"
            )
        else:
            self.stdout.write(f"{shown.code}   (code for {username}; {left} left before the next code)")
