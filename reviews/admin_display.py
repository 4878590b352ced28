"""What the review workbench shows: the queue's columns, the candidate page's read-only fields, the disclosure
reports' download links and the message after a decision. The admin lists these; each reads only the item and
what the admin put on it: `hide_scores` on every item (the queue sets it for the page, `get_object` from the
worksheet), `thumbnails` on the queue's items and `worksheet` on the candidate page's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from matching.models import Outcome
from reviews.bias import bias_panel_html, panel_for
from reviews.models import FEATURES, IMAGE_TOOLS, DisclosureReport, ReviewItem


def _thumbnail(data_uri: str | None, alt: str) -> str:
    if data_uri is None:
        return format_html('<span class="thumbnail-gone">{}: erased or purged</span>', alt)
    return format_html('<img src="{}" alt="{}" class="thumbnail">', data_uri, alt)


# The queue's columns


@admin.display(description="probe")
def probe_thumb(obj: ReviewItem) -> str:
    return _thumbnail(obj.thumbnails.get(obj.search.face_id), "probe face")


@admin.display(description="gallery")
def gallery_thumb(obj: ReviewItem) -> str:
    if getattr(obj, "hide_gallery", False):
        return format_html('<span class="thumbnail-hidden">{}</span>', "shown once you have analysed the probe")
    return _thumbnail(obj.thumbnails.get(obj.reference_face_id), "gallery face")


@admin.display(description="case", ordering="case__reference")
def case_reference(obj: ReviewItem) -> str:
    return obj.case.reference


@admin.display(description="rank")
def rank_display(obj: ReviewItem) -> str:
    return "hidden" if getattr(obj, "hide_scores", False) else str(obj.rank)


@admin.display(description="distance")
def distance_display(obj: ReviewItem) -> str:
    return "hidden" if getattr(obj, "hide_scores", False) else f"{obj.distance:.3f}"


@admin.display(description="warning")
def severity(obj: ReviewItem) -> str:
    warning = getattr(obj, "warning", None)
    if warning is None:
        return "—"
    return format_html('<span class="severity severity-{}">{}</span>', warning.severity, warning.get_severity_display())


@admin.display(description="claimed by")
def claimed_by(obj: ReviewItem) -> str:
    # The queue sets `claimers` for its page (selectors.queue_claimers).
    return ", ".join(obj.claimers) or "—"


def _age(age: timedelta) -> str:
    """How long an item has waited, in its largest unit: 3 minutes, 5 hours, 2 days. (Django's timesince, with two
    units and its calendar arithmetic, was 4% of a queue page.)"""
    minutes = max(int(age.total_seconds() // 60), 0)
    if minutes >= 24 * 60:
        count, unit = minutes // (24 * 60), "day"
    elif minutes >= 60:
        count, unit = minutes // 60, "hour"
    else:
        count, unit = minutes, "minute"
    return f"{count}\xa0{unit}{'' if count == 1 else 's'}"


@admin.display(description="waiting")
def waiting(obj: ReviewItem) -> str:
    if not obj.is_open:
        return "—"
    age = timezone.now() - obj.created_at
    css = "old" if age > timedelta(days=7) else "ageing" if age > timedelta(days=1) else "fresh"
    return format_html('<span class="waiting waiting-{}">{}</span>', css, _age(age))


# The candidate page's read-only fields (the faces and the worksheet are in its template)


@admin.display(description="threshold in use")
def threshold(obj: ReviewItem) -> str:
    return f"{obj.search.threshold:.3f} (at most {obj.search.max_candidates} candidates)"


@admin.display(description="probe face quality")
def probe_quality(obj: ReviewItem) -> str:
    face = obj.search.face
    return f"{face.face_width}×{face.face_height} px face, sharpness {face.blur:.0f}, engine {face.engine_version}"


@admin.display(description="what the audit says")
def bias_warning(obj: ReviewItem) -> str:
    return bias_panel_html(obj, hide_scores=getattr(obj, "hide_scores", False))


@admin.display(description="case")
def case_summary(obj: ReviewItem) -> str:
    case = obj.case
    return format_html(
        "<strong>{}</strong>: {}<br>Purpose: {}<br>{}", case.reference, case.title, case.purpose, case.description
    )


@admin.display(description="subject")
def subject_summary(obj: ReviewItem) -> str:
    subject = obj.subject
    return format_html(
        "{} {}<br>Sex: {} · Age band: {} · Race/ethnicity: {}",
        subject.code,
        subject.display_name,
        subject.get_sex_display(),
        subject.get_age_band_display(),
        subject.get_ethnicity_display(),
    )


@admin.display(description="decisions so far")
def history(obj: ReviewItem) -> str:
    worksheet = obj.worksheet
    if worksheet.decisions_hidden:
        # The same words whether or not anyone has decided: the count would say too much (see Worksheet).
        return "Blind review: whether other reviewers have decided, and what, is shown once you record yours."
    return (
        format_html_join(
            "",
            "<p><strong>{}</strong> by <strong>{}</strong> on {}{}: {}</p>",
            (
                (
                    d.get_conclusion_display(),
                    d.reviewer,
                    timezone.localtime(d.created_at).strftime("%Y-%m-%d %H:%M"),
                    " (escalation)" if d.escalation else (f" (corrects #{d.corrects_id})" if d.corrects_id else ""),
                    d.reason,
                )
                for d in worksheet.decisions
            ),
        )
        or "None yet."
    )


@admin.display(description="report")
def downloads(obj: DisclosureReport) -> str:
    if obj.status != "done":
        return obj.get_status_display()
    links = format_html(
        '<a href="{}" class="disclosure-view" target="_blank" rel="noopener">View</a>'
        ' · <a href="{}" class="disclosure-html">Download HTML</a>',
        reverse("reviews:disclosure_view", args=[obj.pk]),
        reverse("reviews:disclosure_download", args=[obj.pk, "html"]),
    )
    if obj.pdf:
        return format_html(
            '{} · <a href="{}" class="disclosure-pdf">Download PDF</a>',
            links,
            reverse("reviews:disclosure_download", args=[obj.pk, "pdf"]),
        )
    return format_html('{}<p class="errornote pdf-missing">{}</p>', links, obj.pdf_failure_reason or "No PDF.")


# The comparison page's bench: what its template draws beside the form


def bench_context(user: Any, obj: ReviewItem) -> dict[str, Any]:
    """The analysis step's measures, the reference strip, the marks to draw and the compact bias warning."""
    from matching.quality import face_quality_of
    from matching.thumbnails import face_thumbnails
    from reviews.selectors import reference_strip

    worksheet = obj.worksheet
    context: dict[str, Any] = {
        "fiswg_features": [{"value": name, "label": label} for name, label in FEATURES],
        "image_tools": IMAGE_TOOLS,
    }
    if worksheet.analyse_only:
        context["probe_quality"] = face_quality_of(obj.search.face)
        return context
    strip = reference_strip(obj)
    context["references"] = strip
    context["reference_thumbnails"] = face_thumbnails(user, [p.face for p in strip.photos])
    context["marks_shown"] = worksheet.marks
    context["other_analyses"] = [a for a in worksheet.analyses if a.reviewer_id != user.pk and a != worksheet.analysis]
    if obj.is_open and not worksheet.finished and not worksheet.compare_only:
        # The panel's own headline and severity (reviews.bias), in the compact form beside Save; the full panel
        # stays below. While scores are hidden it is the hidden panel, whose headline speaks of the threshold.
        context["bias_compact"] = panel_for(obj, hide_scores=obj.hide_scores)
    return context


def unsuitable_message(obj: ReviewItem) -> str:
    closed = obj.search.candidates.filter(outcome=Outcome.UNSUITABLE).count()
    return (
        f"Analysis recorded: the probe face is of no value for comparison. {closed} candidate"
        f"{'s' if closed != 1 else ''} of it {'were' if closed != 1 else 'was'} closed as not comparable, and the "
        "caseworker's page says the photo was judged unsuitable for comparison."
    )


# After a decision


def decision_message(user: Any, obj: ReviewItem) -> str:
    """What happened to the candidate after this user's decision, rather than the admin's "was changed"."""
    obj.refresh_from_db(fields=["outcome"])
    mine = obj.decisions.filter(reviewer=user).order_by("-created_at", "-id").first()
    confirmed_by_me = mine is not None and mine.confirms
    outcome = {
        Outcome.PENDING: (
            "it needs more confirmations before the caseworker sees it"
            if confirmed_by_me
            else "it stays open until enough reviewers have decided; the caseworker sees nothing of it"
        ),
        Outcome.ESCALATED: (
            "it needs another confirmation, from an org admin or the senior reviewer who has taken no part"
            if mine is not None and mine.escalation
            else "reviewers disagree, so an org admin or the senior reviewer decides it"
        ),
        Outcome.CONFIRMED: "it is now confirmed, and the caseworker sees it",
        Outcome.REJECTED: "it is now rejected",
        Outcome.UNSUITABLE: "it is closed as not comparable",
    }[obj.outcome]
    return f"Your decision on candidate {obj.pk} is recorded; {outcome}."
