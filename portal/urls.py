from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from matching.api import CaseViewSet
from portal import views

router = DefaultRouter()
router.register("cases", CaseViewSet, basename="case")

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("no-role/", views.no_role, name="no_role"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("", include("matching.urls")),
]
