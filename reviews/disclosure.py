"""Disclosure reports: every photo, candidate, null result and decision of a case, as HTML and PDF."""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from matching.evaluation import audit_validity
from matching.models import Candidate, Case, Outcome, Photo, Search
from matching.services import OPEN_OUTCOMES
from portal import access
from portal.audit import audit_record
from portal.outbox import outbox_enqueue
from reviews.bias import percent
from reviews.models import FEATURES, DisclosureReport, DisclosureStatus, ReviewDecision
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
    decisions: list[DecisionRow] = field(default_factory=list)


@dataclass
class FaceRow:
    index: int
    box: str
    quality: str
    search: Search | None
    candidates: list[CandidateRow] = field(default_factory=list)
    # Candidates still under review: counted, never listed (see `disclosure_context`).
    open_candidates: int = 0


@dataclass
class PhotoRow:
    photo: Photo
    data_uri: str
    jpeg: bytes
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


OPEN_LEFT_OUT = "candidate(s) still under review: left out of this report until their review closes."


def disclosure_context(case: Case) -> dict[str, Any]:
    """The closed record of a case. A candidate still under review is only counted: its subject, rank,
    distance and decisions would tell a reader who may yet decide it what blind review hides."""
    photos = []
    for photo in case.photos.prefetch_related("faces__search__candidates__subject").order_by("id"):
        with photo.image.open("rb") as handle:
            jpeg = handle.read()
        row = PhotoRow(photo=photo, data_uri="data:image/jpeg;base64," + base64.b64encode(jpeg).decode(), jpeg=jpeg)
        for face in photo.faces.all():
            search = getattr(face, "search", None)
            face_row = FaceRow(
                index=face.index + 1,
                box=f"({face.left}, {face.top})–({face.right}, {face.bottom})",
                quality=f"{face.face_width}×{face.face_height} px, sharpness {face.blur:.0f}",
                search=search,
            )
            if search is not None:
                for candidate in search.candidates.order_by("rank"):
                    if candidate.outcome in OPEN_OUTCOMES:
                        face_row.open_candidates += 1
                        continue
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
                            decisions=decisions,
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


def _pdf(context: dict[str, Any]) -> bytes:
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["BodyText"].clone("small", fontSize=8, leading=10)

    def p(text: str, style=body) -> Paragraph:
        return Paragraph(escape(str(text)), style)

    case = context["case"]
    story = [
        Paragraph(escape(f"Disclosure report: case {case.reference}"), styles["Title"]),
        Paragraph(f"<b>{escape(context['lead_only'])}</b>", body),
        Spacer(1, 4 * mm),
        p(f"Title: {case.title}"),
        p(f"Purpose: {case.purpose}"),
        p(f"Created {case.created_at:%Y-%m-%d %H:%M} by {case.created_by or '—'}"),
        p(f"Generated {context['generated_at']:%Y-%m-%d %H:%M %Z}"),
        p(
            f"Engine: {', '.join(context['engine_versions']) or '—'}; threshold(s): "
            f"{', '.join(str(t) for t in context['thresholds']) or '—'}"
        ),
        p(
            "Audit used: "
            + (
                f"audit {context['audit'].run.pk} of {context['audit'].run.dataset.name} "
                f"({context['audit'].run.engine_version}, {context['audit'].run.completed_at:%Y-%m-%d})"
                if context["audit"].run
                else "none"
            )
            + ("" if context["audit"].valid else f" — not valid: {context['audit'].reason}")
        ),
        p(f"Review policy: {context['policy'].required_confirmations} independent confirmation(s) required."),
    ]
    for row in context["photos"]:
        story += [
            Spacer(1, 5 * mm),
            Paragraph(escape(f"Probe photo {row.photo.pk}: {row.photo.original_name}"), styles["Heading2"]),
        ]
        scale = min(70 * mm / row.photo.width, 70 * mm / row.photo.height)
        story.append(Image(io.BytesIO(row.jpeg), width=row.photo.width * scale, height=row.photo.height * scale))
        story.append(p(f"Status: {row.photo.get_status_display()} {row.photo.failure_reason}"))
        if not row.faces:
            story.append(p("No face was found in this photo, so no search was made."))
        for face in row.faces:
            story.append(Paragraph(escape(f"Face {face.index}: box {face.box}, {face.quality}"), styles["Heading3"]))
            if face.search is None:
                story.append(p("Not searched."))
                continue
            story.append(
                p(
                    f"Searched {face.search.created_at:%Y-%m-%d %H:%M} against "
                    f"{face.search.gallery_faces} gallery faces "
                    f"at threshold {face.search.threshold}, at most {face.search.max_candidates} candidates: "
                    f"{face.search.candidate_count} candidate(s)."
                )
            )
            if face.open_candidates:
                story.append(p(f"{face.open_candidates} {OPEN_LEFT_OUT}"))
            if not face.candidates and not face.open_candidates:
                story.append(p("No candidate: no gallery face was within the threshold."))
            table = [["Rank", "Distance", "Subject", "Outcome"]] + [
                [str(c.rank), f"{c.distance:.3f}", c.subject, c.outcome] for c in face.candidates
            ]
            if face.candidates:
                grid = Table(table, colWidths=[15 * mm, 20 * mm, 80 * mm, 50 * mm])
                grid.setStyle(
                    TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("FONTSIZE", (0, 0), (-1, -1), 8)])
                )
                story.append(grid)
            for candidate in face.candidates:
                for d in candidate.decisions:
                    decision = d.decision
                    story.append(
                        p(
                            f"Rank {candidate.rank} — {decision.get_conclusion_display()} by {decision.reviewer} on "
                            f"{decision.created_at:%Y-%m-%d %H:%M}"
                            f"{' (escalation)' if decision.escalation else ''}"
                            f"{f' (corrects decision {decision.corrects_id})' if decision.corrects_id else ''}; "
                            f"training valid until {decision.training_valid_until or 'not recorded'}; "
                            f"bias warning acknowledged: {'yes' if decision.bias_acknowledged else 'no'}.",
                            small,
                        )
                    )
                    story.append(p("Checklist: " + "; ".join(f"{k}: {v}" for k, v in d.features), small))
                    story.append(p(f"Reason: {decision.reason}", small))
                    story.append(p(f"Bias warning shown: {d.bias_summary}", small))
    story += [Spacer(1, 6 * mm), Paragraph(f"<b>{escape(context['lead_only'])}</b>", body)]
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4, title=f"Disclosure {case.reference}").build(story)
    return out.getvalue()


def disclosure_blockers(user: Any, case: Case) -> list[str]:
    """Why this user may not request a report on this case now; empty when they may.

    Org admins and the senior reviewer request reports, and not while they could still decide one of the
    case's open candidates: a report must not be a way round blind review or hidden scores.
    """
    if not (may_request_disclosure(user) and access.same_organisation(user, case.organisation_id)):
        return ["Only the organisation's admins and its senior reviewer may request disclosure reports."]
    # Training is left out: it lapses and is renewed, and the candidates are still theirs to decide.
    undecided = (
        Candidate.objects.filter(case=case, outcome__in=OPEN_OUTCOMES)
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
    context = disclosure_context(report.case)
    html = render_to_string("reviews/disclosure.html", context)
    pdf = _pdf(context)
    with transaction.atomic():
        report.html.save(f"{uuid.uuid4().hex}.html", ContentFile(html.encode()), save=False)
        report.pdf.save(f"{uuid.uuid4().hex}.pdf", ContentFile(pdf), save=False)
        report.status = DisclosureStatus.DONE
        report.finished_at = timezone.now()
        report.save(update_fields=["html", "pdf", "status", "finished_at"])
