from __future__ import annotations

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from matching.models import Outcome
from matching.services import ServiceError
from portal import access
from portal.admin_mixins import ScopedAdmin, ServiceErrorsAsMessages
from reviews.models import Decision, ReviewDecision, ReviewItem
from reviews.services import review_decide


class ReviewForm(forms.ModelForm):
    decision = forms.ChoiceField(choices=Decision.choices, widget=forms.RadioSelect)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Required. Say which features agree or disagree, and why.",
    )

    class Meta:
        model = ReviewItem
        fields: list[str] = []

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if len(reason) < 10:
            raise forms.ValidationError("Write a reason of at least a few words.")
        return reason


def _image(url: str, alt: str, height: int) -> str:
    return format_html('<img src="{}" alt="{}" style="max-height:{}px;max-width:100%">', url, alt, height)


class OutcomeFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [("pending", "Pending"), ("decided", "Decided"), ("all", "All")]

    def choices(self, changelist):
        # Pending is the default view, so "All" needs its own value.
        value = self.value() or "pending"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or "pending"
        if value == "pending":
            return queryset.filter(outcome=Outcome.PENDING)
        if value == "decided":
            return queryset.exclude(outcome=Outcome.PENDING)
        return queryset


class CaseFilter(admin.SimpleListFilter):
    """Lists only the cases in the reviewer's own queue; a plain field filter would list every organisation's."""

    title = "case"
    parameter_name = "case"

    def lookups(self, request, model_admin):
        cases = model_admin.get_queryset(request).values_list("case_id", "case__reference").distinct()
        return sorted(cases, key=lambda pair: pair[1])

    def queryset(self, request, queryset):
        return queryset.filter(case_id=self.value()) if self.value() else queryset


@admin.register(ReviewItem)
class ReviewItemAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    service_errors = (ServiceError,)
    form = ReviewForm
    list_display = [
        "id",
        "probe_thumb",
        "gallery_thumb",
        "case_reference",
        "rank",
        "distance_display",
        "outcome",
        "waiting",
    ]
    list_display_links = ["id", "probe_thumb"]
    list_filter = [OutcomeFilter, CaseFilter]
    search_fields = ["case__reference", "case__title"]
    list_select_related = ["case", "search__face", "reference_face"]
    ordering = ["created_at", "id"]
    view_check = staticmethod(access.can_review)
    add_check = staticmethod(lambda user: False)
    readonly_fields = [
        "comparison",
        "case_summary",
        "rank",
        "distance_display",
        "threshold",
        "probe_quality",
        "subject_summary",
        "outcome",
        "history",
    ]
    fieldsets = [
        (None, {"fields": ["comparison"]}),
        ("Case", {"fields": ["case_summary"]}),
        ("Search", {"fields": ["rank", "distance_display", "threshold", "probe_quality"]}),
        ("Gallery subject", {"fields": ["subject_summary"]}),
        ("Decision", {"fields": ["outcome", "history"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("case", "search__face__photo", "reference_face__photo", "subject", "outcome_by")
            .defer("search__face__encoding", "reference_face__encoding")
        )

    def has_change_permission(self, request, obj=None) -> bool:
        if not access.can_review(request.user):
            return False
        return obj is None or obj.outcome == Outcome.PENDING

    def get_fieldsets(self, request, obj=None):
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and self.has_change_permission(request, obj):
            fieldsets.append(("Your decision", {"fields": ["decision", "reason"]}))
        return fieldsets

    def changelist_view(self, request, extra_context=None):
        extra_context = {"title": "Review queue: candidates waiting for a decision", **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {"title": "Review candidate", "show_save_and_continue": False, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        review_decide(
            candidate_id=obj.pk,
            decision=form.cleaned_data["decision"],
            reason=form.cleaned_data["reason"],
            acting_user=request.user,
        )

    def log_change(self, request, obj, message):
        # The decision itself is the record; the admin's own log would say less.
        return None

    @admin.display(description="probe")
    def probe_thumb(self, obj: ReviewItem) -> str:
        return _image(reverse("matching:face_crop", args=[obj.search.face_id]), "probe face", 64)

    @admin.display(description="gallery")
    def gallery_thumb(self, obj: ReviewItem) -> str:
        return _image(reverse("matching:face_crop", args=[obj.reference_face_id]), "gallery face", 64)

    @admin.display(description="case", ordering="case__reference")
    def case_reference(self, obj: ReviewItem) -> str:
        return obj.case.reference

    @admin.display(description="distance", ordering="distance")
    def distance_display(self, obj: ReviewItem) -> str:
        return f"{obj.distance:.3f}"

    @admin.display(description="waiting")
    def waiting(self, obj: ReviewItem) -> str:
        if obj.outcome != Outcome.PENDING:
            return "—"
        return timesince(obj.created_at, timezone.now())

    @admin.display(description="threshold in use")
    def threshold(self, obj: ReviewItem) -> str:
        return f"{obj.search.threshold:.3f} (at most {obj.search.max_candidates} candidates)"

    @admin.display(description="probe face quality")
    def probe_quality(self, obj: ReviewItem) -> str:
        face = obj.search.face
        return f"{face.face_width}×{face.face_height} px face, sharpness {face.blur:.0f}, engine {face.engine_version}"

    @admin.display(description="side by side")
    def comparison(self, obj: ReviewItem) -> str:
        probe, reference = obj.search.face, obj.reference_face
        return format_html(
            '<div class="comparison">'
            "<figure><figcaption>Probe face (case {})</figcaption>{}<br>{}</figure>"
            "<figure><figcaption>Gallery face (rank {}, distance {})</figcaption>{}<br>{}</figure>"
            "</div>",
            obj.case.reference,
            _image(reverse("matching:face_crop", args=[probe.pk]), "probe face", 260),
            _image(reverse("matching:photo_image", args=[probe.photo_id]), "probe photo", 220),
            obj.rank,
            f"{obj.distance:.3f}",
            _image(reverse("matching:face_crop", args=[reference.pk]), "gallery face", 260),
            _image(reverse("matching:photo_image", args=[reference.photo_id]), "gallery photo", 220),
        )

    @admin.display(description="case")
    def case_summary(self, obj: ReviewItem) -> str:
        case = obj.case
        return format_html(
            "<strong>{}</strong>: {}<br>Purpose: {}<br>{}", case.reference, case.title, case.purpose, case.description
        )

    @admin.display(description="subject")
    def subject_summary(self, obj: ReviewItem) -> str:
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
    def history(self, obj: ReviewItem) -> str:
        decisions = obj.decisions.select_related("reviewer")
        if not decisions:
            return "None yet."
        return format_html_join(
            "",
            "<p>{} by <strong>{}</strong> on {}: {}</p>",
            (
                (
                    d.get_decision_display(),
                    d.reviewer,
                    timezone.localtime(d.created_at).strftime("%Y-%m-%d %H:%M"),
                    d.reason,
                )
                for d in decisions
            ),
        )


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(ScopedAdmin, admin.ModelAdmin):
    organisation_path = "candidate__organisation"
    list_display = ["created_at", "candidate", "decision", "reviewer"]
    list_filter = ["decision", "created_at"]
    list_select_related = ["candidate", "reviewer"]
    readonly_fields = ["candidate", "reviewer", "decision", "reason", "created_at"]
    view_check = staticmethod(access.can_review)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
