"""The reviewer's workbench, as admin wiring: the forms are in `reviews.forms`, the queue's filters in
`reviews.admin_filters`, what the pages show in `reviews.admin_display`, reads in `reviews.selectors` and
writes in `reviews.services`."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse

from matching.models import Case, Face
from matching.services import ServiceError
from matching.thumbnails import face_thumbnails
from portal import access
from portal.admin_mixins import DeclaredLookupsOnly, ScopedAdmin, ServiceErrorsAsMessages
from reviews import admin_display as show
from reviews import selectors, services
from reviews.admin_filters import (
    CaseFilter,
    ClaimFilter,
    OpenFilter,
    QueueCountPaginator,
    SeverityFilter,
    WaitingFilter,
)
from reviews.forms import PolicyForm, ReviewForm, TrainingForm
from reviews.models import (
    DisclosureReport,
    ReviewDecision,
    ReviewItem,
    ReviewPolicy,
    TrainingAttestation,
)


@admin.register(ReviewItem)
class ReviewItemAdmin(ServiceErrorsAsMessages, DeclaredLookupsOnly, ScopedAdmin, admin.ModelAdmin):
    service_errors = (ServiceError,)
    # It reads what varies by reviewer and item from `obj.worksheet`, which `get_object` sets.
    form = ReviewForm
    list_display = [
        "id",
        show.probe_thumb,
        show.gallery_thumb,
        show.case_reference,
        show.rank_display,
        show.distance_display,
        show.severity,
        "outcome",
        show.claimed_by,
        show.waiting,
    ]
    list_display_links = ["id", show.probe_thumb]
    list_filter = [OpenFilter, CaseFilter, WaitingFilter, SeverityFilter, ClaimFilter]
    search_fields = ["case__reference", "case__title"]
    ordering = ["created_at", "id"]
    # The count of every row the reviewer may see is a second scan of the table on each page; "n results"
    # for the current filters is enough.
    show_full_result_count = False
    # Ten columns of admin cells cost about 2 ms a row to render; a reviewer works from the oldest item
    # down, so a short page is the faster queue.
    list_per_page = 25
    paginator = QueueCountPaginator
    actions = ["claim"]
    # The faces and the worksheet are drawn by the change form's template; these are the details below them.
    fieldsets = [
        ("Bias warning", {"fields": [show.bias_warning]}),
        ("Case", {"fields": [show.case_summary]}),
        ("Search", {"fields": [show.rank_display, show.distance_display, show.threshold, show.probe_quality]}),
        ("Gallery subject", {"fields": [show.subject_summary]}),
        ("Decisions", {"fields": ["outcome", show.history]}),
    ]
    readonly_fields = flatten_fieldsets(fieldsets)
    view_check = staticmethod(access.can_review)
    add_check = staticmethod(lambda user: False)

    def get_queryset(self, request):
        # The queue's columns need only these (the thumbnails' faces come in one query of their own, and the
        # changelist adds no list_select_related to a queryset that has its own); get_object adds the change
        # form's joins. Those eleven joins
        # cost PostgreSQL's planner about 40 ms per page at 100k candidates, twenty times the query itself.
        return super().get_queryset(request).select_related("case", "search", "warning")

    def get_changelist(self, request, **kwargs):
        return QueueChangeList

    def has_change_permission(self, request, obj=None) -> bool:
        return access.can_review(request.user) and (obj is None or obj.is_open)

    def _scores_hidden(self, request) -> bool:
        organisation = access.organisation_of(request.user)
        return bool(organisation) and selectors.review_policy_for(organisation).hide_scores_until_compared

    # While scores are hidden the severity goes too: it comes from the error rate at the candidate's own
    # distance, so sorting or filtering by it would rank candidates by score.
    def get_list_display(self, request):
        hidden = self._scores_hidden(request)
        return [name for name in super().get_list_display(request) if not (hidden and name is show.severity)]

    def get_list_filter(self, request):
        hidden = self._scores_hidden(request)
        return [f for f in super().get_list_filter(request) if not (hidden and f is SeverityFilter)]

    def get_fieldsets(self, request, obj=None):
        if obj is not None and obj.worksheet.analyse_only:
            # ACE-V: the probe is judged on its own; nothing of the candidate (subject, scores, the panel about
            # the subject's groups) is shown before the analysis is recorded.
            return [(name, spec) for name, spec in self.fieldsets if name == "Case"]
        if obj is None or not obj.worksheet.hide_scores:
            return self.fieldsets
        scores = {show.rank_display, show.distance_display}
        return [(name, {"fields": [f for f in spec["fields"] if f not in scores]}) for name, spec in self.fieldsets]

    def get_object(self, request, object_id, from_field=None):
        # Only what this page reads of every item: the warning row is the queue's filter (the page works its bias
        # panel out afresh) and who settled a closed item is read only once it is closed. Planning those two joins
        # took PostgreSQL longer than executing the whole query.
        queryset = (
            self.get_queryset(request).select_related(None).select_related("case__organisation", "search", "subject")
        )
        field = self.model._meta.pk if from_field is None else self.model._meta.get_field(from_field)
        try:
            obj = queryset.get(**{field.name: field.to_python(object_id)})
        except (self.model.DoesNotExist, ValidationError, ValueError):
            return None
        # The two faces with their photos, by primary key: joined to the query above they made eleven tables,
        # which took PostgreSQL's planner 8 ms for 1 ms of execution.
        faces = (
            Face.objects.select_related("photo").defer("encoding").in_bulk([obj.search.face_id, obj.reference_face_id])
        )
        obj.search.face, obj.reference_face = faces[obj.search.face_id], faces[obj.reference_face_id]
        # Worked out once: the form, the fieldsets, the template and the read-only fields all read it from obj,
        # which Django passes on from here to the form, save_model and response_change.
        correction_of = request.GET.get("correct")
        correcting = correction_of is not None or bool(request.POST.get("corrects"))
        obj.worksheet = selectors.worksheet_for(request.user, obj, correcting=correcting, correction_of=correction_of)
        obj.hide_scores = obj.worksheet.hide_scores
        return obj

    def get_urls(self):
        # Before the admin's own: its catch-all `<object_id>/` would take these.
        view = self.admin_site.admin_view(self.neighbour_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<int:object_id>/previous/", view, {"later": False}, name=f"{name}_previous"),
            path("<int:object_id>/next/", view, {"later": True}, name=f"{name}_next"),
            *super().get_urls(),
        ]

    def neighbour_view(self, request, object_id: int, later: bool):
        """The candidate page's "previous" and "next": the item before or after this one in the reviewer's queue,
        found when they move (j and k) rather than on every page."""
        candidate = self.get_queryset(request).filter(pk=object_id).first()
        if candidate is None or not self.has_view_permission(request, candidate):
            raise Http404
        target = selectors.queue_neighbour(request.user, candidate, later=later)
        if target is None:
            self.message_user(request, f"No {'later' if later else 'earlier'} item in your queue.", messages.WARNING)
            target = candidate.pk
        return HttpResponseRedirect(reverse("admin:reviews_reviewitem_change", args=[target]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {"title": "Review candidate", "show_save_and_continue": False, **(extra_context or {})}
        return _read_only_page(
            request, lambda: super(ReviewItemAdmin, self).change_view(request, object_id, form_url, extra_context)
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(show.bench_context(request.user, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change) -> None:
        if obj.worksheet.analyse_only:
            services.probe_analyse(candidate_id=obj.pk, acting_user=request.user, **form.analysis())
            return
        if obj.worksheet.compare_only:
            services.review_compare(candidate_id=obj.pk, acting_user=request.user, **form.comparison())
            return
        services.review_decide(candidate_id=obj.pk, acting_user=request.user, **form.decision())

    def response_change(self, request, obj):
        if obj.worksheet.analyse_only:
            obj.refresh_from_db(fields=["outcome"])
            if not obj.is_open:
                self.message_user(request, show.unsuitable_message(obj), messages.WARNING)
                return HttpResponseRedirect(reverse("admin:reviews_reviewitem_changelist"))
            self.message_user(request, "Analysis recorded. Now compare the faces.")
            return HttpResponseRedirect(request.path)
        if obj.worksheet.compare_only:
            self.message_user(
                request, "Comparison recorded. The distance and rank are now shown; record your decision."
            )
            return HttpResponseRedirect(request.path)
        self.message_user(request, show.decision_message(request.user, obj), messages.SUCCESS)
        return self.response_post_save_change(request, obj)

    def log_change(self, request, obj, message):
        # The decision row and the audit log are the record; the admin's own log would say less.
        return None

    def changelist_view(self, request, extra_context=None):
        extra_context = {"title": "Review queue: candidates waiting for a decision", **(extra_context or {})}
        return _read_only_page(request, lambda: super(ReviewItemAdmin, self).changelist_view(request, extra_context))

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        hidden = self._scores_hidden(request)
        # The page's thumbnails come embedded, with their views logged in one INSERT (matching/thumbnails.py).
        items = list(changelist.result_list)
        claimers = selectors.queue_claimers(item.pk for item in items)
        # Scores show on an item once this reviewer has recorded its comparison; the gallery face once they
        # have analysed its probe (ACE-V: the probe is judged before any candidate is seen).
        compared, analysed = selectors.queue_reveals(request.user, items)
        for item in items:
            item.hide_scores = hidden and item.pk not in compared
            item.hide_gallery = item.pk not in analysed
            item.claimers = claimers.get(item.pk, [])
        face_ids = {item.search.face_id for item in items} | {
            item.reference_face_id for item in items if not item.hide_gallery
        }
        faces = Face.objects.only("id", "organisation_id", "subject_id", "purged_at", "crop", "thumbnail")
        thumbnails = face_thumbnails(request.user, faces.filter(pk__in=face_ids))
        for item in items:
            item.thumbnails = thumbnails
        return changelist

    @admin.action(description="Claim selected items (tell other reviewers you are working on them)")
    def claim(self, request, queryset) -> None:
        for item in queryset:
            try:
                services.review_claim(candidate_id=item.pk, acting_user=request.user)
            except ServiceError as error:
                self.message_user(request, f"Item {item.pk}: {error}", messages.ERROR)
        self.message_user(request, f"Claimed {queryset.count()} item(s).")


# What the queue's columns (reviews.admin_display), its links and its reveals read of an item; the claims come in a
# query of their own (`selectors.queue_claimers`).
QUEUE_COLUMNS = [
    "id",
    "search__face_id",
    "case__reference",
    "reference_face_id",
    "rank",
    "distance",
    "outcome",
    "created_at",
    "warning__severity",
]


class QueueChangeList(ChangeList):
    """The queue's rows read only the columns it shows."""

    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).only(*QUEUE_COLUMNS)


def _read_only_page(request, view):
    """A GET renders inside `selectors.reads_once()` (its template too, which TemplateResponse would otherwise
    render after the view returns): the policy and the reviewer's training are read once for the page. A POST
    decides, and reads what it wrote."""
    if request.method not in ("GET", "HEAD"):
        return view()
    with selectors.reads_once():
        response = view()
        if hasattr(response, "render") and not getattr(response, "is_rendered", True):
            response.render()
    return response


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


@admin.register(ReviewPolicy)
class ReviewPolicyAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    service_errors = (ServiceError,)
    form = PolicyForm
    list_display = ["organisation", *PolicyForm.Meta.fields]
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
            kwargs["queryset"] = selectors.senior_reviewer_choices(access.organisation_of(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        policy = services.review_policy_update(
            organisation=obj.organisation if change else access.organisation_of(request.user),
            acting_user=request.user,
            **{field: form.cleaned_data[field] for field in form.changed_data},
        )
        obj.pk, obj.organisation = policy.pk, policy.organisation


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
            kwargs["queryset"] = selectors.training_attestable_by(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        organisation = access.organisation_of(request.user)
        created = services.training_record(organisation=organisation, acting_user=request.user, **form.cleaned_data)
        obj.pk = created.pk


@admin.register(DisclosureReport)
class DisclosureReportAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    """Generating a report: choose the case; the worker writes the HTML and PDF."""

    service_errors = (ServiceError,)
    organisation_path = "case__organisation"
    list_display = ["case", "status", "requested_by", "created_at", show.downloads]
    list_select_related = ["case", "requested_by"]
    view_check = add_check = staticmethod(selectors.may_request_disclosure)
    change_check = staticmethod(lambda user: False)

    def get_fields(self, request, obj=None):
        return ["case"] if obj is None else self.get_readonly_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["case", "status", "failure_reason", "requested_by", "created_at", "finished_at", show.downloads]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "case":
            kwargs["queryset"] = Case.objects.filter(organisation=access.organisation_of(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change) -> None:
        from reviews.disclosure import disclosure_request

        created = disclosure_request(case=form.cleaned_data["case"], acting_user=request.user)
        obj.pk = created.pk
