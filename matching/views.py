from __future__ import annotations

import csv
from functools import wraps
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods

from matching import bulk, selectors, services
from matching.accuracy import evaluation, findings, gallery_risk
from matching.accuracy.charts import error_rate_chart, tradeoff_chart
from matching.bulk import BulkRejected
from matching.forms import (
    AuditUploadForm,
    BulkEnrolForm,
    CaseForm,
    GalleryForm,
    OrganisationSettingsForm,
    SubjectForm,
    ThresholdConfirmForm,
)
from matching.models import AuditDataset, AuditRun, EnrolmentBatch, Face, Gallery, Photo
from portal import access
from portal.audit import audit_record, audit_view_record
from portal.services import organisation_update

CASES_PER_PAGE = 50


def role_required(check):
    def decorator(view):
        @login_required
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not check(request.user):
                # 404, not 403: a page outside one's role is not confirmed to exist.
                raise Http404
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _case_or_404(request, case_id: int):
    return get_object_or_404(
        selectors.cases_for(request.user).select_related("created_by", "closed_by", "organisation"), pk=case_id
    )


@role_required(access.can_work_cases)
@require_GET
def case_list(request):
    query = request.GET.get("q", "").strip()[:100]
    cases = selectors.cases_for(request.user).select_related("created_by").order_by("-created_at", "-id")
    if query:
        cases = cases.filter(Q(reference__icontains=query) | Q(title__icontains=query))
    # get_page turns a page number that is not a number, or is past the end, into the nearest page.
    page = Paginator(cases, CASES_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "matching/case_list.html",
        {"page": page, "rows": selectors.case_list_rows(list(page.object_list)), "query": query},
    )


@role_required(access.can_work_cases)
@require_http_methods(["GET", "POST"])
def case_create(request):
    form = CaseForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            case = services.case_create(
                organisation=access.organisation_of(request.user),
                acting_user=request.user,
                reference=data["reference"],
                title=data["title"],
                description=data["description"],
                purpose=data["purpose"],
                probe_sex=data["probe_sex"],
                probe_age_band=data["probe_age_band"],
                probe_ethnicity=data["probe_ethnicity"],
                photos=data["photos"],
                captured_on=data["captured_on"],
            )
        except services.ServiceError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Case created. Its photos are being processed.")
            return redirect("matching:case_detail", case_id=case.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "matching/case_form.html", {"form": form}, status=status)


@role_required(access.can_work_cases)
@require_GET
def case_detail(request, case_id: int):
    case = _case_or_404(request, case_id)
    photos = list(selectors.case_photos(case))
    for photo in photos:
        # What a reviewer's analysis found, for a photo judged unsuitable for comparison (rarely any).
        photo.unsuitable_reasons = selectors.photo_unsuitable_reasons(photo) if photo.unsuitable_faces else []
    return render(
        request,
        "matching/case_detail.html",
        {
            "case": case,
            "photos": photos,
            "matches": selectors.case_confirmed_matches(case),
            "counts": selectors.case_candidate_counts(case),
            "may_close": access.can_close_case(request.user),
            "may_reopen": access.can_reopen_case(request.user),
        },
    )


@role_required(access.can_close_case)
@require_http_methods(["POST"])
def case_close(request, case_id: int):
    case = _case_or_404(request, case_id)
    try:
        case = services.case_close(case=case, acting_user=request.user, reason=request.POST.get("reason", ""))
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        due = case.purge_due_at
        messages.success(
            request,
            f"Case closed. Its photos, crops and encodings will be purged on {due:%Y-%m-%d %H:%M %Z}."
            if due
            else "Case closed. The organisation keeps no retention period, so its photos stay until erased.",
        )
    return redirect("matching:case_detail", case_id=case.pk)


@role_required(access.can_work_cases)
@require_http_methods(["POST"])
def case_reopen(request, case_id: int):
    case = _case_or_404(request, case_id)
    if not access.can_reopen_case(request.user):
        raise Http404
    try:
        services.case_reopen(case=case, acting_user=request.user, reason=request.POST.get("reason", ""))
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Case reopened. Nothing will be purged while it is open.")
    return redirect("matching:case_detail", case_id=case.pk)


@role_required(access.can_work_cases)
@require_GET
def case_status(request, case_id: int):
    case = _case_or_404(request, case_id)
    photos = [
        {
            "id": photo.pk,
            "status": photo.status,
            "status_display": "No face found" if photo.no_face else photo.get_status_display(),
            "failure_reason": photo.NO_FACE_NOTICE if photo.no_face else photo.failure_reason,
            "no_face": photo.no_face,
            "faces": photo.face_count,
            "finished": photo.is_finished,
        }
        for photo in selectors.case_photos(case)
    ]
    return JsonResponse(
        {
            "photos": photos,
            "counts": selectors.case_candidate_counts(case),
            "finished": all(p["finished"] for p in photos),
        }
    )


def _gone() -> HttpResponse:
    """An image that was erased or purged: 410, said only to someone who may see the row, so nothing leaks."""
    response = HttpResponse("This image was erased or purged.", status=410, content_type="text/plain")
    response["Cache-Control"] = "private, no-store"
    return response


def _private_image(field_file) -> FileResponse:
    # An erased or purged photo keeps its row with an empty file name, which Django's FieldFile refuses
    # to open with a ValueError; both that and a file gone from storage are simply not there any more.
    if not field_file:
        raise Http404
    try:
        handle = field_file.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404 from None
    response = FileResponse(handle, content_type="image/jpeg")
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def photo_image(request, photo_id: int):
    photo = get_object_or_404(Photo, pk=photo_id)
    if not selectors.may_view_photo(request.user, photo):
        raise Http404
    if photo.purged_at is not None or not photo.image:
        return _gone()
    # No chain lock per image: a queue page is fifty of these (see portal/audit.py).
    audit_view_record(action="media.photo", actor=request.user, organisation_id=photo.organisation_id, target=photo)
    return _private_image(photo.image)


@login_required
@require_GET
def face_crop(request, face_id: int):
    face = get_object_or_404(Face.objects.defer("encoding"), pk=face_id)
    if not selectors.may_view_face(request.user, face):
        raise Http404
    if not face.crop or not Face.objects.live().filter(pk=face.pk).exists():
        return _gone()
    audit_view_record(action="media.face", actor=request.user, organisation_id=face.organisation_id, target=face)
    return _private_image(face.crop)


@login_required
@require_GET
def face_aligned(request, face_id: int):
    """The face turned and scaled to fixed eye positions, for the reviewer's side-by-side comparison.

    The same checks and log row as the crop: it shows the same face, only from the photo it came from."""
    from matching.alignment import aligned_face_jpeg

    face = get_object_or_404(Face.objects.defer("encoding").select_related("photo"), pk=face_id)
    if not selectors.may_view_face(request.user, face):
        raise Http404
    photo = face.photo
    if not photo.image or not Face.objects.live().filter(pk=face.pk).exists():
        return _gone()
    if face.aligned:
        # Made when the face was detected; the fallback below is for faces detected before that.
        audit_view_record(action="media.face", actor=request.user, organisation_id=face.organisation_id, target=face)
        return _private_image(face.aligned)
    try:
        handle = photo.image.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404 from None
    with handle:
        jpeg = aligned_face_jpeg(handle, (face.top, face.right, face.bottom, face.left))
    audit_view_record(action="media.face", actor=request.user, organisation_id=face.organisation_id, target=face)
    response = HttpResponse(jpeg, content_type="image/jpeg")
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


# Galleries (org admins)


def _gallery_or_404(request, gallery_id: int) -> Gallery:
    gallery = get_object_or_404(Gallery.objects.select_related("organisation"), pk=gallery_id)
    access.require_same_organisation(request.user, gallery.organisation_id)
    return gallery


@role_required(access.can_manage_galleries)
@require_http_methods(["GET", "POST"])
def gallery_list(request):
    organisation = access.organisation_of(request.user)
    form = GalleryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            gallery = services.gallery_create(organisation=organisation, acting_user=request.user, **form.cleaned_data)
        except services.ServiceError as error:
            form.add_error("name", str(error))
        else:
            return redirect("matching:gallery_detail", gallery_id=gallery.pk)
    galleries = selectors.galleries_for(organisation)
    status = 400 if request.method == "POST" else 200
    return render(request, "matching/gallery_list.html", {"galleries": galleries, "form": form}, status=status)


@role_required(access.can_manage_galleries)
@require_http_methods(["GET", "POST"])
def gallery_detail(request, gallery_id: int):
    gallery = _gallery_or_404(request, gallery_id)
    subject_form = SubjectForm(prefix="subject")
    bulk_form = BulkEnrolForm(prefix="bulk")
    status = 200
    if request.method == "POST" and "subject-code" in request.POST:
        subject_form = SubjectForm(request.POST, request.FILES, prefix="subject")
        if subject_form.is_valid():
            try:
                services.subject_enrol(gallery=gallery, acting_user=request.user, **subject_form.cleaned_data)
            except services.ServiceError as error:
                subject_form.add_error(None, str(error))
            else:
                messages.success(request, "Subject enrolled. The photos are being processed.")
                return redirect("matching:gallery_detail", gallery_id=gallery.pk)
        status = 400
    elif request.method == "POST":
        bulk_form = BulkEnrolForm(request.POST, request.FILES, prefix="bulk")
        if bulk_form.is_valid():
            try:
                batch = services.enrolment_batch_create(
                    gallery=gallery,
                    archive=bulk_form.cleaned_data["archive"],
                    manifest=bulk_form.cleaned_data["manifest"],
                    acting_user=request.user,
                )
            except BulkRejected as error:
                bulk_form.add_error(None, str(error))
            else:
                return redirect("matching:batch_detail", batch_id=batch.pk)
        status = 400
    return render(
        request,
        "matching/gallery_detail.html",
        {
            "gallery": gallery,
            "subjects": selectors.gallery_subjects(gallery),
            "batches": gallery.batches.all()[:20],
            "subject_form": subject_form,
            "bulk_form": bulk_form,
        },
        status=status,
    )


@role_required(access.can_manage_galleries)
@require_GET
def batch_detail(request, batch_id: int):
    batch = get_object_or_404(EnrolmentBatch.objects.select_related("gallery"), pk=batch_id)
    access.require_same_organisation(request.user, batch.gallery.organisation_id)
    if request.GET.get("format") == "json":
        return JsonResponse(batch.progress())
    return render(request, "matching/batch_detail.html", {"batch": batch})


# Bias audits (org admins and reviewers) and organisation settings (org admins)


@role_required(access.can_read_audits)
@require_http_methods(["GET", "POST"])
def audit_list(request):
    organisation = access.organisation_of(request.user)
    form = AuditUploadForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        if not access.can_manage_organisation(request.user):
            raise Http404
        if form.is_valid():
            try:
                dataset = evaluation.audit_dataset_create(
                    name=form.cleaned_data["name"],
                    organisation=None
                    if form.cleaned_data["shared"] and access.is_superuser(request.user)
                    else organisation,
                    manifest=bulk.upload_read(form.cleaned_data["manifest"], limit=5 * 2**20, label="The manifest"),
                    archive=bulk.upload_read(
                        form.cleaned_data["archive"], limit=settings.BULK_MAX_BYTES, label="The zip file"
                    ),
                    acting_user=request.user,
                )
            except (evaluation.AuditError, BulkRejected) as error:
                form.add_error(None, str(error))
            else:
                return redirect("matching:audit_dataset", dataset_id=dataset.pk)
        status = 400
    validity = evaluation.audit_validity(organisation)
    return render(
        request,
        "matching/audit_list.html",
        {
            "datasets": evaluation.datasets_for(organisation)[:50],
            "runs": evaluation.runs_for(organisation)[:50],
            "validity": validity,
            "form": form,
        },
        status=status,
    )


@role_required(access.can_read_audits)
@require_GET
def audit_dataset(request, dataset_id: int):
    dataset = get_object_or_404(AuditDataset, pk=dataset_id)
    if dataset.organisation_id is not None:
        access.require_same_organisation(request.user, dataset.organisation_id)
    if request.GET.get("format") == "json":
        return JsonResponse(dataset.progress())
    runs = dataset.runs.filter(organisation=access.organisation_of(request.user))
    return render(request, "matching/audit_dataset.html", {"dataset": dataset, "runs": runs})


def _run_or_404(request, run_id: int) -> AuditRun:
    run = get_object_or_404(AuditRun.objects.select_related("dataset", "organisation"), pk=run_id)
    access.require_same_organisation(request.user, run.organisation_id)
    return run


@role_required(access.can_read_audits)
@require_GET
def audit_report(request, run_id: int):
    run = _run_or_404(request, run_id)
    document = evaluation.audit_run_document(run)
    at = run.threshold_in_use
    for group in document["groups"]:
        group["in_use"] = next((r for r in group["rates"] if abs(r["threshold"] - at) < 1e-9), None)
        group["level"] = group["key"].count("&") + (0 if group["key"] != "all" else -1)
    singles = [g for g in document["groups"] if g["level"] <= 0]
    drawn = [g for g in singles if not g["insufficient"]]
    not_drawn = [
        (g["key"], "insufficient data: " + "; ".join(g["insufficient_reasons"])) for g in singles if g["insufficient"]
    ] + [
        (g["key"], "an intersection of two attributes: drawn as a row of the table below, not a line")
        for g in document["groups"]
        if g["level"] > 0
    ]
    chart = error_rate_chart(
        [(g["key"], [(r["threshold"], r["fmr"], r["fnmr"]) for r in g["rates"]]) for g in drawn],
        threshold_in_use=at,
    )
    ranked = [g for g in document["groups"] if g["level"] >= 0 and not g["insufficient"]]
    return render(
        request,
        "matching/audit_report.html",
        {
            "run": run,
            "document": document,
            "singles": singles,
            "pairs": [g for g in document["groups"] if g["level"] > 0],
            "chart": mark_safe(chart),
            "not_drawn": not_drawn,
            "disparity": document["fmr_max_to_geomean"],
            "advice": evaluation.threshold_advice(run),
            # What this run says of the reader's own gallery: the threshold /settings/ would propose from it.
            "point": gallery_risk.operating_point_for(
                gallery_risk.threshold_consequences(access.organisation_of(request.user), run=run)
            ),
            "everyone": next((g for g in document["groups"] if g["key"] == "all"), None),
            "worst_groups": _worst_groups(ranked),
            "unranked": sum(1 for g in document["groups"] if g["level"] >= 0 and g["insufficient"]),
        },
    )


# The report's summary names this many groups; every group is in the tables below it.
WORST_GROUPS_SHOWN = 5


def _worst_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups with enough data whose FMR at the run's threshold is highest, as the run document states it."""
    measured = [g for g in groups if g["in_use"] is not None and g["in_use"]["fmr"] is not None]
    return sorted(measured, key=lambda g: (-g["in_use"]["fmr"], g["key"]))[:WORST_GROUPS_SHOWN]


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection); a quote in front makes
# it text. Group keys carry the evaluation set's column names and values, which its uploader chose.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


@role_required(access.can_read_audits)
@require_GET
def audit_report_download(request, run_id: int, fmt: str):
    # Only these two: `fmt` also names the saved file, so anything else could forge it.
    if fmt not in ("csv", "json"):
        raise Http404("No such format.")
    run = _run_or_404(request, run_id)
    document = evaluation.audit_run_document(run)
    if fmt == "json":
        # What this run says a search of the reader's gallery means now (1:N): not part of the stored run.
        document["one_to_many"] = gallery_risk.one_to_many_document(access.organisation_of(request.user), run=run)
    audit_record(
        action="audit.export", actor=request.user, organisation=run.organisation, target=run, detail={"format": fmt}
    )
    if fmt == "json":
        response = JsonResponse(document, json_dumps_params={"indent": 2})
    else:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        writer = csv.writer(response)
        writer.writerow(
            [
                "group",
                "identities",
                "photos",
                "impostor_pairs",
                "genuine_pairs",
                "insufficient",
                "threshold",
                "false_matches",
                "fmr",
                "fmr_low",
                "fmr_high",
                "false_non_matches",
                "fnmr",
                "fnmr_low",
                "fnmr_high",
                "fmr_ratio_to_best",
            ]
        )
        for group in document["groups"]:
            for rate in group["rates"]:
                writer.writerow(
                    [
                        csv_cell(group["key"]),
                        group["identities"],
                        group["photos"],
                        group["impostor_pairs"],
                        group["genuine_pairs"],
                        group["insufficient"],
                        rate["threshold"],
                        rate["false_matches"],
                        rate["fmr"],
                        *rate["fmr_ci95"],
                        rate["false_non_matches"],
                        rate["fnmr"],
                        *rate["fnmr_ci95"],
                        rate["fmr_ratio_to_best"],
                    ]
                )
    response["Content-Disposition"] = f'attachment; filename="audit-{run.pk}.{fmt}"'
    return response


def _settings_context(organisation, proposed: float) -> dict:
    """What the settings page shows of a threshold's consequences, from stored audit rows and gallery counts."""
    consequences = gallery_risk.threshold_consequences(organisation)
    point = gallery_risk.operating_point_for(consequences)
    context = {
        "validity": evaluation.audit_validity(organisation),
        "consequences": consequences,
        "run": consequences.run,
        "point": point,
        "proposed": proposed,
        "alarm": consequences.alarm,
        "findings": findings.review_findings(organisation, consequences),
        "min_effective_searches": settings.AUDIT_MIN_EFFECTIVE_SEARCHES,
    }
    model = consequences.model
    if model is None:
        return context
    in_use = organisation.distance_threshold
    columns = sorted({in_use, proposed, *([point.proposed] if point.proposed is not None else [])})
    everyone = consequences.everyone_members
    rows = [("anyone (a stranger of any group)", gallery_risk.EVERYONE, everyone)]
    singles = sorted((g for g, _ in consequences.groups if len(g.attributes) == 1), key=lambda g: g.key)
    members = {g.key: m for g, m in consequences.groups}
    rows += [(gallery_risk.describe(g.attributes), g.key, members[g.key]) for g in singles]
    context["columns"] = columns
    context["rows"] = [
        {"words": words, "key": key, "people": int(m.size), "figures": [model.group(m, t) for t in columns]}
        for words, key, m in rows
    ]
    curve = gallery_risk.CURVE_THRESHOLDS

    def walk(m):
        return [(t, f.fnir, f.fpir if not f.insufficient else None) for t, f in ((t, model.group(m, t)) for t in curve)]

    drawn = [g for g in singles if model.group(members[g.key], in_use).measured]
    context["chart"] = mark_safe(
        tradeoff_chart(
            [(gallery_risk.describe(g.attributes), walk(members[g.key])) for g in drawn],
            everyone=walk(everyone),
            in_use=in_use,
            proposed=point.proposed,
            ceiling=consequences.ceiling,
        )
    )
    context["table_thresholds"] = gallery_risk.TABLE_THRESHOLDS
    context["per_group"] = [
        {
            "key": key,
            "people": int(m.size),
            "figures": [model.group(m, t) for t in gallery_risk.TABLE_THRESHOLDS],
        }
        for key, m in [(gallery_risk.EVERYONE, everyone), *((g.key, m) for g, m in consequences.groups)]
    ]
    context["strata"] = model.strata
    return context


# The settings page's own steps. (Forms of their own would sit in forms.py; they are kept beside the one view that
# uses them until that module is free to change.)


class PolicyForm(OrganisationSettingsForm):
    """The plain policy: the threshold and the candidates per face are confirmed, not saved."""

    distance_threshold = None
    max_candidates = None


class OperatingPointForm(ThresholdConfirmForm):
    field_order = ["threshold", "max_candidates", "understood"]
    max_candidates = forms.IntegerField(
        label="Candidates listed per face, at most",
        min_value=1,
        max_value=50,
        required=False,
        help_text="The figures on this page count someone enrolled as found whenever their photo is within the "
        "threshold; with fewer places, a true match can also be pushed off the list by closer strangers.",
    )


class RetentionForm(forms.Form):
    retention_days = forms.IntegerField(
        label="Retention period (days after a case is closed; empty: none)",
        min_value=0,
        max_value=services.RETENTION_MAX_DAYS,
        required=False,
    )


class RetentionChangeForm(RetentionForm):
    understood = forms.BooleanField(
        label="I have read what this change does to the closed cases listed above", required=True
    )


def _retention_preview(organisation, form: RetentionForm) -> dict | None:
    """What the period in a bound form would do to closed cases; None while there is no valid period to show."""
    if not form.is_bound or (not form.is_valid() and "retention_days" in form.errors):
        return None
    days = form.cleaned_data["retention_days"]
    if days == organisation.retention_days:
        return {"days": days, "unchanged": True}
    return {"days": days, **services.retention_change_effect(organisation=organisation, retention_days=days)}


def _retention_message(previous: int | None, days: int | None, effect: dict) -> str:
    def period(value: int | None) -> str:
        return "none" if value is None else f"{value} days"

    def cases(kind: str, verb: str, verbs: str) -> str:
        n = len(effect[kind])
        return f"{n} closed case{'' if n == 1 else 's'} {verb if n == 1 else verbs}" if n else ""

    said = [
        f"Retention period changed from {period(previous)} to {period(days)}.",
        cases("due_now", "is purged by the next sweep.", "are purged by the next sweep."),
        cases("earlier", "is purged earlier.", "are purged earlier."),
        cases("later", "is purged later.", "are purged later."),
        cases("no_longer", "is no longer purged.", "are no longer purged."),
        "The change is recorded in the activity log.",
    ]
    return " ".join(part for part in said if part)


@role_required(access.can_manage_organisation)
@require_http_methods(["GET", "POST"])
def organisation_settings(request):
    organisation = access.organisation_of(request.user)
    action = request.POST.get("action", "policy") if request.method == "POST" else None
    form = PolicyForm(
        request.POST if action == "policy" else None,
        initial={f: getattr(organisation, f) for f in PolicyForm.base_fields},
    )
    proposed = organisation.distance_threshold
    if organisation.threshold_confirmed_at is None:
        point = gallery_risk.operating_point_for(gallery_risk.threshold_consequences(organisation))
        proposed = point.proposed if point.proposed is not None else organisation.distance_threshold
    if request.GET.get("threshold"):
        try:
            proposed = min(1.5, max(0.05, float(request.GET["threshold"])))
        except ValueError:
            pass
    confirm_form = OperatingPointForm(
        request.POST if action == "confirm" else None,
        initial={"threshold": proposed, "max_candidates": organisation.max_candidates},
    )
    retention_form = RetentionChangeForm(request.POST if action == "retention" else None, auto_id="id_retention_%s")
    retention_query = RetentionForm(request.GET) if "retention_days" in request.GET else retention_form
    if action == "confirm" and confirm_form.is_valid():
        try:
            services.organisation_threshold_confirm(
                organisation=organisation,
                threshold=confirm_form.cleaned_data["threshold"],
                max_candidates=confirm_form.cleaned_data["max_candidates"],
                acting_user=request.user,
            )
        except services.ServiceError as error:
            confirm_form.add_error(None, str(error))
        else:
            messages.success(request, "Threshold confirmed; matching is on. Photos held for it are being searched.")
            return redirect("matching:organisation_settings")
    elif action == "retention" and retention_form.is_valid():
        previous, days = organisation.retention_days, retention_form.cleaned_data["retention_days"]
        try:
            _, effect = services.organisation_retention_set(
                organisation=organisation, retention_days=days, acting_user=request.user
            )
        except services.ServiceError as error:
            retention_form.add_error(None, str(error))
        else:
            messages.success(request, _retention_message(previous, days, effect))
            return redirect(reverse("matching:organisation_settings") + "#retention")
    elif action == "policy" and form.is_valid():
        try:
            organisation_update(organisation=organisation, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, "Settings saved. The change is recorded in the audit log.")
            return redirect("matching:organisation_settings")
    if action == "confirm":  # show the figures of the threshold that was about to be confirmed
        proposed = getattr(confirm_form, "cleaned_data", {}).get("threshold") or proposed
    context = _settings_context(organisation, proposed)
    context.update(
        {
            "form": form,
            "confirm_form": confirm_form,
            "retention_form": retention_form,
            "retention_query": retention_query,
            "retention_preview": _retention_preview(organisation, retention_query),
            "retention_sweep_minutes": max(1, int(settings.RETENTION_SWEEP_SECONDS) // 60),
            "organisation": organisation,
            "held_photos": Photo.objects.filter(organisation=organisation, status="held").count(),
        }
    )
    return render(
        request, "matching/organisation_settings.html", context, status=400 if request.method == "POST" else 200
    )
