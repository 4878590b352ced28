"""Request guards: the size of a request body, and the permission matrix (portal.access.ROUTE_ROLES); and
the header that keeps every page and API answer out of caches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
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


TOO_LARGE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Upload too large</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>Upload too large</h1><p>{message}</p><p><a href="javascript:history.back()">Go back</a></p></body></html>"""


class NoStoreMiddleware:
    """`Cache-Control: private, no-store` on every answer the portal renders: pages, API JSON, errors.

    Cases, candidates, subjects and reviewers' names must not be kept by a browser's cache or a proxy, where
    the next user of a shared machine could read them back. Static files are answered before this runs
    (WhiteNoise), so they stay cacheable; a view that sets its own Cache-Control keeps it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "private, no-store"
        return response


class RequestSizeMiddleware:
    """Refuses a request whose declared body is over REQUEST_MAX_BYTES, before any of it is read.

    Django caps form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but streams uploaded files to disk whatever
    their size, and the per-photo limit is checked only after the whole body has been received. This
    bounds the whole request: 413, as JSON under /api/. Goes first, before anything reads the body.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0  # Django reads such a body as empty
        limit = settings.REQUEST_MAX_BYTES
        if declared > limit:
            from matching.imaging import human_size

            message = (
                f"The request is {human_size(declared)}; the limit is {human_size(limit)} per request. "
                "Send fewer or smaller files at a time."
            )
            logger.warning("refused a %s-byte request to %s", declared, request.path)
            if is_api_request(request):
                response = JsonResponse(error_body(message, "request_too_large"), status=413)
            else:
                response = HttpResponse(TOO_LARGE_PAGE.format(message=message), status=413)
            # No "Connection: close" here: WSGI forbids hop-by-hop headers from the application (wsgiref
            # answers 500 to one). The server discards or closes on the unread body itself.
            return response
        return self.get_response(request)


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


class NoticesMiddleware:
    """Shows what the services told the person who made a change (portal.notices) as messages on the next page.

    Goes after MessageMiddleware, which stores the messages with this response.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.contrib import messages

        from portal.notices import notices_collect

        with notices_collect() as said:
            response = self.get_response(request)
        for message in said:
            messages.warning(request, message, fail_silently=True)
        return response
