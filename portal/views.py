from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal import access


@login_required
def home(request):
    if access.can_work_cases(request.user):
        return redirect("matching:case_list")
    if access.can_use_admin(request.user):
        return redirect("admin:index")
    return redirect("no_role")


@login_required
def no_role(request):
    from django.shortcuts import render

    return render(request, "portal/no_role.html", status=403)


def healthz(request):
    """503 when the database does not answer. A broker outage is reported but leaves the web healthy:
    uploads are kept in the outbox until the broker returns."""
    from django.db import DatabaseError

    from portal.outbox import broker_reachable

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except DatabaseError as error:
        database = f"error: {type(error).__name__}"
    broker = {True: "ok", False: "unreachable", None: "n/a"}[broker_reachable(timeout=1.0)]
    healthy = database == "ok"
    return JsonResponse(
        {"status": "ok" if healthy else "error", "database": database, "broker": broker},
        status=200 if healthy else 503,
    )


class InvitationAcceptForm(forms.Form):
    username = forms.CharField(max_length=150)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    password = forms.CharField(widget=forms.PasswordInput, min_length=10)


@require_http_methods(["GET", "POST"])
def invitation_accept(request, token: str):
    from django.contrib.auth import login

    from portal.services import AccessError, invitation_find
    from portal.services import invitation_accept as accept

    invitation = invitation_find(token)
    if invitation is None or not invitation.usable:
        reason = "This invitation link is not valid, has been used, or has expired."
        return render(request, "portal/invitation.html", {"refused": reason}, status=404)
    form = InvitationAcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            membership = accept(token=token, **form.cleaned_data)
        except AccessError as error:
            form.add_error(None, str(error))
        else:
            login(request, membership.user, backend="portal.authentication.CaseInsensitiveModelBackend")
            return redirect("home")
    return render(
        request,
        "portal/invitation.html",
        {"form": form, "invitation": invitation},
        status=400 if request.method == "POST" else 200,
    )


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, label="Name (optional)")


@login_required
@require_http_methods(["GET", "POST"])
def api_token(request):
    """A member's own API token: mint it (its secret shown this once) and revoke it.

    The same services as `POST` and `DELETE /api/auth/token/`. Like every page, it opens only after the second
    factor for those who need one (portal.twofactor), so a stolen password alone cannot mint a token.
    """
    from django.contrib import messages

    from portal.keys import personal_token_active, personal_token_create, personal_token_revoke
    from portal.services import AccessError

    secret = ""
    form = TokenCreateForm()
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "revoke":
            if personal_token_revoke(user=request.user):
                messages.success(request, "Your API token is revoked: it stopped working at once.")
            return redirect("api_token")
        if action != "create":
            return render(request, "portal/api_token.html", {"form": form}, status=400)
        form = TokenCreateForm(request.POST)
        if form.is_valid():
            try:
                _, secret = personal_token_create(user=request.user, name=form.cleaned_data["name"])
            except AccessError as error:
                messages.error(request, str(error))
            else:
                form = TokenCreateForm()
    return render(
        request,
        "portal/api_token.html",
        {"form": form, "secret": secret, "token": personal_token_active(request.user)},
        status=400 if form.errors else 200,
    )
