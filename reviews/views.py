from __future__ import annotations

from csp.decorators import csp_replace
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from portal import access
from portal.audit import audit_record
from reviews.models import DisclosureReport, DisclosureStatus
from reviews.services import may_request_disclosure

# The report viewed in the browser is a stored document, not a page of the portal: it needs nothing but its own
# inline style sheet and its inlined (data:) images, runs no script and may not be framed. Stricter than the
# portal's policy, never looser.
REPORT_VIEW_POLICY = {
    "default-src": ["'none'"],
    "img-src": ["data:"],
    "style-src": ["'unsafe-inline'"],
    "script-src": ["'none'"],
    "form-action": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "object-src": ["'none'"],
    "sandbox": True,
}


def _report_filename(report: DisclosureReport, fmt: str) -> str:
    """ASCII letters, digits and hyphens before the extension, so that the Content-Disposition holds nothing to
    escape, and no path, quote, semicolon or text-direction control; even a reference stored before references
    were limited gives one (see `Case.reference_for_files`)."""
    label = report.case.reference_for_files
    return f"disclosure-{label}-{report.pk}.{fmt}" if label else f"disclosure-{report.pk}.{fmt}"


def _report_file(request, report_id: int, fmt: str, *, inline: bool) -> FileResponse:
    """A finished report's file for whoever may request reports in its organisation; each read is logged."""
    report = get_object_or_404(DisclosureReport.objects.select_related("case"), pk=report_id)
    if not (
        may_request_disclosure(request.user) and access.same_organisation(request.user, report.case.organisation_id)
    ):
        raise Http404
    if report.status != DisclosureStatus.DONE or fmt not in ("html", "pdf"):
        raise Http404
    field = report.pdf if fmt == "pdf" else report.html
    if not field:
        raise Http404("This report has no PDF; its page says why.")
    audit_record(
        action="disclosure.download",
        actor=request.user,
        organisation_id=report.case.organisation_id,
        target=report,
        detail={"format": fmt, "inline": inline},
    )
    try:
        handle = field.open("rb")
    except FileNotFoundError:
        raise Http404 from None
    response = FileResponse(
        handle,
        as_attachment=not inline,
        filename=_report_filename(report, fmt),
        content_type="application/pdf" if fmt == "pdf" else "text/html; charset=utf-8",
    )
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def disclosure_download(request, report_id: int, fmt: str):
    return _report_file(request, report_id, fmt, inline=False)


@login_required
@require_GET
@csp_replace(REPORT_VIEW_POLICY)
def disclosure_view(request, report_id: int):
    """The HTML report in the browser (Content-Disposition: inline), with the download's checks and log row."""
    return _report_file(request, report_id, "html", inline=True)
