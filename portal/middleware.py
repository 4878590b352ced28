"""Enforces the permission matrix (portal.access.ROUTE_ROLES) on every routed request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework.exceptions import AuthenticationFailed

from portal import access
from portal.api import error_body, is_api_request
from portal.keys import ApiKeyAuthentication

logger = logging.getLogger(__name__)


def _api_error(status: int, message: str, code: str) -> JsonResponse:
    response = JsonResponse(error_body(message, code), status=status)
    if status == 401:
        response["WWW-Authenticate"] = ApiKeyAuthentication().authenticate_header(None)
    return response


class RouteAccessMiddleware:
    """Lets a request reach its view only when the matrix allows the user that route.

    Refusals: a visitor who is not signed in is sent to the login page (401 under /api/);
    a signed-in user without the role gets 404, as the views themselves answer, so that a page
    outside one's role is not confirmed to exist (403 under /api/, whose routes are public in the
    schema anyway). A route with no matrix entry is refused to everyone: fail closed.
    Goes after AuthenticationMiddleware, which provides the session's user.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable, view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        match = request.resolver_match
        view_name = match.view_name if match else None
        api = is_api_request(request)
        if api:
            # DRF authenticates inside the view, too late for this check: read the API key here.
            # It is honoured under /api/ only, so that a key never opens the HTML pages or the admin.
            try:
                authenticated = ApiKeyAuthentication().authenticate(request)
            except AuthenticationFailed as error:
                return _api_error(401, str(error.detail), "authentication_failed")
            if authenticated is not None:
                request.user = authenticated[0]
        if access.route_allows(view_name, request.user):
            return None
        if access.route_roles(view_name) is None:
            logger.warning(
                "Refused %s: the route %r has no entry in portal.access.ROUTE_ROLES", request.path, view_name
            )
        if not request.user.is_authenticated:
            if api:
                return _api_error(401, "Authentication credentials were not provided.", "not_authenticated")
            return redirect_to_login(request.get_full_path())
        if api:
            return _api_error(403, "Your role does not allow this.", "permission_denied")
        raise Http404
