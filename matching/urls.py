from __future__ import annotations

from django.urls import path

from matching import views

app_name = "matching"

urlpatterns = [
    path("cases/", views.case_list, name="case_list"),
    path("cases/new/", views.case_create, name="case_create"),
    path("cases/<int:case_id>/", views.case_detail, name="case_detail"),
    path("cases/<int:case_id>/status/", views.case_status, name="case_status"),
    path("media/photos/<int:photo_id>/", views.photo_image, name="photo_image"),
    path("media/faces/<int:face_id>/", views.face_crop, name="face_crop"),
    path("galleries/", views.gallery_list, name="gallery_list"),
    path("galleries/<int:gallery_id>/", views.gallery_detail, name="gallery_detail"),
    path("galleries/batches/<int:batch_id>/", views.batch_detail, name="batch_detail"),
]
