from __future__ import annotations

from django.urls import path

from reviews import views

app_name = "reviews"

urlpatterns = [
    path("disclosures/<int:report_id>/download.<str:fmt>", views.disclosure_download, name="disclosure_download"),
    path("disclosures/<int:report_id>/view/", views.disclosure_view, name="disclosure_view"),
]
