from __future__ import annotations

import csv
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods

from matching import bulk, evaluation, selectors, services
from matching.bulk import BulkRejected
from matching.charts import error_rate_chart
from matching.forms import (
    AuditUploadForm,
    BulkEnrolForm,
    CaseForm,
    GalleryForm,
    OrganisationSettingsForm,
    SubjectForm,
)
from matching.models import AuditDataset, AuditRun, EnrolmentBatch, Face, Gallery, Photo
from portal import access
from portal.audit import audit_record
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
    return get_object_or_404(selectors.cases_for(request.user).select_related("created_by"), pk=case_id)


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
    return render(
        request,
        "matching/case_detail.html",
        {
            "case": case,
            "photos": selectors.case_photos(case),
            "matches": selectors.case_confirmed_matches(case),
            "counts": selectors.case_candidate_counts(case),
        },
    )


@role_required(access.can_work_cases)
@require_GET
def case_status(request, case_id: int):
    case = _case_or_404(request, case_id)
    photos = [
        {
            "id": photo.pk,
            "status": photo.status,
            "status_display": photo.get_status_display(),
            "failure_reason": photo.failure_reason,
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


def _private_image(field_file) -> FileResponse:
    try:
        handle = field_file.open("rb")
    except FileNotFoundError:
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
    audit_record(action="media.photo", actor=request.user, organisation=photo.organisation, target=photo)
    return _private_image(photo.image)


@login_required
@require_GET
def face_crop(request, face_id: int):
    face = get_object_or_404(Face.objects.defer("encoding"), pk=face_id)
    if not selectors.may_view_face(request.user, face):
        raise Http404
    audit_record(action="media.face", actor=request.user, organisation_id=face.organisation_id, target=face)
    return _private_image(face.crop)


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
    chart = error_rate_chart(
        [(g["key"], [(r["threshold"], r["fmr"], r["fnmr"]) for r in g["rates"]]) for g in singles[:10]],
        threshold_in_use=at,
    )
    return render(
        request,
        "matching/audit_report.html",
        {
            "run": run,
            "document": document,
            "singles": singles,
            "pairs": [g for g in document["groups"] if g["level"] > 0],
            "chart": mark_safe(chart),
            "advice": evaluation.threshold_advice(run),
        },
    )


@role_required(access.can_read_audits)
@require_GET
def audit_report_download(request, run_id: int, fmt: str):
    run = _run_or_404(request, run_id)
    document = evaluation.audit_run_document(run)
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
                        group["key"],
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


@role_required(access.can_manage_organisation)
@require_http_methods(["GET", "POST"])
def organisation_settings(request):
    organisation = access.organisation_of(request.user)
    fields = ["distance_threshold", "max_candidates", "target_fmr", "audit_max_age_days", "require_valid_audit"]
    form = OrganisationSettingsForm(request.POST or None, initial={f: getattr(organisation, f) for f in fields})
    if request.method == "POST" and form.is_valid():
        try:
            organisation_update(organisation=organisation, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, "Settings saved. The change is recorded in the audit log.")
            return redirect("matching:organisation_settings")
    validity = evaluation.audit_validity(organisation)
    advice = evaluation.threshold_advice(validity.run) if validity.run else None
    return render(
        request,
        "matching/organisation_settings.html",
        {"form": form, "organisation": organisation, "validity": validity, "advice": advice},
        status=400 if request.method == "POST" else 200,
    )
