"""Two-factor authentication (TOTP, with django-otp) for everyone who can see candidates' identities.

Reviewers, org admins and superusers must confirm a TOTP code once per session. Caseworkers may enrol but
are not required to. Machine credentials (API keys and tokens) are not sessions and are not affected.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from portal import access
from portal.audit import audit_record

EXEMPT_PREFIXES = ("/accounts/", "/static/", "/healthz")


def two_factor_required(user) -> bool:
    return bool(settings.REQUIRE_TWO_FACTOR) and (
        access.is_superuser(user) or access.can_review(user) or access.can_manage_organisation(user)
    )


class TwoFactorMiddleware:
    """Sends a signed-in user who needs a second factor to confirm one before anything else."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if (
            user.is_authenticated
            and not request.path.startswith(EXEMPT_PREFIXES)
            and not user.is_verified()
            and two_factor_required(user)
            and not _valid_api_key(request)
        ):
            if request.path.startswith("/api/"):
                message = "Confirm your second factor in the portal first, or use an API key."
                return JsonResponse(
                    {"errors": [{"field": None, "code": "two_factor_required", "message": message}]}, status=403
                )
            target = "two_factor_verify" if _confirmed_device(user) else "two_factor_setup"
            return HttpResponseRedirect(f"{reverse(target)}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)


def _valid_api_key(request) -> bool:
    """Whether this API request carries a valid key or token, which then acts instead of the session.

    Any other Authorization header (a wrong scheme, garbage, a revoked key) leaves the request to the
    password-only session, and so to the second factor.
    """
    if not request.path.startswith("/api/"):
        return False
    from rest_framework.exceptions import AuthenticationFailed

    from portal.keys import ApiKeyAuthentication

    try:
        return ApiKeyAuthentication().authenticate(request) is not None
    except AuthenticationFailed:
        return False


def _confirmed_device(user):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


def totp_seconds_left(device, now: float | None = None) -> int:
    """Seconds until the authenticator shows its next code (a phone counts from t0, whatever the drift)."""
    now = time.time() if now is None else now
    return max(1, int(device.step - (now - device.t0) % device.step + 0.999))


def totp_code_used(device, token: str, now: float | None = None) -> bool:
    """Whether the code is one the device accepts at this time but has already accepted once.

    django-otp takes each time step's code once (a replay defence): a second sign-in with a code still on the
    phone's screen is refused as if it were wrong, although it is right.
    """
    from django_otp.oath import TOTP

    try:
        value = int(token)
    except ValueError:
        return False
    now = time.time() if now is None else now

    def matches(min_t: int | None) -> bool:
        # A fresh TOTP each time: a successful verify() moves its drift.
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        totp.time = now
        return totp.verify(value, device.tolerance, min_t)

    # Right within the tolerance window with no lower bound, refused above the last step taken: so it was taken.
    return matches(None) and not matches(device.last_t + 1)


def _code_error(device, token: str) -> str | None:
    """None when the code is right; otherwise what to tell the user, saying so when they are throttled."""
    allowed, data = device.verify_is_allowed()
    if not allowed:
        return _throttled_message(device, data)
    token = token.strip()
    if device.verify_token(token):
        return None
    if totp_code_used(device, token):
        seconds = totp_seconds_left(device)
        return (
            "This code was already used; wait for the next one "
            f"(your app shows it in about {seconds} second{'s' if seconds != 1 else ''})."
        )
    return "That code is not valid. Check the time on your phone and try again."


def _throttled_message(device, data) -> str:
    from django.utils import timezone
    from django_otp.models import MAX_THROTTLE_DELAY_SECONDS

    count = (data or {}).get("failure_count", device.throttling_failure_count) or 1
    required = min(device.get_throttle_factor() * 2 ** (count - 1), MAX_THROTTLE_DELAY_SECONDS)
    waited = (timezone.now() - device.throttling_failure_timestamp).total_seconds()
    seconds = max(1, int(required - waited + 0.999))
    wait = f"Wait {seconds} second{'s' if seconds != 1 else ''} before trying again."
    if count == 1:
        # One wrong code already costs a pause: say so plainly rather than "too many".
        return f"The last code was wrong, so the next try must wait a moment: you are throttled. {wait}"
    return f"{count} wrong codes in a row: you are throttled. {wait}"


def _second_factor_confirmed(request, device) -> None:
    """Mark the session past the second factor, under a new session id and CSRF token.

    The id the session had before the code belongs to a password-only sign-in, which someone else may hold: an
    attacker who knows the password, stops at this page and plants that id in the owner's browser would
    otherwise share the session the owner's code lifts past the second factor. django-otp does not renew it.
    """
    from django.middleware.csrf import rotate_token
    from django_otp import login as otp_login

    otp_login(request, device)
    request.session.cycle_key()
    rotate_token(request)


def _next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return resolve_url("home")


@login_required
@require_http_methods(["GET", "POST"])
def two_factor_setup(request):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    if _confirmed_device(request.user):
        return redirect(f"{reverse('two_factor_verify')}?{urlencode({'next': _next(request)})}")
    device, _ = TOTPDevice.objects.get_or_create(user=request.user, confirmed=False, defaults={"name": "Authenticator"})
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        error = _code_error(device, form.cleaned_data["token"])
        if error is None:
            with transaction.atomic():
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                audit_record(action="2fa.enrol", actor=request.user, organisation=access.organisation_of(request.user))
            _second_factor_confirmed(request, device)
            return redirect(_next(request))
        form.add_error("token", error)
    import segno

    qr = segno.make(device.config_url, error="m").svg_inline(scale=4)
    return render(
        request,
        "portal/two_factor_setup.html",
        {"form": form, "qr": qr, "secret": device.config_url.split("secret=")[1].split("&")[0], "next": _next(request)},
        status=400 if request.method == "POST" else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def two_factor_verify(request):
    device = _confirmed_device(request.user)
    if device is None:
        return redirect(f"{reverse('two_factor_setup')}?{urlencode({'next': _next(request)})}")
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        error = _code_error(device, form.cleaned_data["token"])
        if error is None:
            _second_factor_confirmed(request, device)
            audit_record(action="2fa.verify", actor=request.user, organisation=access.organisation_of(request.user))
            return redirect(_next(request))
        form.add_error("token", error)
    return render(
        request,
        "portal/two_factor_verify.html",
        {"form": form, "next": _next(request)},
        status=400 if request.method == "POST" else 200,
    )
