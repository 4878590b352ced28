from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from matching import selectors, services
from matching.bulk import BulkRejected
from matching.forms import BulkEnrolForm, CaseForm, GalleryForm, SubjectForm
from matching.models import EnrolmentBatch, Face, Gallery, Photo
from portal import access
from portal.audit import audit_record


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
    cases = selectors.cases_for(request.user).select_related("created_by").order_by("-created_at")[:200]
    return render(request, "matching/case_list.html", {"cases": cases})


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
        return JsonResponse(
            {
                "status": batch.status,
                "rows_total": batch.rows_total,
                "rows_done": batch.rows_done,
                "finished": batch.status in ("done", "failed"),
            }
        )
    return render(request, "matching/batch_detail.html", {"batch": batch})
