from __future__ import annotations

from django.contrib import admin

from matching.models import Case, EnrolmentBatch, Gallery, Subject
from portal import access
from portal.admin_mixins import ScopedAdmin


class ReadOnlyScopedAdmin(ScopedAdmin):
    """Browse-only: galleries and cases are written through the portal's own pages."""

    add_check = change_check = staticmethod(lambda user: False)


@admin.register(Gallery)
class GalleryAdmin(ReadOnlyScopedAdmin, admin.ModelAdmin):
    list_display = ["name", "organisation", "created_at"]
    search_fields = ["name"]
    list_select_related = ["organisation"]
    view_check = staticmethod(access.can_manage_galleries)


@admin.register(Subject)
class SubjectAdmin(ReadOnlyScopedAdmin, admin.ModelAdmin):
    organisation_path = "gallery__organisation"
    list_display = ["code", "display_name", "gallery", "sex", "age_band", "ethnicity", "created_at"]
    list_filter = ["sex", "age_band", "ethnicity"]
    search_fields = ["code", "display_name"]
    list_select_related = ["gallery"]
    view_check = staticmethod(access.can_manage_galleries)


@admin.register(Case)
class CaseAdmin(ReadOnlyScopedAdmin, admin.ModelAdmin):
    list_display = ["reference", "title", "created_by", "created_at"]
    search_fields = ["reference", "title"]
    list_select_related = ["created_by"]
    view_check = staticmethod(access.can_review)


@admin.register(EnrolmentBatch)
class EnrolmentBatchAdmin(ReadOnlyScopedAdmin, admin.ModelAdmin):
    organisation_path = "gallery__organisation"
    list_display = ["id", "gallery", "status", "rows_done", "rows_total", "created_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["gallery"]
    exclude = ["archive", "manifest"]
    view_check = staticmethod(access.can_manage_galleries)
