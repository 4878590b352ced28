"""The REST API for matching: cases, probe photos, confirmed matches, galleries, subjects, imports and audits.

Who may call each route is decided once, by the permission matrix (portal.access.ROUTE_ROLES, enforced by
portal.middleware); here every query starts from the caller's organisation, so that another organisation's
rows answer 404. Writes go through matching.services; multipart bodies are validated by the same Django
forms as the pages.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import IntegrityError
from django.db.models import Count, QuerySet
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from matching import filters, selectors, services
from matching.accuracy import evaluation
from matching.bulk import BulkRejected
from matching.forms import BulkEnrolForm, CaseForm, PhotosField, SubjectForm
from matching.models import AuditRun, Candidate, Case, EnrolmentBatch, Gallery, Photo, Subject
from portal import access
from portal.api import BoundedJSONParser, Conflict, StrictSerializer, form_invalid, unknown_fields_refuse


def _refusal(message: str, field: str = "non_field_errors", code: str = "invalid") -> ValidationError:
    return ValidationError({field: [ErrorDetail(message, code=code)]})


def form_request_serializer(form_class: type[forms.Form], name: str) -> type[serializers.Serializer]:
    """The multipart body a form validates, described for the schema. The form stays the one validator."""
    fields: dict[str, serializers.Field] = {}
    for field_name, field in form_class.base_fields.items():
        options: dict[str, Any] = {"required": field.required, "help_text": str(field.help_text) or None}
        if isinstance(field, PhotosField):
            fields[field_name] = serializers.ListField(child=serializers.FileField(), min_length=1, **options)
        elif isinstance(field, forms.FileField):
            fields[field_name] = serializers.FileField(**options)
        elif isinstance(field, forms.BooleanField):
            fields[field_name] = serializers.BooleanField(**options)
        elif isinstance(field, forms.DateField):
            fields[field_name] = serializers.DateField(**options)
        elif isinstance(field, forms.ChoiceField):
            fields[field_name] = serializers.ChoiceField(
                choices=field.choices, allow_blank=not field.required, **options
            )
        else:
            fields[field_name] = serializers.CharField(
                max_length=getattr(field, "max_length", None), allow_blank=not field.required, **options
            )
    return type(name, (serializers.Serializer,), fields)


def form_from_request(form_class: type[forms.Form], request) -> forms.Form:
    """A valid form bound to a multipart request, or a 400 naming every problem, unknown fields included."""
    unknown_fields_refuse(request.data.keys(), form_class.base_fields.keys())
    form = form_class(request.POST, request.FILES)
    if not form.is_valid():
        raise form_invalid(form)
    return form


class OrganisationScoped:
    """Querysets start from the caller's organisation; without one, they are empty."""

    # Ids the database can hold (19 digits at most); a longer one names no row and answers 404.
    lookup_value_regex = "[0-9]{1,19}"
    filter_backends = [filters.StrictFilterBackend]
    filterset_class: type[filters.PageFilterSet] = filters.PageFilterSet

    def organisation(self):
        return access.organisation_of(self.request.user)

    def paginated(self, queryset: QuerySet, serializer_class: type[serializers.Serializer]) -> Response:
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True, context={"request": self.request}).data)


class PhotoSerializer(serializers.ModelSerializer):
    faces = serializers.IntegerField(source="face_count", read_only=True)
    unsuitable = serializers.SerializerMethodField(
        help_text="Whether a reviewer judged a face of this photo unsuitable for comparison (its candidates closed)."
    )

    class Meta:
        model = Photo
        fields = [
            "id",
            "original_name",
            "captured_on",
            "status",
            "failure_reason",
            "faces",
            "unsuitable",
            "width",
            "height",
            "created_at",
        ]

    def get_unsuitable(self, photo: Photo) -> bool:
        count = getattr(photo, "unsuitable_faces", None)
        return bool(count if count is not None else photo.faces.filter(unsuitable_at__isnull=False).exists())


class ConfirmedMatchSerializer(serializers.ModelSerializer):
    subject_code = serializers.CharField(source="subject.code")
    subject_name = serializers.CharField(source="subject.display_name")
    reviewer = serializers.CharField(
        source="outcome_by.get_username", default=None, help_text="The reviewer whose decision settled it."
    )
    confirmed_by = serializers.SerializerMethodField(help_text="Every reviewer whose confirmation counted.")
    reason = serializers.CharField(source="outcome_reason")
    confirmed_at = serializers.DateTimeField(source="outcome_at")
    probe_face = serializers.IntegerField(source="search.face_id")
    reference_face = serializers.IntegerField(source="reference_face_id")

    class Meta:
        model = Candidate
        fields = [
            "id",
            "subject_code",
            "subject_name",
            "rank",
            "distance",
            "reviewer",
            "confirmed_by",
            "reason",
            "confirmed_at",
            "probe_face",
            "reference_face",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_confirmed_by(self, candidate: Candidate) -> list[str]:
        return [reviewer.get_username() for reviewer in candidate.confirming_reviewers]


# Whether a case is closed and when its biometrics go, in the list and the detail alike.
CASE_STATE = ["closed", "closed_at", "purge_due_at", "purged_at"]


class CaseSerializer(serializers.ModelSerializer):
    closed = serializers.BooleanField(
        source="is_closed", read_only=True, help_text="Whether the case is closed (its retention period has started)."
    )
    closed_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When it was closed; null while it is open."
    )
    purge_due_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When its probe photos, crops and encodings will be purged: its closing time plus the "
        "organisation's retention period as it is now. Null while the case is open, once it is purged, or when the "
        "organisation keeps no retention period.",
    )
    purged_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When its biometrics were purged; null until then."
    )

    class Meta:
        model = Case
        fields = ["id", "reference", "title", "description", "purpose", "created_at", *CASE_STATE]


class CaseStateSerializer(serializers.ModelSerializer):
    """Whether a case is open, when it was closed and why, and when its biometrics are (or were) purged."""

    closed_by = serializers.CharField(source="closed_by.get_username", default=None, read_only=True)
    purge_due_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = Case
        fields = ["id", "reference", "closed_at", "closed_by", "close_reason", "purge_due_at", "purged_at"]


class CaseCloseRequest(StrictSerializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the case is closed; recorded in the activity log.")

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and "reason" in data and not isinstance(data["reason"], str):
            raise ValidationError({"reason": [ErrorDetail("Expected text.", code="invalid")]})
        return super().to_internal_value(data)


class CaseReopenRequest(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and "reason" in data and not isinstance(data["reason"], str):
            raise ValidationError({"reason": [ErrorDetail("Expected text.", code="invalid")]})
        return super().to_internal_value(data)


class CandidateCountsSerializer(serializers.Serializer):
    """How many candidates wait for review, were confirmed or were rejected; never who they are."""

    pending = serializers.IntegerField()
    confirmed = serializers.IntegerField()
    rejected = serializers.IntegerField()
    not_comparable = serializers.IntegerField(
        help_text="Closed without a comparison: a reviewer judged the probe photo unsuitable for comparison."
    )


class CaseDetailSerializer(CaseSerializer):
    photos = serializers.SerializerMethodField()
    candidates = serializers.SerializerMethodField()
    confirmed_matches = serializers.SerializerMethodField()

    class Meta(CaseSerializer.Meta):
        fields = [*CaseSerializer.Meta.fields, "close_reason", "photos", "candidates", "confirmed_matches"]

    @extend_schema_field(PhotoSerializer(many=True))
    def get_photos(self, case: Case) -> list[dict]:
        return PhotoSerializer(selectors.case_photos(case), many=True).data

    @extend_schema_field(CandidateCountsSerializer)
    def get_candidates(self, case: Case) -> dict[str, int]:
        return selectors.case_candidate_counts(case)

    @extend_schema_field(ConfirmedMatchSerializer(many=True))
    def get_confirmed_matches(self, case: Case) -> list[dict]:
        return ConfirmedMatchSerializer(selectors.case_confirmed_matches(case), many=True).data


CaseCreateRequest = form_request_serializer(CaseForm, "CaseCreateSerializer")


class CaseViewSet(OrganisationScoped, viewsets.GenericViewSet):
    """Cases of the caller's organisation. Only confirmed matches are ever returned."""

    serializer_class = CaseSerializer
    parser_classes = [MultiPartParser]
    filterset_class = filters.CaseFilterSet

    def get_queryset(self):
        return (
            selectors.cases_for(self.request.user)
            .select_related("organisation", "closed_by")
            .order_by("-created_at", "-id")
        )

    def _case(self, pk) -> Case:
        return get_object_or_404(self.get_queryset(), pk=pk)

    @extend_schema(responses=CaseSerializer(many=True))
    def list(self, request):
        return self.paginated(self.filter_queryset(self.get_queryset()), CaseSerializer)

    @extend_schema(responses=CaseDetailSerializer)
    def retrieve(self, request, pk=None):
        return Response(CaseDetailSerializer(self._case(pk)).data)

    @extend_schema(request={"multipart/form-data": CaseCreateRequest}, responses={201: CaseDetailSerializer})
    def create(self, request):
        """A case and its probe photos, in one multipart request. Each photo is then processed in the background."""
        form = form_from_request(CaseForm, request)
        try:
            case = services.case_create(organisation=self.organisation(), acting_user=request.user, **form.cleaned_data)
        except services.ServiceError as error:
            raise _refusal(str(error)) from None
        except IntegrityError:
            raise Conflict("A case with this reference was created at the same moment.") from None
        return Response(CaseDetailSerializer(case).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CaseCloseRequest, responses={200: CaseStateSerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="close", url_name="close", parser_classes=[BoundedJSONParser])
    def close(self, request, pk=None):
        """Close the case with a reason. Its retention period starts: `purge_due_at` says when it ends."""
        case = self._case(pk)
        body = CaseCloseRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            case = services.case_close(case=case, acting_user=request.user, reason=body.validated_data["reason"])
        except services.ServiceError as error:
            if case.closed_at is not None or Case.objects.filter(pk=case.pk, closed_at__isnull=False).exists():
                raise Conflict(str(error)) from None
            raise _refusal(str(error), field="reason") from None
        return Response(CaseStateSerializer(case).data)

    @extend_schema(request=CaseReopenRequest, responses={200: CaseStateSerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="reopen", url_name="reopen", parser_classes=[BoundedJSONParser])
    def reopen(self, request, pk=None):
        """Reopen a closed case before it is purged (org admins). Nothing is purged while a case is open."""
        case = self._case(pk)
        body = CaseReopenRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            case = services.case_reopen(
                case=case, acting_user=request.user, reason=body.validated_data.get("reason", "")
            )
        except services.ServiceError as error:
            raise Conflict(str(error)) from None
        return Response(CaseStateSerializer(case).data)

    @extend_schema(responses=PhotoSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="photos", url_name="photos", filterset_class=filters.PageFilterSet)
    def photos(self, request, pk=None):
        """The case's probe photos: status, failure reason and face count."""
        return self.paginated(self.filter_queryset(selectors.case_photos(self._case(pk))), PhotoSerializer)

    @extend_schema(responses=PhotoSerializer)
    @action(detail=True, methods=["get"], url_path=r"photos/(?P<photo_id>[0-9]{1,19})", url_name="photo")
    def photo(self, request, pk=None, photo_id=None):
        photo = get_object_or_404(selectors.case_photos(self._case(pk)), pk=photo_id)
        return Response(PhotoSerializer(photo).data)

    @extend_schema(responses=ConfirmedMatchSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="matches", url_name="matches", filterset_class=filters.PageFilterSet)
    def matches(self, request, pk=None):
        """Confirmed matches only: a pending, escalated or rejected candidate never leaves the review workflow."""
        matches = self.filter_queryset(selectors.case_confirmed_matches(self._case(pk)))
        return self.paginated(matches, ConfirmedMatchSerializer)


# Confirmed matches across the organisation's cases


class MatchSerializer(ConfirmedMatchSerializer):
    case = serializers.IntegerField(source="case_id")
    case_reference = serializers.CharField(source="case.reference")

    class Meta(ConfirmedMatchSerializer.Meta):
        fields = ["id", "case", "case_reference", *ConfirmedMatchSerializer.Meta.fields[1:]]


def organisation_confirmed_matches(organisation) -> QuerySet[Candidate]:
    """selectors.case_confirmed_matches across every case of the organisation: confirmed candidates only."""
    return (
        Candidate.objects.confirmed()
        .filter(organisation=organisation, case__organisation=organisation)
        .select_related("case", "subject", "reference_face", "search__face", "outcome_by")
        .prefetch_related("confirmed_by")
        .defer("reference_face__encoding", "search__face__encoding")
        .order_by("-outcome_at", "-id")
    )


class MatchViewSet(OrganisationScoped, viewsets.GenericViewSet):
    """Every confirmed match of the caller's organisation, newest first."""

    serializer_class = MatchSerializer
    filterset_class = filters.MatchFilterSet

    def get_queryset(self):
        organisation = self.organisation()
        return organisation_confirmed_matches(organisation) if organisation else Candidate.objects.none()

    @extend_schema(responses=MatchSerializer(many=True))
    def list(self, request):
        return self.paginated(self.filter_queryset(self.get_queryset()), MatchSerializer)


# Galleries, subjects and bulk imports (org admins)


class GallerySerializer(serializers.ModelSerializer):
    subjects = serializers.IntegerField(source="subject_count", read_only=True)

    class Meta:
        model = Gallery
        fields = ["id", "name", "description", "subjects", "created_at"]


class GalleryCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=5_000, required=False, allow_blank=True)

    def to_internal_value(self, data: Any) -> Any:
        # JSON may carry numbers or lists where text belongs; a name is text, not a coerced 123.
        if isinstance(data, dict):
            wrong = {k: [ErrorDetail("Expected text.", code="invalid")] for k in ("name", "description") if k in data}
            wrong = {k: v for k, v in wrong.items() if not isinstance(data[k], str)}
            if wrong:
                raise ValidationError(wrong)
        return super().to_internal_value(data)


class SubjectSerializer(serializers.ModelSerializer):
    photos = serializers.IntegerField(source="photo_count", read_only=True)
    faces = serializers.IntegerField(source="face_count", read_only=True)
    failed_photos = serializers.IntegerField(source="failed_count", read_only=True)

    class Meta:
        model = Subject
        fields = [
            "id",
            "gallery",
            "code",
            "display_name",
            "sex",
            "age_band",
            "ethnicity",
            "born_on",
            "photos",
            "faces",
            "failed_photos",
            "created_at",
        ]


class SubjectDetailSerializer(serializers.ModelSerializer):
    photos = serializers.SerializerMethodField()

    class Meta:
        model = Subject
        fields = [
            "id",
            "gallery",
            "code",
            "display_name",
            "sex",
            "age_band",
            "ethnicity",
            "born_on",
            "created_at",
            "photos",
        ]

    @extend_schema_field(PhotoSerializer(many=True))
    def get_photos(self, subject: Subject) -> list[dict]:
        photos = subject.photos.annotate(face_count=Count("faces")).order_by("id")
        return PhotoSerializer(photos, many=True).data


SubjectEnrolRequest = form_request_serializer(SubjectForm, "SubjectEnrolSerializer")
ImportRequest = form_request_serializer(BulkEnrolForm, "ImportCreateSerializer")


class ImportSerializer(serializers.ModelSerializer):
    enrolled = serializers.IntegerField(source="accepted_count", read_only=True)
    refused = serializers.IntegerField(source="refused_count", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = EnrolmentBatch
        fields = [
            "id",
            "gallery",
            "status",
            "failure_reason",
            "rows_total",
            "rows_done",
            "enrolled",
            "refused",
            "created_at",
            "finished_at",
            "url",
        ]

    def get_url(self, batch: EnrolmentBatch) -> str:
        return reverse("import-detail", args=[batch.pk])


class ImportDetailSerializer(ImportSerializer):
    report = serializers.JSONField(read_only=True, help_text="One entry per CSV row: line, code, file, status, detail.")

    class Meta(ImportSerializer.Meta):
        fields = [*ImportSerializer.Meta.fields, "report"]


class GalleryViewSet(OrganisationScoped, viewsets.GenericViewSet):
    serializer_class = GallerySerializer
    parser_classes = [BoundedJSONParser]

    def get_queryset(self):
        organisation = self.organisation()
        return selectors.galleries_for(organisation) if organisation else Gallery.objects.none()

    def _gallery(self, pk) -> Gallery:
        return get_object_or_404(self.get_queryset().select_related("organisation"), pk=pk)

    @extend_schema(responses=GallerySerializer(many=True))
    def list(self, request):
        return self.paginated(self.filter_queryset(self.get_queryset()), GallerySerializer)

    @extend_schema(request=GalleryCreateSerializer, responses={201: GallerySerializer})
    def create(self, request):
        body = GalleryCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            gallery = services.gallery_create(
                organisation=self.organisation(), acting_user=request.user, **body.validated_data
            )
        except services.ServiceError as error:
            raise _refusal(str(error), field="name") from None
        except IntegrityError:
            raise Conflict("A gallery with this name was created at the same moment.") from None
        return Response(GallerySerializer(self._gallery(gallery.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=GallerySerializer)
    def retrieve(self, request, pk=None):
        return Response(GallerySerializer(self._gallery(pk)).data)

    @extend_schema(methods=["GET"], responses=SubjectSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        request={"multipart/form-data": SubjectEnrolRequest},
        responses={201: SubjectDetailSerializer},
    )
    @action(
        detail=True,
        methods=["get", "post"],
        url_path="subjects",
        url_name="subjects",
        parser_classes=[MultiPartParser],
        filterset_class=filters.SubjectFilterSet,
    )
    def subjects(self, request, pk=None):
        """List the gallery's subjects, or enrol one with its photos (a known code adds the photos to it)."""
        gallery = self._gallery(pk)
        if request.method == "GET":
            subjects = self.filter_queryset(selectors.gallery_subjects(gallery).filter(erased_at__isnull=True))
            return self.paginated(subjects, SubjectSerializer)
        form = form_from_request(SubjectForm, request)
        try:
            subject = services.subject_enrol(gallery=gallery, acting_user=request.user, **form.cleaned_data)
        except services.ServiceError as error:
            raise _refusal(str(error)) from None
        except IntegrityError:
            raise Conflict("A subject with this code was enrolled at the same moment; send the photos again.") from None
        return Response(SubjectDetailSerializer(subject).data, status=status.HTTP_201_CREATED)

    @extend_schema(methods=["GET"], responses=ImportSerializer(many=True))
    @extend_schema(methods=["POST"], request={"multipart/form-data": ImportRequest}, responses={202: ImportSerializer})
    @action(
        detail=True, methods=["get", "post"], url_path="imports", url_name="imports", parser_classes=[MultiPartParser]
    )
    def imports(self, request, pk=None):
        """Bulk enrolment: a zip of photos and a CSV, checked at once and enrolled in the background."""
        gallery = self._gallery(pk)
        if request.method == "GET":
            return self.paginated(
                self.filter_queryset(gallery.batches.order_by("-created_at", "-id")), ImportSerializer
            )
        form = form_from_request(BulkEnrolForm, request)
        try:
            batch = services.enrolment_batch_create(
                gallery=gallery,
                archive=form.cleaned_data["archive"],
                manifest=form.cleaned_data["manifest"],
                acting_user=request.user,
            )
        except BulkRejected as error:
            raise _refusal(str(error)) from None
        body = ImportSerializer(batch).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class SubjectViewSet(OrganisationScoped, viewsets.GenericViewSet):
    serializer_class = SubjectDetailSerializer

    def get_queryset(self):
        # An erased subject stays as a tombstone for the audit trail; to the API it is gone.
        return Subject.objects.filter(gallery__organisation=self.organisation(), erased_at__isnull=True).select_related(
            "gallery"
        )

    def _subject(self, pk) -> Subject:
        return get_object_or_404(self.get_queryset(), pk=pk)

    @extend_schema(responses=SubjectDetailSerializer)
    def retrieve(self, request, pk=None):
        return Response(SubjectDetailSerializer(self._subject(pk)).data)

    @extend_schema(responses={204: None, 409: OpenApiTypes.OBJECT})
    def destroy(self, request, pk=None):
        """Erase the subject: its photos, crops and face encodings, for good. Recorded in the audit log."""
        subject = self._subject(pk)
        try:
            services.subject_erase(subject=subject, acting_user=request.user)
        except services.ServiceError as error:
            raise Conflict(str(error)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class ImportViewSet(OrganisationScoped, viewsets.GenericViewSet):
    serializer_class = ImportDetailSerializer

    def get_queryset(self):
        return EnrolmentBatch.objects.filter(gallery__organisation=self.organisation())

    @extend_schema(responses=ImportDetailSerializer)
    def retrieve(self, request, pk=None):
        """An import's progress and its report per row."""
        return Response(ImportDetailSerializer(get_object_or_404(self.get_queryset(), pk=pk)).data)


# Bias audits (reviewers and org admins), read only


class AuditRunSerializer(serializers.ModelSerializer):
    dataset_name = serializers.CharField(source="dataset.name", read_only=True)

    class Meta:
        model = AuditRun
        fields = [
            "id",
            "dataset",
            "dataset_name",
            "engine_version",
            "threshold_in_use",
            "target_fmr",
            "photos",
            "completed_at",
        ]


class AuditRunViewSet(OrganisationScoped, viewsets.GenericViewSet):
    serializer_class = AuditRunSerializer

    def get_queryset(self):
        organisation = self.organisation()
        if organisation is None:
            return AuditRun.objects.none()
        return evaluation.runs_for(organisation).order_by("-completed_at", "-id")

    @extend_schema(responses=AuditRunSerializer(many=True))
    def list(self, request):
        return self.paginated(self.filter_queryset(self.get_queryset()), AuditRunSerializer)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def retrieve(self, request, pk=None):
        """The run's document: per group FMR and FNMR at each threshold, as `audit_run --json` writes it."""
        return Response(evaluation.audit_run_document(get_object_or_404(self.get_queryset(), pk=pk)))
