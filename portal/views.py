from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect

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
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
