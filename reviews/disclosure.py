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

from matching.accuracy.evaluation import audit_validity
from matching.models import Candidate, Case, Face, Outcome, Photo, Search
from matching.services import BiometricsRemoved
from portal import access
from portal.audit import audit_record
from portal.outbox import outbox_enqueue
from reviews.bias import LABELS
from reviews.models import FEATURES, DisclosureReport, DisclosureStatus, ProbeAnalysis, ReviewDecision
from reviews.services import (
    ServiceError,
    may_decide_escalations,
    may_request_disclosure,
    review_policy_for,
)

LEAD_ONLY = (
    "A face match is an investigative lead only. It is not an identification and is not, on its own, grounds "
    "for any action against any person."
)
FEATURE_LABELS = dict(FEATURES)


@dataclass
class MarkedFace:
    """A face as the reviewer marked it: the aligned image with its marks drawn over it, numbered."""

    label: str
    image_uri: str
    marks: list[dict[str, Any]]


@dataclass
class DecisionRow:
    decision: ReviewDecision
    features: list[tuple[str, str]]
    bias_summary: str
    tools: str = ""
    marks: list[dict[str, Any]] = field(default_factory=list)
    marked_faces: list[MarkedFace] = field(default_factory=list)


@dataclass
class CandidateRow:
    rank: int
    distance: float
    subject: str
    outcome: str
    reference_uri: str = ""
    decisions: list[DecisionRow] = field(default_factory=list)
    reference_taken: str = ""
    outcome_reason: str = ""


@dataclass
class FaceRow:
    index: int
    box: str
    quality: str
    search: Search | None
    crop_uri: str = ""
    candidates: list[CandidateRow] = field(default_factory=list)
    # Candidates still under review: counted, never listed (see `disclosure_context`).
    open_candidates: int = 0
    # ACE-V's analyses of this probe face, before any comparison; and whether one judged it of no value.
    analyses: list[tuple[ProbeAnalysis, str]] = field(default_factory=list)
    unsuitable: str = ""


@dataclass
class PhotoRow:
    photo: Photo
    data_uri: str
    faces: list[FaceRow] = field(default_factory=list)
    # Set when the photo's image is gone (retention purge or erasure): the report says so instead.
    purged_note: str = ""


def _photo_jpeg(photo: Photo) -> bytes | None:
    """The stored photo's bytes, or None when it was purged or its file is gone."""
    if photo.purged_at is not None or not photo.image:
        return None
    try:
        with photo.image.open("rb") as handle:
            return handle.read()
    except (FileNotFoundError, ValueError):
        return None


def _purged_note(photo: Photo) -> str:
    if photo.purged_at is not None:
        return f"The photo was purged on {photo.purged_at:%Y-%m-%d} under the organisation's retention policy."
    return "The photo's file is no longer stored."


def _subject_label(subject) -> str:
    if subject.erased_at is not None:
        return f"{subject.code} (erased from the gallery)"
    return f"{subject.code} {subject.display_name}".strip()


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _bias_summary(snapshot: dict[str, Any], current_run_id: int | None = None) -> str:
    if not snapshot:
        return "No bias warning was recorded."
    # The snapshot is what this reviewer saw when deciding; say so, and say when the current audit differs.
    seen = "As the reviewer saw it when deciding (stored snapshot)"
    if snapshot.get("run_id") != current_run_id:
        seen += f"; the current audit differs (now {f'audit {current_run_id}' if current_run_id else 'no valid audit'})"
    if not snapshot.get("valid"):
        return f"{seen}. No valid audit: {snapshot.get('reason', '')}"
    label = LABELS.get(snapshot.get("severity", ""), snapshot.get("severity"))
    parts = [f"{seen}. {label}; {snapshot.get('run_label', '')}."]
    for key in ("headline", "miss", "weak"):
        if snapshot.get(key):
            parts.append(snapshot[key])
    for group in snapshot.get("involved", [])[:6]:
        # Snapshots from before the 1:N panel: the pairwise rate of each group involved.
        parts.append(
            f"{group['key']}: FMR {_percent(group['fmr'])} (95% CI {_percent(group['fmr_low'])}–"
            f"{_percent(group['fmr_high'])}){'; insufficient data' if group['insufficient'] else ''}."
        )
    parts.extend(snapshot.get("reasons", [])[:6])
    if snapshot.get("child_warning"):
        parts.append(snapshot["child_warning"])
    return " ".join(parts)


def _data_uri(file) -> str:
    """A stored JPEG inlined, so that the HTML and the PDF carry their images with them."""
    if not file:
        return ""
    try:
        with file.open("rb") as handle:
            return "data:image/jpeg;base64," + base64.b64encode(handle.read()).decode()
    except (FileNotFoundError, ValueError):
        # Purged or erased under the report's feet: the report shows no image rather than failing.
        return ""


OPEN_LEFT_OUT = "candidate(s) still under review: left out of this report until their review closes."
MEASURE_LABELS = {"eye_distance": "eye distance", "sharpness": "sharpness", "yaw": "yaw", "roll": "roll"}


def _measures_text(measures: dict[str, Any]) -> str:
    parts = []
    for name, label in MEASURE_LABELS.items():
        measure = measures.get(name) or {}
        value = measure.get("value")
        shown = "not measured" if value is None else f"{value:.0f}{measure.get('unit', '')}"
        parts.append(f"{label} {shown} ({measure.get('verdict', 'unknown')})")
    return "; ".join(parts)


def _tools_text(tools: dict[str, list[str]]) -> str:
    return "; ".join(f"{side}: {', '.join(used)}" for side, used in (tools or {}).items()) or "none"


def _marked_faces(decision: ReviewDecision, faces: dict[int, Any]) -> tuple[list[dict[str, Any]], list[MarkedFace]]:
    """The decision's marks, numbered, and each marked face's aligned image with its marks (in 480 x 576)."""
    from matching.alignment import HEIGHT, WIDTH

    marks, by_face = [], {}
    for number, mark in enumerate(decision.annotations or [], start=1):
        entry = {
            **mark,
            "number": number,
            "feature_label": FEATURE_LABELS.get(mark.get("feature"), mark.get("feature")),
            "cx": mark["x"] * WIDTH,
            "cy": mark["y"] * HEIGHT,
            "pw": mark.get("w", 0) * WIDTH,
            "ph": mark.get("h", 0) * HEIGHT,
        }
        marks.append(entry)
        by_face.setdefault(mark["face"], []).append(entry)
    marked = []
    for face_id, face_marks in by_face.items():
        face = faces.get(face_id)
        uri = _data_uri(face.aligned) if face is not None else ""
        label = "probe face" if face_marks[0].get("side") == "probe" else f"gallery face {face_id}"
        marked.append(MarkedFace(label=label, image_uri=uri, marks=face_marks))
    return marks, marked


def disclosure_context(case: Case) -> dict[str, Any]:
    """The closed record of a case. A candidate still under review is only counted: its subject, rank,
    distance and decisions would tell a reader who may yet decide it what blind review hides."""
    current = audit_validity(case.organisation)
    current_run_id = current.run.pk if current.valid else None
    photos = []
    for photo in case.photos.prefetch_related("faces__search__candidates__subject").order_by("id"):
        jpeg = _photo_jpeg(photo)
        if jpeg is None:
            row = PhotoRow(photo=photo, data_uri="", purged_note=_purged_note(photo))
        else:
            row = PhotoRow(photo=photo, data_uri="data:image/jpeg;base64," + base64.b64encode(jpeg).decode())
        for face in photo.faces.all():
            search = getattr(face, "search", None)
            face_row = FaceRow(
                index=face.index + 1,
                box=f"({face.left}, {face.top})–({face.right}, {face.bottom})",
                quality=f"{face.face_width}×{face.face_height} px, sharpness {face.blur:.0f}",
                search=search,
                crop_uri=_data_uri(face.crop),
                analyses=[
                    (analysis, _measures_text(analysis.measures))
                    for analysis in ProbeAnalysis.objects.filter(face=face).select_related("reviewer")
                ],
                unsuitable=face.unsuitable_reason if face.unsuitable_at else "",
            )
            if search is not None:
                candidates = (
                    search.candidates.select_related("subject", "reference_face__photo__subject")
                    .defer("reference_face__encoding")
                    .order_by("rank")
                )
                for candidate in candidates:
                    if candidate.is_open:
                        face_row.open_candidates += 1
                        continue
                    decisions = []
                    for d in candidate.decisions.select_related("reviewer", "corrects").order_by("created_at"):
                        marked_ids = {mark.get("face") for mark in d.annotations or []}
                        faces = {f.pk: f for f in Face.objects.defer("encoding").filter(pk__in=marked_ids)}
                        marks, marked_faces = _marked_faces(d, faces)
                        decisions.append(
                            DecisionRow(
                                decision=d,
                                features=[
                                    (FEATURE_LABELS.get(k, k), v.replace("_", " ")) for k, v in d.features.items()
                                ],
                                bias_summary=_bias_summary(d.bias_snapshot, current_run_id),
                                tools=_tools_text(d.tools),
                                marks=marks,
                                marked_faces=marked_faces,
                            )
                        )
                    reference_photo = candidate.reference_face.photo
                    taken = ""
                    if reference_photo.captured_on:
                        age = reference_photo.age_at_capture()
                        taken = f"taken {reference_photo.captured_on:%Y-%m-%d}" + (
                            f", age {age}" if age is not None else ""
                        )
                    face_row.candidates.append(
                        CandidateRow(
                            rank=candidate.rank,
                            distance=candidate.distance,
                            subject=_subject_label(candidate.subject),
                            outcome=candidate.get_outcome_display(),
                            reference_uri=_data_uri(candidate.reference_face.crop),
                            decisions=decisions,
                            reference_taken=taken,
                            outcome_reason=candidate.outcome_reason if candidate.outcome == Outcome.UNSUITABLE else "",
                        )
                    )
            row.faces.append(face_row)
        photos.append(row)
    validity = audit_validity(case.organisation)
    open_total = sum(face.open_candidates for row in photos for face in row.faces)
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
        "open_candidates": open_total,
        "open_left_out": OPEN_LEFT_OUT,
    }


class PdfUnavailable(Exception):
    """WeasyPrint cannot print here: the machine lacks its system libraries (Pango, HarfBuzz)."""


PDF_UNAVAILABLE = (
    "No PDF: the worker could not load Pango, which prints the PDF ({error}). The HTML report is complete: view "
    "or download it. For a PDF, install Debian's libpango-1.0-0, libpangoft2-1.0-0 and libharfbuzz-subset0 on "
    "the worker's machine (`make pdflibs` as root), restart the worker and request the report again."
)


def _pdf(html: str) -> bytes:
    """The PDF is the HTML report printed: one template, so the two cannot say different things."""
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    except OSError as error:
        # WeasyPrint opens Pango with cffi when it is imported; on a machine without it that open fails. A
        # machine set up by `make run` while apt was locked or offline is one (see `make pdflibs`).
        raise PdfUnavailable(str(error).split(":")[0][:160]) from error

    # The report inlines its images as data URIs; it must fetch nothing else, from the network or the disk.
    return HTML(string=html, url_fetcher=URLFetcher(allowed_protocols={"data"})).write_pdf()


def disclosure_blockers(user: Any, case: Case) -> list[str]:
    """Why this user may not request a report on this case now; empty when they may.

    Org admins and the senior reviewer request reports, and not while they could still decide one of the
    case's open candidates: a report must not be a way round blind review or hidden scores.
    """
    if not (may_request_disclosure(user) and access.same_organisation(user, case.organisation_id)):
        return ["Only the organisation's admins and its senior reviewer may request disclosure reports."]
    # Training is left out: it lapses and is renewed, and the candidates are still theirs to decide.
    undecided = (
        Candidate.objects.open()
        .filter(case=case)
        .exclude(case__created_by=user)
        .exclude(case__accountable_by=user)
        .exclude(decisions__reviewer=user)
    )
    if not may_decide_escalations(user, review_policy_for(case.organisation)):
        undecided = undecided.exclude(outcome=Outcome.ESCALATED)
    if undecided.exists():
        return [
            "You could still decide open candidates on this case; request its report once you have decided "
            "them, or ask another org admin."
        ]
    return []


@transaction.atomic
def disclosure_request(*, case: Case, acting_user: Any) -> DisclosureReport:
    blockers = disclosure_blockers(acting_user, case)
    if blockers:
        raise ServiceError(" ".join(blockers))
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
    started_from = report.regenerated_at
    context = disclosure_context(report.case)
    html = render_to_string("reviews/disclosure.html", context)
    try:
        pdf, pdf_failure = _pdf(html), ""
    except PdfUnavailable as error:
        # Not a failed report: the HTML says everything the PDF would, so it is stored and the page says why
        # there is no PDF. Trying again would fail the same way until Pango is installed.
        pdf, pdf_failure = None, PDF_UNAVAILABLE.format(error=error)
    with transaction.atomic():
        current = DisclosureReport.objects.select_for_update(no_key=True).get(pk=report_id)
        if current.regenerated_at != started_from or current.status != DisclosureStatus.RUNNING:
            # An erasure or purge happened while this ran, so what was read may hold images now gone: the
            # newer generation (or the withdrawal) wins and nothing of this one is stored.
            return
        old_files = [current.html, current.pdf]
        report.html.save(f"{uuid.uuid4().hex}.html", ContentFile(html.encode()), save=False)
        if pdf is None:
            report.pdf = ""
        else:
            report.pdf.save(f"{uuid.uuid4().hex}.pdf", ContentFile(pdf), save=False)
        report.pdf_failure_reason = pdf_failure
        report.status = DisclosureStatus.DONE
        report.finished_at = timezone.now()
        report.save(update_fields=["html", "pdf", "pdf_failure_reason", "status", "finished_at"])
        for old in old_files:
            if old and old.name and old.name not in (report.html.name, report.pdf.name):
                old.storage.delete(old.name)


def _report_files_delete(report: DisclosureReport) -> None:
    for field_file in (report.html, report.pdf):
        if field_file and field_file.name:
            field_file.storage.delete(field_file.name)
    report.html = ""
    report.pdf = ""


def disclosures_after_biometrics_removed(event: BiometricsRemoved) -> None:
    """Listener for matching's erasures and purges, inside their transaction.

    A subject erasure regenerates every report of the cases where the subject was a candidate, without the
    subject's name; a case purge withdraws the case's reports, which embed its probe photos (a report asked
    for afterwards says the photos were purged). Either way the old files are deleted now, and the log says
    which it was.
    """
    now = timezone.now()
    reports = DisclosureReport.objects.select_for_update(no_key=True).filter(case_id__in=event.case_ids)
    for report in reports.exclude(status__in=[DisclosureStatus.FAILED, DisclosureStatus.WITHDRAWN]):
        _report_files_delete(report)
        report.regenerated_at = now
        if event.kind == "case.purge":
            report.status = DisclosureStatus.WITHDRAWN
            action = "disclosure.withdraw"
            detail = {"because": event.kind, "case": report.case_id}
        else:
            report.status = DisclosureStatus.QUEUED
            action = "disclosure.regenerate"
            detail = {"because": event.kind, "case": report.case_id, "subject_code": event.subject_code}
        report.save(update_fields=["html", "pdf", "status", "regenerated_at"])
        audit_record(
            action=action,
            actor=event.acting_user,
            organisation_id=event.organisation_id,
            target=report,
            detail=detail,
        )
        if report.status == DisclosureStatus.QUEUED:
            outbox_enqueue("reviews.tasks.generate_disclosure", report.pk)
