from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from matching.models import Case, Face, Outcome
from matching.services import ServiceError
from matching.thumbnails import face_thumbnails
from portal import access
from portal.admin_mixins import DeclaredLookupsOnly, ScopedAdmin, ServiceErrorsAsMessages
from portal.models import ApiKeyKind
from reviews import selectors, services
from reviews.bias import bias_panel_html
from reviews.models import (
    FEATURES,
    Conclusion,
    DisclosureReport,
    FeatureComparison,
    FeatureMark,
    ReviewDecision,
    ReviewItem,
    ReviewPolicy,
    Severity,
    TrainingAttestation,
)
from reviews.selectors import Worksheet, worksheet_for


def _image(url: str, alt: str, height: int) -> str:
    return format_html('<img src="{}" alt="{}" style="max-height:{}px;max-width:100%">', url, alt, height)


def _thumbnail(data_uri: str | None, alt: str) -> str:
    if data_uri is None:
        return format_html('<span class="thumbnail-gone">{}: erased or purged</span>', alt)
    return format_html('<img src="{}" alt="{}" class="thumbnail">', data_uri, alt)


class ReviewFormBase(forms.ModelForm):
    """The reviewer's worksheet: FISWG components, a conclusion, a reason and the bias acknowledgement.

    With `compare_only`, only the components are asked for (the scores stay hidden until they are in).
    """

    conclusion = forms.ChoiceField(choices=Conclusion.choices, widget=forms.RadioSelect)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Required. Say which features agree or disagree, and why.",
    )
    bias_acknowledged = forms.BooleanField(
        label="I have read the bias warning above and weighed it in my decision.",
        error_messages={"required": "Acknowledge the bias warning before deciding."},
    )
    corrects = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = ReviewItem
        fields: list[str] = []

    compare_only = False
    blocked = False
    initial_features: dict[str, str] = {}
    corrects_initial: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, _ in FEATURES:
            self.fields[f"feature_{name}"].initial = self.initial_features.get(name)
        if "corrects" in self.fields:
            self.fields["corrects"].initial = self.corrects_initial
        if self.compare_only:
            for name in ("conclusion", "reason", "bias_acknowledged", "corrects"):
                del self.fields[name]
        if self.blocked:
            for field in self.fields.values():
                field.disabled = True
                field.required = False

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if len(reason) < 10:
            raise forms.ValidationError("Write a reason of at least a few words.")
        return reason

    def features(self) -> dict[str, str]:
        return {name: self.cleaned_data.get(f"feature_{name}", "") for name, _ in FEATURES}


# One radio row per FISWG component, declared on the class so the admin knows the fields.
ReviewForm = type(
    "ReviewForm",
    (ReviewFormBase,),
    {
        f"feature_{name}": forms.ChoiceField(label=label, choices=FeatureMark.choices, widget=forms.RadioSelect)
        for name, label in FEATURES
    },
)


class OpenFilter(admin.SimpleListFilter):
    """Open items this reviewer may still decide are the default view."""

    title = "items"
    parameter_name = "items"

    def lookups(self, request, model_admin):
        return [
            ("mine", "Mine to decide"),
            ("escalated", "Escalated"),
            ("open", "All open"),
            ("decided", "Closed"),
            ("all", "All"),
        ]

    def choices(self, changelist):
        value = self.value() or "mine"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or "mine"
        if value == "mine":
            return selectors.candidates_decidable_by(request.user, queryset)
        if value == "escalated":
            return queryset.filter(outcome=Outcome.ESCALATED)
        if value == "open":
            return queryset.open()
        if value == "decided":
            return queryset.decided()
        return queryset


class CaseFilter(admin.SimpleListFilter):
    """Lists only the cases in the reviewer's own queue; a plain field filter would list every organisation's."""

    title = "case"
    parameter_name = "case"
    # Beyond this many cases a list of links costs more to render than the page itself and helps nobody;
    # the search box (case reference or title) takes over.
    MAX_LISTED = 50

    def lookups(self, request, model_admin):
        # Cases with open items (closed ones stay reachable through "items"), found from the case side: a
        # DISTINCT over the candidates would read every one of them to list a handful of cases.
        open_items = model_admin.get_queryset(request).open().filter(case=OuterRef("pk"))
        cases = list(
            Case.objects.filter(organisation=access.organisation_of(request.user))
            .filter(Exists(open_items.order_by().values("pk")))
            .order_by()
            .values_list("id", "reference")[: self.MAX_LISTED + 1]
        )
        if len(cases) > self.MAX_LISTED:
            return []
        return sorted(cases, key=lambda pair: pair[1])

    def queryset(self, request, queryset):
        return queryset.filter(case_id=self.value()) if self.value() else queryset


class WaitingFilter(admin.SimpleListFilter):
    title = "waiting"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("day", "Under a day"), ("week", "1 to 7 days"), ("older", "Over 7 days")]

    def queryset(self, request, queryset):
        now = timezone.now()
        bounds = {
            "day": Q(created_at__gte=now - timedelta(days=1)),
            "week": Q(created_at__lt=now - timedelta(days=1), created_at__gte=now - timedelta(days=7)),
            "older": Q(created_at__lt=now - timedelta(days=7)),
        }
        return queryset.filter(bounds[self.value()]) if self.value() in bounds else queryset


class SeverityFilter(admin.SimpleListFilter):
    title = "warning severity"
    parameter_name = "severity"

    def lookups(self, request, model_admin):
        return Severity.choices

    def queryset(self, request, queryset):
        return queryset.filter(warning__severity=self.value()) if self.value() else queryset


class ClaimFilter(admin.SimpleListFilter):
    title = "claimed"
    parameter_name = "claimed"

    def lookups(self, request, model_admin):
        return [("me", "By me"), ("nobody", "By nobody"), ("others", "By others only")]

    def queryset(self, request, queryset):
        if self.value() == "me":
            return queryset.filter(claims__reviewer=request.user)
        if self.value() == "nobody":
            return queryset.filter(claims__isnull=True)
        if self.value() == "others":
            return queryset.filter(claims__isnull=False).exclude(claims__reviewer=request.user)
        return queryset


class QueueCountPaginator(Paginator):
    """Counts at most `cap` items: an exact count of a 100k-item queue reads all of it on every page view,
    and a reviewer works from the oldest item down. The queue's template says when the count stopped."""

    cap = 1000

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: self.cap].count()


@admin.register(ReviewItem)
class ReviewItemAdmin(ServiceErrorsAsMessages, DeclaredLookupsOnly, ScopedAdmin, admin.ModelAdmin):
    service_errors = (ServiceError,)
    form = ReviewForm
    list_display = [
        "id",
        "probe_thumb",
        "gallery_thumb",
        "case_reference",
        "rank_display",
        "distance_display",
        "severity",
        "outcome",
        "claimed_by",
        "waiting",
    ]
    list_display_links = ["id", "probe_thumb"]
    list_filter = [OpenFilter, CaseFilter, WaitingFilter, SeverityFilter, ClaimFilter]
    search_fields = ["case__reference", "case__title"]
    list_select_related = ["case", "search__face", "reference_face", "warning"]
    ordering = ["created_at", "id"]
    # The count of every row the reviewer may see is a second scan of the table on each page; "n results"
    # for the current filters is enough.
    show_full_result_count = False
    # Twelve columns of admin cells cost about 2 ms a row to render; a reviewer works from the oldest item
    # down, so a short page is the faster queue.
    list_per_page = 25
    paginator = QueueCountPaginator
    actions = ["claim"]
    view_check = staticmethod(access.can_review)
    add_check = staticmethod(lambda user: False)

    def get_queryset(self, request):
        # The queue's columns need only these; get_object adds the change form's joins. Those eleven joins
        # cost PostgreSQL's planner about 40 ms per page at 100k candidates, twenty times the query itself.
        return (
            super()
            .get_queryset(request)
            .select_related("case", "search", "warning")
            .prefetch_related("claims__reviewer")
        )

    def has_change_permission(self, request, obj=None) -> bool:
        if not access.can_review(request.user):
            return False
        return obj is None or obj.is_open

    def _scores_hidden(self, request) -> bool:
        organisation = access.organisation_of(request.user)
        return bool(organisation) and selectors.review_policy_for(organisation).hide_scores_until_compared

    # While scores are hidden the severity goes too: it comes from the error rate at the candidate's own
    # distance, so sorting or filtering by it would rank candidates by score.
    def get_list_display(self, request):
        hidden = self._scores_hidden(request)
        return [name for name in super().get_list_display(request) if not (hidden and name == "severity")]

    def get_list_filter(self, request):
        hidden = self._scores_hidden(request)
        return [f for f in super().get_list_filter(request) if not (hidden and f is SeverityFilter)]

    # What this user may see and do on one item

    def _worksheet(self, request, obj) -> Worksheet:
        """Worked out once per request and item: the admin asks for it from several hooks."""
        worksheets = request.__dict__.setdefault("review_worksheets", {})
        if obj.pk not in worksheets:
            correcting = request.GET.get("correct") is not None or bool(request.POST.get("corrects"))
            worksheets[obj.pk] = worksheet_for(request.user, obj, correcting=correcting)
        return worksheets[obj.pk]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            return form
        worksheet = self._worksheet(request, obj)
        comparison = FeatureComparison.objects.filter(candidate=obj, reviewer=request.user).first()
        attributes = {
            "compare_only": worksheet.compare_only,
            "blocked": bool(worksheet.blockers),
            "initial_features": comparison.features if comparison else {},
            "corrects_initial": request.GET.get("correct"),
        }
        return type("BoundReviewForm", (form,), attributes)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return super().get_fieldsets(request, obj)
        worksheet = self._worksheet(request, obj)
        search_fields = (
            ["threshold", "probe_quality"]
            if worksheet.hide_scores
            else [
                "rank_display",
                "distance_display",
                "threshold",
                "probe_quality",
            ]
        )
        fieldsets = [
            ("Bias warning", {"fields": ["bias_warning"]}),
            (None, {"fields": ["comparison"]}),
            ("Case", {"fields": ["case_summary"]}),
            ("Search", {"fields": search_fields}),
            ("Gallery subject", {"fields": ["subject_summary"]}),
            ("Decisions", {"fields": ["outcome", "history"]}),
        ]
        if self.has_change_permission(request, obj):
            features = [f"feature_{name}" for name, _ in FEATURES]
            fieldsets.append(("Your status", {"fields": ["your_status"]}))
            fieldsets.append(("Feature comparison (FISWG morphological analysis)", {"fields": features}))
            if not worksheet.compare_only:
                fieldsets.append(
                    ("Your decision", {"fields": ["conclusion", "reason", "bias_acknowledged", "corrects"]})
                )
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [
            "bias_warning",
            "comparison",
            "case_summary",
            "rank_display",
            "distance_display",
            "threshold",
            "probe_quality",
            "subject_summary",
            "outcome",
            "history",
            "your_status",
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {"title": "Review candidate", "show_save_and_continue": False, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        if form.compare_only:
            services.review_compare(candidate_id=obj.pk, features=form.features(), acting_user=request.user)
            request._review_compared = True
            return
        services.review_decide(
            candidate_id=obj.pk,
            acting_user=request.user,
            conclusion=form.cleaned_data["conclusion"],
            reason=form.cleaned_data["reason"],
            features=form.features(),
            bias_acknowledged=form.cleaned_data["bias_acknowledged"],
            corrects_id=form.cleaned_data.get("corrects"),
        )

    def response_change(self, request, obj):
        if getattr(request, "_review_compared", False):
            self.message_user(
                request, "Comparison recorded. The distance and rank are now shown; record your decision."
            )
            return HttpResponseRedirect(request.path)
        # Say what happened to the candidate, not the admin's "was changed successfully".
        obj.refresh_from_db(fields=["outcome"])
        mine = obj.decisions.filter(reviewer=request.user).order_by("-created_at", "-id").first()
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
        }[obj.outcome]
        self.message_user(request, f"Your decision on candidate {obj.pk} is recorded; {outcome}.", messages.SUCCESS)
        return self.response_post_save_change(request, obj)

    def log_change(self, request, obj, message):
        # The decision row and the audit log are the record; the admin's own log would say less.
        return None

    def changelist_view(self, request, extra_context=None):
        extra_context = {"title": "Review queue: candidates waiting for a decision", **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    @admin.action(description="Claim selected items (tell other reviewers you are working on them)")
    def claim(self, request, queryset) -> None:
        for item in queryset:
            try:
                services.review_claim(candidate_id=item.pk, acting_user=request.user)
            except ServiceError as error:
                self.message_user(request, f"Item {item.pk}: {error}", messages.ERROR)
        self.message_user(request, f"Claimed {queryset.count()} item(s).")

    # Columns and read-only fields

    @admin.display(description="probe")
    def probe_thumb(self, obj: ReviewItem) -> str:
        return _thumbnail(obj.thumbnails.get(obj.search.face_id), "probe face")

    @admin.display(description="gallery")
    def gallery_thumb(self, obj: ReviewItem) -> str:
        return _thumbnail(obj.thumbnails.get(obj.reference_face_id), "gallery face")

    @admin.display(description="case", ordering="case__reference")
    def case_reference(self, obj: ReviewItem) -> str:
        return obj.case.reference

    @admin.display(description="rank")
    def rank_display(self, obj: ReviewItem) -> str:
        return "hidden" if getattr(obj, "hide_scores", False) else str(obj.rank)

    @admin.display(description="distance")
    def distance_display(self, obj: ReviewItem) -> str:
        return "hidden" if getattr(obj, "hide_scores", False) else f"{obj.distance:.3f}"

    @admin.display(description="warning")
    def severity(self, obj: ReviewItem) -> str:
        warning = getattr(obj, "warning", None)
        if warning is None:
            return "—"
        return format_html(
            '<span class="severity severity-{}">{}</span>', warning.severity, warning.get_severity_display()
        )

    @admin.display(description="claimed by")
    def claimed_by(self, obj: ReviewItem) -> str:
        return ", ".join(claim.reviewer.get_username() for claim in obj.claims.all()) or "—"

    @admin.display(description="waiting")
    def waiting(self, obj: ReviewItem) -> str:
        if not obj.is_open:
            return "—"
        age = timezone.now() - obj.created_at
        css = "old" if age > timedelta(days=7) else "ageing" if age > timedelta(days=1) else "fresh"
        return format_html('<span class="waiting waiting-{}">{}</span>', css, timesince(obj.created_at, timezone.now()))

    @admin.display(description="threshold in use")
    def threshold(self, obj: ReviewItem) -> str:
        return f"{obj.search.threshold:.3f} (at most {obj.search.max_candidates} candidates)"

    @admin.display(description="probe face quality")
    def probe_quality(self, obj: ReviewItem) -> str:
        face = obj.search.face
        return f"{face.face_width}×{face.face_height} px face, sharpness {face.blur:.0f}, engine {face.engine_version}"

    @admin.display(description="what the audit says")
    def bias_warning(self, obj: ReviewItem) -> str:
        return bias_panel_html(obj, hide_scores=getattr(obj, "hide_scores", False))

    @admin.display(description="side by side")
    def comparison(self, obj: ReviewItem) -> str:
        probe, reference = obj.search.face, obj.reference_face
        caption = (
            "Gallery face"
            if getattr(obj, "hide_scores", False)
            else f"Gallery face (rank {obj.rank}, distance {obj.distance:.3f})"
        )
        return format_html(
            '<div class="comparison">'
            "<figure><figcaption>Probe face (case {})</figcaption>{}<br>{}</figure>"
            "<figure><figcaption>{}</figcaption>{}<br>{}</figure>"
            "</div>",
            obj.case.reference,
            _image(reverse("matching:face_crop", args=[probe.pk]), "probe face", 260),
            _image(reverse("matching:photo_image", args=[probe.photo_id]), "probe photo", 220),
            caption,
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

    @admin.display(description="your status")
    def your_status(self, obj: ReviewItem) -> str:
        worksheet = obj.worksheet
        lines = [f"Required confirmations: {worksheet.policy.required_confirmations}. {worksheet.training.message}"]
        if worksheet.blockers:
            lines.append("The decision controls are disabled: " + " ".join(worksheet.blockers))
        if worksheet.own_latest is not None and obj.is_open and not worksheet.correcting:
            url = reverse("admin:reviews_reviewitem_change", args=[obj.pk]) + f"?correct={worksheet.own_latest.pk}"
            lines.append(
                format_html(
                    'Made a mistake? <a href="{}">Record a correction</a> (your first decision stays on record).', url
                )
            )
        return format_html(
            '<div class="your-status">{}</div>', format_html_join("", "<p>{}</p>", ((line,) for line in lines))
        )

    @admin.display(description="decisions so far")
    def history(self, obj: ReviewItem) -> str:
        worksheet = obj.worksheet
        if worksheet.hidden_decisions:
            count = worksheet.hidden_decisions
            others = "1 other reviewer has" if count == 1 else f"{count} other reviewers have"
            return f"{others} decided. Blind review: you see their decisions once you record yours."
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

    def get_object(self, request, object_id, from_field=None):
        queryset = (
            self.get_queryset(request)
            .select_related(
                "case__organisation",
                "search__face__photo",
                "reference_face__photo",
                "subject",
                "outcome_by",
            )
            .defer("search__face__encoding", "reference_face__encoding")
        )
        field = self.model._meta.pk if from_field is None else self.model._meta.get_field(from_field)
        try:
            obj = queryset.get(**{field.name: field.to_python(object_id)})
        except (self.model.DoesNotExist, ValidationError, ValueError):
            obj = None
        if obj is not None:
            # The read-only fields above render from it; they are not given the request.
            obj.worksheet = self._worksheet(request, obj)
            obj.hide_scores = obj.worksheet.hide_scores
        return obj

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        hidden = self._scores_hidden(request)
        # The page's thumbnails come embedded, with their views logged in one INSERT (matching/thumbnails.py).
        items = list(changelist.result_list)
        face_ids = {item.search.face_id for item in items} | {item.reference_face_id for item in items}
        thumbnails = face_thumbnails(request.user, Face.objects.defer("encoding").filter(pk__in=face_ids))
        for item in items:
            item.hide_scores = hidden
            item.thumbnails = thumbnails
        return changelist


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(DeclaredLookupsOnly, ScopedAdmin, admin.ModelAdmin):
    """The decisions, read-only. Blind review holds here too: an org admin who may still decide a candidate
    sees none of its decisions (nor, while scores are hidden to them, the scores in the bias snapshots)."""

    organisation_path = "candidate__organisation"
    list_display = ["created_at", "candidate", "conclusion", "reviewer", "escalation", "corrects"]
    list_filter = ["conclusion", "escalation", "created_at"]
    list_select_related = ["candidate", "reviewer"]
    readonly_fields = [
        "candidate",
        "reviewer",
        "conclusion",
        "features",
        "reason",
        "bias_acknowledged",
        "training_valid_until",
        "escalation",
        "corrects",
        "bias_snapshot",
        "created_at",
    ]
    view_check = staticmethod(access.can_manage_organisation)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if access.is_superuser(request.user):
            return queryset
        return queryset.exclude(candidate__in=selectors.candidates_blind_to(request.user).values("pk")).exclude(
            candidate__in=selectors.candidates_scores_hidden_from(request.user).values("pk")
        )

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False


class PolicyForm(forms.ModelForm):
    class Meta:
        model = ReviewPolicy
        fields = ["required_confirmations", "hide_scores_until_compared", "training_valid_months", "senior_reviewer"]


@admin.register(ReviewPolicy)
class ReviewPolicyAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    service_errors = (ServiceError,)
    form = PolicyForm
    list_display = [
        "organisation",
        "required_confirmations",
        "hide_scores_until_compared",
        "training_valid_months",
        "senior_reviewer",
    ]
    view_check = change_check = staticmethod(access.can_manage_organisation)

    def has_add_permission(self, request) -> bool:
        # Until an admin first saves it the policy is the defaults, unsaved: adding it is that first save.
        organisation = access.organisation_of(request.user)
        return (
            organisation is not None
            and access.can_manage_organisation(request.user)
            and not ReviewPolicy.objects.filter(organisation=organisation).exists()
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "senior_reviewer":
            from django.contrib.auth import get_user_model

            organisation = access.organisation_of(request.user)
            kwargs["queryset"] = get_user_model().objects.filter(
                membership__organisation=organisation, membership__role__in=access.REVIEW_ROLES
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        policy = services.review_policy_update(
            organisation=obj.organisation if change else access.organisation_of(request.user),
            acting_user=request.user,
            **{field: form.cleaned_data[field] for field in form.changed_data},
        )
        obj.pk, obj.organisation = policy.pk, policy.organisation


class TrainingForm(forms.ModelForm):
    class Meta:
        model = TrainingAttestation
        fields = ["reviewer", "trained_on", "course"]


@admin.register(TrainingAttestation)
class TrainingAttestationAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    service_errors = (ServiceError,)
    form = TrainingForm
    list_display = ["reviewer", "trained_on", "course", "recorded_by", "created_at"]
    list_select_related = ["reviewer", "recorded_by"]
    view_check = add_check = staticmethod(access.can_manage_organisation)
    change_check = staticmethod(lambda user: False)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "reviewer":
            from django.contrib.auth import get_user_model

            # Reviewers and org admins only, never oneself: nobody attests their own training.
            kwargs["queryset"] = (
                get_user_model()
                .objects.filter(
                    membership__organisation=access.organisation_of(request.user),
                    membership__role__in=access.REVIEW_ROLES,
                    is_active=True,
                )
                .exclude(pk=request.user.pk)
                .exclude(api_keys__kind=ApiKeyKind.ORGANISATION)
                .order_by("username")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        created = services.training_record(
            organisation=access.organisation_of(request.user),
            reviewer=form.cleaned_data["reviewer"],
            trained_on=form.cleaned_data["trained_on"],
            course=form.cleaned_data["course"],
            acting_user=request.user,
        )
        obj.pk = created.pk


@admin.register(DisclosureReport)
class DisclosureReportAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    """Generating a report: choose the case; the worker writes the HTML and PDF."""

    service_errors = (ServiceError,)
    organisation_path = "case__organisation"
    list_display = ["case", "status", "requested_by", "created_at", "downloads"]
    list_select_related = ["case", "requested_by"]
    view_check = add_check = staticmethod(selectors.may_request_disclosure)
    change_check = staticmethod(lambda user: False)

    def get_fields(self, request, obj=None):
        return ["case"] if obj is None else self.get_readonly_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["case", "status", "failure_reason", "requested_by", "created_at", "finished_at", "downloads"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "case":
            from matching.models import Case

            kwargs["queryset"] = Case.objects.filter(organisation=access.organisation_of(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        from reviews.disclosure import disclosure_request

        created = disclosure_request(case=form.cleaned_data["case"], acting_user=request.user)
        obj.pk = created.pk

    @admin.display(description="download")
    def downloads(self, obj: DisclosureReport) -> str:
        if obj.status != "done":
            return obj.get_status_display()
        return format_html(
            '<a href="{}">HTML</a> · <a href="{}">PDF</a>',
            reverse("reviews:disclosure_download", args=[obj.pk, "html"]),
            reverse("reviews:disclosure_download", args=[obj.pk, "pdf"]),
        )
