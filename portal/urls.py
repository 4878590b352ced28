from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from matching.api import AuditRunViewSet, CaseViewSet, GalleryViewSet, ImportViewSet, MatchViewSet, SubjectViewSet
from portal import twofactor, views
from portal.api import PersonalTokenView

# The API. Every route name here needs an entry in portal.access.ROUTE_ROLES.
router = DefaultRouter()
# One URL per resource: `cases.json` would only be a second name for `cases/`.
router.include_format_suffixes = False
router.register("cases", CaseViewSet, basename="case")
router.register("matches", MatchViewSet, basename="match")
router.register("galleries", GalleryViewSet, basename="gallery")
router.register("subjects", SubjectViewSet, basename="subject")
router.register("imports", ImportViewSet, basename="import")
router.register("audit-runs", AuditRunViewSet, basename="audit-run")

handler400 = "portal.api.bad_request"
handler403 = "portal.api.permission_denied"
handler404 = "portal.api.not_found"
handler500 = "portal.api.server_error"

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/2fa/", twofactor.two_factor_verify, name="two_factor_verify"),
    path("accounts/2fa/setup/", twofactor.two_factor_setup, name="two_factor_setup"),
    path("accounts/invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("no-role/", views.no_role, name="no_role"),
    # Not under /accounts/, which the second factor lets through: a token is minted only after it.
    path("token/", views.api_token, name="api_token"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file, as the Content-Security-Policy requires.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/auth/token/", PersonalTokenView.as_view(), name="auth-token"),
    path("api/", include(router.urls)),
    path("", include("matching.urls")),
    path("review/", include("reviews.urls")),
]
