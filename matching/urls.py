from __future__ import annotations

from django.urls import path

from matching import views

app_name = "matching"

urlpatterns = [
    path("cases/", views.case_list, name="case_list"),
    path("cases/new/", views.case_create, name="case_create"),
    path("cases/<int:case_id>/", views.case_detail, name="case_detail"),
    path("cases/<int:case_id>/status/", views.case_status, name="case_status"),
    path("cases/<int:case_id>/close/", views.case_close, name="case_close"),
    path("cases/<int:case_id>/reopen/", views.case_reopen, name="case_reopen"),
    path("media/photos/<int:photo_id>/", views.photo_image, name="photo_image"),
    path("media/faces/<int:face_id>/", views.face_crop, name="face_crop"),
    path("media/faces/<int:face_id>/aligned/", views.face_aligned, name="face_aligned"),
    path("galleries/", views.gallery_list, name="gallery_list"),
    path("galleries/<int:gallery_id>/", views.gallery_detail, name="gallery_detail"),
    path("galleries/batches/<int:batch_id>/", views.batch_detail, name="batch_detail"),
    path("audits/", views.audit_list, name="audit_list"),
    path("audits/datasets/<int:dataset_id>/", views.audit_dataset, name="audit_dataset"),
    path("audits/runs/<int:run_id>/", views.audit_report, name="audit_report"),
    path("audits/runs/<int:run_id>/download.<str:fmt>", views.audit_report_download, name="audit_report_download"),
    path("settings/", views.organisation_settings, name="organisation_settings"),
]
