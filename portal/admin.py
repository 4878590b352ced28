from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password

from portal import access
from portal.admin_mixins import ScopedAdmin, ServiceErrorsAsMessages
from portal.models import AuditEvent, Membership, Organisation
from portal.services import (
    AccessError,
    member_create,
    member_set_active,
    member_set_role,
    organisation_create,
    organisation_update,
)

User = get_user_model()

admin.site.unregister(Group)
admin.site.unregister(User)


@admin.register(User)
class SuperuserOnlyUserAdmin(UserAdmin):
    """Raw user accounts: superusers only. Org admins manage people as members."""

    def has_module_permission(self, request) -> bool:
        return access.is_superuser(request.user)

    has_view_permission = has_change_permission = has_add_permission = has_delete_permission = (
        lambda self, request, obj=None: access.is_superuser(request.user)
    )


@admin.register(Organisation)
class OrganisationAdmin(ScopedAdmin, admin.ModelAdmin):
    organisation_path = "pk"
    list_display = ["name", "slug", "distance_threshold", "max_candidates", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    view_check = staticmethod(access.can_manage_organisation)
    add_check = staticmethod(lambda user: False)

    def get_queryset(self, request):
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if access.is_superuser(request.user):
            return queryset
        return queryset.filter(pk=getattr(access.organisation_of(request.user), "pk", None))

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            created = organisation_create(
                name=form.cleaned_data["name"], slug=form.cleaned_data["slug"], acting_user=request.user
            )
            obj.pk = created.pk
        organisation_update(
            organisation=Organisation.objects.get(pk=obj.pk),
            acting_user=request.user,
            **{field: form.cleaned_data[field] for field in form.changed_data},
        )


class MemberAddForm(forms.ModelForm):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    password = forms.CharField(widget=forms.PasswordInput, help_text="Tell the member to change it at first login.")

    class Meta:
        model = Membership
        fields = ["organisation", "role"]

    def clean_username(self) -> str:
        username = self.cleaned_data["username"].strip()
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("This username is taken.")
        return username

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        validate_password(password)
        return password


@admin.register(Membership)
class MembershipAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    service_errors = (AccessError,)
    list_display = ["user", "full_name", "email", "role", "organisation", "active", "created_at"]
    list_filter = ["role", "user__is_active"]
    search_fields = ["user__username", "user__email", "user__first_name", "user__last_name"]
    list_select_related = ["user", "organisation"]
    actions = ["deactivate", "reactivate"]
    view_check = change_check = add_check = staticmethod(access.can_manage_organisation)

    @admin.display(description="name")
    def full_name(self, obj: Membership) -> str:
        return obj.user.get_full_name()

    @admin.display(description="email")
    def email(self, obj: Membership) -> str:
        return obj.user.email

    @admin.display(boolean=True, description="active")
    def active(self, obj: Membership) -> bool:
        return obj.user.is_active

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = MemberAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is not None:
            return ["user", "organisation", "role"]
        fields = ["username", "first_name", "last_name", "email", "password", "role"]
        return ["organisation", *fields] if access.is_superuser(request.user) else fields

    def get_readonly_fields(self, request, obj=None):
        return ["user", "organisation"] if obj is not None else []

    def save_model(self, request, obj, form, change) -> None:
        if change:
            updated = member_set_role(membership=obj, role=form.cleaned_data["role"], acting_user=request.user)
            obj.role = updated.role
            return
        organisation = (
            form.cleaned_data["organisation"]
            if access.is_superuser(request.user)
            else access.organisation_of(request.user)
        )
        created = member_create(
            organisation=organisation,
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            first_name=form.cleaned_data["first_name"],
            last_name=form.cleaned_data["last_name"],
            password=form.cleaned_data["password"],
            role=form.cleaned_data["role"],
            acting_user=request.user,
        )
        obj.pk, obj.user, obj.organisation = created.pk, created.user, created.organisation

    def _set_active(self, request, queryset, active: bool) -> None:
        for membership in queryset.select_related("user", "organisation"):
            try:
                member_set_active(membership=membership, active=active, acting_user=request.user)
            except AccessError as error:
                self.message_user(request, f"{membership.user}: {error}", messages.ERROR)

    @admin.action(description="Deactivate selected members", permissions=["change"])
    def deactivate(self, request, queryset) -> None:
        self._set_active(request, queryset, False)

    @admin.action(description="Reactivate selected members", permissions=["change"])
    def reactivate(self, request, queryset) -> None:
        self._set_active(request, queryset, True)


@admin.register(AuditEvent)
class AuditEventAdmin(ScopedAdmin, admin.ModelAdmin):
    list_display = ["created_at", "action", "actor", "organisation", "target_type", "target_id"]
    list_filter = ["action", "created_at"]
    search_fields = ["action", "actor__username", "target_id"]
    list_select_related = ["actor", "organisation"]
    readonly_fields = ["created_at", "action", "actor", "organisation", "target_type", "target_id", "detail"]
    view_check = staticmethod(access.can_manage_organisation)
    change_check = add_check = staticmethod(lambda user: False)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
