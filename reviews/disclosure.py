"""Disclosure reports: every photo, candidate, null result and decision of a case, as HTML and PDF."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from matching.evaluation import audit_validity
from matching.models import Case, Photo, Search
from portal import access
from portal.audit import audit_record
from portal.outbox import outbox_enqueue
from reviews.bias import percent
from reviews.models import FEATURES, DisclosureReport, DisclosureStatus, ReviewDecision
from reviews.services import ServiceError, review_policy_for

LEAD_ONLY = (
    "A face match is an investigative lead only. It is not an identification and is not, on its own, grounds "
    "for any action against any person."
)
FEATURE_LABELS = dict(FEATURES)


@dataclass
class DecisionRow:
    decision: ReviewDecision
    features: list[tuple[str, str]]
    bias_summary: str


@dataclass
class CandidateRow:
    rank: int
    distance: float
    subject: str
    outcome: str
    reference_uri: str = ""
    decisions: list[DecisionRow] = field(default_factory=list)


@dataclass
class FaceRow:
    index: int
    box: str
    quality: str
    search: Search | None
    crop_uri: str = ""
    candidates: list[CandidateRow] = field(default_factory=list)


@dataclass
class PhotoRow:
    photo: Photo
    data_uri: str
    faces: list[FaceRow] = field(default_factory=list)


def _bias_summary(snapshot: dict[str, Any]) -> str:
    if not snapshot:
        return "No bias warning was recorded."
    if not snapshot.get("valid"):
        return f"No valid audit: {snapshot.get('reason', '')}"
    parts = [f"Severity {snapshot.get('severity')}; {snapshot.get('run_label', '')}."]
    for group in snapshot.get("involved", [])[:6]:
        parts.append(
            f"{group['key']}: FMR {percent(group['fmr'])} (95% CI {percent(group['fmr_low'])}–"
            f"{percent(group['fmr_high'])}){'; insufficient data' if group['insufficient'] else ''}."
        )
    parts.extend(snapshot.get("reasons", [])[:6])
    if snapshot.get("child_warning"):
        parts.append(snapshot["child_warning"])
    return " ".join(parts)


def _data_uri(file) -> str:
    """A stored JPEG inlined, so that the HTML and the PDF carry their images with them."""
    if not file:
        return ""
    with file.open("rb") as handle:
        return "data:image/jpeg;base64," + base64.b64encode(handle.read()).decode()


def disclosure_context(case: Case) -> dict[str, Any]:
    photos = []
    for photo in case.photos.prefetch_related("faces__search__candidates__subject").order_by("id"):
        row = PhotoRow(photo=photo, data_uri=_data_uri(photo.image))
        for face in photo.faces.all():
            search = getattr(face, "search", None)
            face_row = FaceRow(
                index=face.index + 1,
                box=f"({face.left}, {face.top})–({face.right}, {face.bottom})",
                quality=f"{face.face_width}×{face.face_height} px, sharpness {face.blur:.0f}",
                search=search,
                crop_uri=_data_uri(face.crop),
            )
            if search is not None:
                candidates = (
                    search.candidates.select_related("subject", "reference_face")
                    .defer("reference_face__encoding")
                    .order_by("rank")
                )
                for candidate in candidates:
                    decisions = [
                        DecisionRow(
                            decision=d,
                            features=[(FEATURE_LABELS.get(k, k), v.replace("_", " ")) for k, v in d.features.items()],
                            bias_summary=_bias_summary(d.bias_snapshot),
                        )
                        for d in candidate.decisions.select_related("reviewer", "corrects").order_by("created_at")
                    ]
                    face_row.candidates.append(
                        CandidateRow(
                            rank=candidate.rank,
                            distance=candidate.distance,
                            subject=f"{candidate.subject.code} {candidate.subject.display_name}".strip(),
                            outcome=candidate.get_outcome_display(),
                            reference_uri=_data_uri(candidate.reference_face.crop),
                            decisions=decisions,
                        )
                    )
            row.faces.append(face_row)
        photos.append(row)
    validity = audit_validity(case.organisation)
    searches = Search.objects.filter(face__photo__case=case)
    return {
        "case": case,
        "photos": photos,
        "policy": review_policy_for(case.organisation),
        "engine_versions": sorted({s.engine_version for s in searches}),
        "thresholds": sorted({s.threshold for s in searches}),
        "audit": validity,
        "generated_at": timezone.now(),
        "lead_only": LEAD_ONLY,
    }


def _pdf(html: str) -> bytes:
    """The PDF is the HTML report printed: one template, so the two cannot say different things."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    # The report inlines its images as data URIs; it must fetch nothing else, from the network or the disk.
    return HTML(string=html, url_fetcher=URLFetcher(allowed_protocols={"data"})).write_pdf()


@transaction.atomic
def disclosure_request(*, case: Case, acting_user: Any) -> DisclosureReport:
    if not (access.can_review(acting_user) and access.same_organisation(acting_user, case.organisation_id)):
        raise ServiceError("Only the organisation's reviewers and admins may generate disclosure reports.")
    report = DisclosureReport.objects.create(case=case, requested_by=acting_user)
    audit_record(action="disclosure.request", actor=acting_user, organisation=case.organisation, target=report)
    # Through the outbox: a broker outage delays the report rather than failing the committed request.
    outbox_enqueue("reviews.tasks.generate_disclosure", report.pk)
    return report


def disclosure_generate(*, report_id: int) -> None:
    claimed = DisclosureReport.objects.filter(
        pk=report_id, status__in=[DisclosureStatus.QUEUED, DisclosureStatus.RUNNING]
    ).update(status=DisclosureStatus.RUNNING)
    if not claimed:
        return
    report = DisclosureReport.objects.select_related("case__organisation", "case__created_by").get(pk=report_id)
    context = disclosure_context(report.case)
    html = render_to_string("reviews/disclosure.html", context)
    pdf = _pdf(html)
    with transaction.atomic():
        report.html.save(f"{uuid.uuid4().hex}.html", ContentFile(html.encode()), save=False)
        report.pdf.save(f"{uuid.uuid4().hex}.pdf", ContentFile(pdf), save=False)
        report.status = DisclosureStatus.DONE
        report.finished_at = timezone.now()
        report.save(update_fields=["html", "pdf", "status", "finished_at"])
