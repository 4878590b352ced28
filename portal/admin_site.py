from __future__ import annotations

from functools import update_wrapper
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.utils.functional import SimpleLazyObject

from portal import access


class PortalAdminSite(admin.AdminSite):
    """The admin, opened to reviewers and org admins by role rather than by is_staff."""

    site_header = "Face search portal: review and administration"
    site_title = "Portal admin"
    index_title = "Review and administration"

    def has_permission(self, request) -> bool:
        return access.can_use_admin(request.user)

    def login(self, request, extra_context=None):
        # One login page for everyone: the admin's own form insists on is_staff.
        target = request.GET.get("next") or resolve_url("admin:index")
        return HttpResponseRedirect(f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': target})}")

    def get_app_list(self, request, app_label=None):
        # Every admin page's context carries the list of apps for the side bar, and building it asks each
        # registered admin for its permissions: two queries of Django's permission tables for the apps the portal
        # did not write. The review queue and the candidate page draw no side bar, so the list is built only
        # where a template reads it.
        build = super().get_app_list
        return SimpleLazyObject(lambda: build(request, app_label))

    def admin_view(self, view, cacheable=False):
        inner = super().admin_view(view, cacheable)

        def wrapper(request, *args, **kwargs):
            # A signed-in user with no admin role is told nothing exists here, not asked to log in again.
            if request.user.is_authenticated and not self.has_permission(request):
                raise Http404
            return inner(request, *args, **kwargs)

        return update_wrapper(wrapper, view)
