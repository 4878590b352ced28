from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from portal import access
from portal.audit import audit_record
from reviews.models import DisclosureReport, DisclosureStatus
from reviews.services import may_request_disclosure


@login_required
@require_GET
def disclosure_download(request, report_id: int, fmt: str):
    report = get_object_or_404(DisclosureReport.objects.select_related("case"), pk=report_id)
    if not (
        may_request_disclosure(request.user) and access.same_organisation(request.user, report.case.organisation_id)
    ):
        raise Http404
    if report.status != DisclosureStatus.DONE or fmt not in ("html", "pdf"):
        raise Http404
    audit_record(
        action="disclosure.download", actor=request.user, organisation_id=report.case.organisation_id, target=report
    )
    field = report.pdf if fmt == "pdf" else report.html
    try:
        handle = field.open("rb")
    except FileNotFoundError:
        raise Http404 from None
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=f"disclosure-{report.case.reference}-{report.pk}.{fmt}",
        content_type="application/pdf" if fmt == "pdf" else "text/html; charset=utf-8",
    )
    response["Cache-Control"] = "private, no-store"
    return response
