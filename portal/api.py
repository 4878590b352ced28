"""The API's plumbing: the one error shape, the schema's conventions, and a member's own token.

Every API error body is `{"errors": [{"field": ..., "code": ..., "message": ...}]}`, whichever layer refused
the request: a serializer or form, DRF (401, 403, 404, 405, 415, 429), the request guards in
portal.middleware (401, 403, 413), or Django itself (a 404 or 500 under /api/).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from portal.keys import personal_token_create, personal_token_revoke
from portal.models import ApiKey, ApiKeyKind
from portal.services import AccessError

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


# Errors: one shape everywhere


def error_entry(message: str, code: str = "invalid", field: str | None = None) -> dict[str, Any]:
    return {"field": field, "code": str(code), "message": str(message)}


def error_body(message: str, code: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [error_entry(message, code, field)]}


def _flatten(detail: Any, field: str | None = None) -> list[dict[str, Any]]:
    if isinstance(detail, dict):
        entries = []
        for key, value in detail.items():
            name = None if key in ("non_field_errors", "__all__") else str(key)
            entries += _flatten(value, f"{field}.{name}" if field and name else (name or field))
        return entries
    if isinstance(detail, list):
        entries = []
        for index, item in enumerate(detail):
            nested = isinstance(item, (dict, list))
            entries += _flatten(item, f"{field}[{index}]" if nested and field else field)
        return entries
    return [error_entry(str(detail), getattr(detail, "code", None) or "invalid", field)]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, reshaped. Anything it does not know stays a 500, answered by `server_error`."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, SuspiciousOperation):
        # Too many fields or files, or a malformed multipart body: the client's fault, not ours.
        exc = exceptions.ParseError(str(exc) or "The request could not be read.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
    else:
        errors = [error_entry(str(exc.detail), getattr(exc.detail, "code", None) or exc.default_code)]
    response.data = {"errors": errors}
    return response


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class BoundedJSONParser(JSONParser):
    """A JSON body is read into memory whole: refuse one over Django's limit for in-memory request data."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        meta = parser_context["request"].META if parser_context else {}
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise PayloadTooLarge()
        return super().parse(stream, media_type, parser_context)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def form_invalid(form: Any) -> exceptions.ValidationError:
    """A Django form's errors as a DRF ValidationError, so that they take the common shape."""
    detail = {
        field: [exceptions.ErrorDetail(error["message"], code=error["code"] or "invalid") for error in errors]
        for field, errors in form.errors.get_json_data().items()
    }
    return exceptions.ValidationError(detail)


def unknown_fields_refuse(names: Any, allowed: Any) -> None:
    """Refuse fields the endpoint does not know, rather than silently ignoring a typo."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise exceptions.ValidationError(
            {
                name: [exceptions.ErrorDetail("This field is not accepted here.", code="unknown_field")]
                for name in unknown
            }
        )


class StrictSerializer(serializers.Serializer):
    """A serializer for request bodies that refuses unknown fields."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown_fields_refuse(data.keys(), self.fields.keys())
        return super().to_internal_value(data)


class ErrorSerializer(serializers.Serializer):
    """One error. `field` is null for errors about the request as a whole."""

    field = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorsSerializer(serializers.Serializer):
    errors = ErrorSerializer(many=True)


# DRF imports DEFAULT_SCHEMA_CLASS while this module loads (at the first @extend_schema below), so it comes first.
class PortalAutoSchema(AutoSchema):
    """Documents the common error body on every operation, beside what the view declares."""

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        codes = ["400", "401", "403", "404", "429"]
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["413", "415"]
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorsSerializer, code, direction=direction)
        return responses


def _json_error(request: HttpRequest, status_code: int, message: str, code: str) -> JsonResponse:
    return JsonResponse(error_body(message, code), status=status_code)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return _json_error(request, 400, "The request could not be read.", "bad_request")
    return defaults.bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return _json_error(request, 404, "Not found.", "not_found")
    return defaults.page_not_found(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return _json_error(request, 403, "Your role does not allow this.", "permission_denied")
    return defaults.permission_denied(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form posted with a stale token (signed in again elsewhere, or left open too long): the portal's own
    403 page, which says that nothing was saved and what to do, in place of Django's bare one."""
    if is_api_request(request):
        return _json_error(request, 403, "The form's security token is missing or stale; reload and retry.", "csrf")
    return render(request, "403_csrf.html", status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return _json_error(request, 500, "Something went wrong on our side; it has been logged.", "server_error")
    # With the signed-in user's navigation when that still works; the failure may be the database itself,
    # which the navigation needs, so fall back to the same page without it.
    try:
        return render(request, "500.html", status=500)
    except Exception:
        logger.exception("The 500 page could not be rendered with the request; rendering it without.")
        return defaults.server_error(request)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "portal.keys.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An organisation API key (created by an org admin in the admin) or a personal token "
            "(POST /api/auth/token/ while signed in).",
        }


# The signed-in member's own token


class PersonalTokenSerializer(serializers.Serializer):
    prefix = serializers.CharField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)


class PersonalTokenCreatedSerializer(PersonalTokenSerializer):
    token = serializers.CharField(help_text="Shown this once; only its SHA-256 is stored.")


class PersonalTokenCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)


def _token_data(key: ApiKey) -> dict[str, Any]:
    return {"prefix": key.prefix, "name": key.name, "created_at": key.created_at, "last_used_at": key.last_used_at}


class PersonalTokenView(APIView):
    """A member's own token. Only a signed-in session may create or revoke it: a token cannot mint another,
    so a leaked token cannot outlive its revocation."""

    parser_classes = [BoundedJSONParser]

    @extend_schema(responses={200: PersonalTokenSerializer(many=True)}, operation_id="auth_token_list")
    def get(self, request):
        keys = ApiKey.objects.filter(user=request.user, kind=ApiKeyKind.PERSONAL, revoked_at__isnull=True)
        return Response([_token_data(key) for key in keys])

    @extend_schema(
        request=PersonalTokenCreateSerializer,
        responses={201: PersonalTokenCreatedSerializer, 403: ErrorsSerializer},
        operation_id="auth_token_create",
    )
    def post(self, request):
        self._refuse_keys(request)
        body = PersonalTokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            key, secret = personal_token_create(user=request.user, name=body.validated_data.get("name", ""))
        except AccessError as error:
            raise exceptions.PermissionDenied(str(error)) from None
        return Response({**_token_data(key), "token": secret}, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None, 403: ErrorsSerializer}, operation_id="auth_token_revoke")
    def delete(self, request):
        self._refuse_keys(request)
        personal_token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _refuse_keys(request) -> None:
        if isinstance(request.auth, ApiKey):
            raise exceptions.PermissionDenied("Tokens are created and revoked from a signed-in session only.")
