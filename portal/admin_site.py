from __future__ import annotations

from functools import update_wrapper
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import resolve_url

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

    def admin_view(self, view, cacheable=False):
        inner = super().admin_view(view, cacheable)

        def wrapper(request, *args, **kwargs):
            # A signed-in user with no admin role is told nothing exists here, not asked to log in again.
            if request.user.is_authenticated and not self.has_permission(request):
                raise Http404
            return inner(request, *args, **kwargs)

        return update_wrapper(wrapper, view)
