from __future__ import annotations

from django.shortcuts import get_object_or_404
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.response import Response

from matching import selectors, services
from matching.forms import CaseForm
from matching.models import Candidate, Case, Photo
from portal import access


class CanWorkCases(permissions.BasePermission):
    message = "Only caseworkers and organisation admins may use cases."

    def has_permission(self, request, view) -> bool:
        return access.can_work_cases(request.user)


class PhotoSerializer(serializers.ModelSerializer):
    faces = serializers.IntegerField(source="face_count", read_only=True)

    class Meta:
        model = Photo
        fields = ["id", "original_name", "status", "failure_reason", "faces", "width", "height", "created_at"]


class ConfirmedMatchSerializer(serializers.ModelSerializer):
    subject_code = serializers.CharField(source="subject.code")
    subject_name = serializers.CharField(source="subject.display_name")
    reviewer = serializers.CharField(source="outcome_by.get_username", default=None)
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
            "reason",
            "confirmed_at",
            "probe_face",
            "reference_face",
        ]


class CaseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Case
        fields = ["id", "reference", "title", "description", "purpose", "created_at"]


class CaseDetailSerializer(CaseSerializer):
    photos = serializers.SerializerMethodField()
    candidates = serializers.SerializerMethodField()
    confirmed_matches = serializers.SerializerMethodField()

    class Meta(CaseSerializer.Meta):
        fields = [*CaseSerializer.Meta.fields, "photos", "candidates", "confirmed_matches"]

    def get_photos(self, case: Case) -> list[dict]:
        return PhotoSerializer(selectors.case_photos(case), many=True).data

    def get_candidates(self, case: Case) -> dict[str, int]:
        return selectors.case_candidate_counts(case)

    def get_confirmed_matches(self, case: Case) -> list[dict]:
        return ConfirmedMatchSerializer(selectors.case_confirmed_matches(case), many=True).data


class CaseViewSet(viewsets.GenericViewSet):
    """Cases of the caller's organisation. Only confirmed matches are ever returned."""

    permission_classes = [permissions.IsAuthenticated, CanWorkCases]
    serializer_class = CaseSerializer

    def get_queryset(self):
        return selectors.cases_for(self.request.user).order_by("-created_at")

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(CaseSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        case = get_object_or_404(self.get_queryset(), pk=pk)
        return Response(CaseDetailSerializer(case).data)

    def create(self, request):
        form = CaseForm(request.POST, request.FILES)
        if not form.is_valid():
            return Response({"errors": form.errors.get_json_data()}, status=status.HTTP_400_BAD_REQUEST)
        try:
            case = services.case_create(
                organisation=access.organisation_of(request.user), acting_user=request.user, **form.cleaned_data
            )
        except services.ServiceError as error:
            return Response({"errors": {"__all__": [{"message": str(error)}]}}, status=status.HTTP_400_BAD_REQUEST)
        return Response(CaseDetailSerializer(case).data, status=status.HTTP_201_CREATED)
