from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.http import HttpResponseRedirect
from django.urls import reverse, reverse_lazy
from django.utils.text import format_lazy

from portal import access
from portal.admin_mixins import DeclaredLookupsOnly, ScopedAdmin, ServiceErrorsAsMessages
from portal.audit import audit_detail_for, audit_events_for
from portal.keys import api_key_create, api_key_revoke
from portal.models import (
    ApiKey,
    ApiKeyKind,
    AuditEvent,
    Invitation,
    Membership,
    Organisation,
    TaskOutbox,
    WorkerHeartbeat,
)
from portal.services import (
    AccessError,
    invitation_create,
    invitation_link,
    invitation_revoke,
    member_create,
    member_set_active,
    member_set_role,
    organisation_create,
    organisation_update,
    organisation_use_case_approve,
    user_deactivate,
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
    # Deleting a user the activity log names would break its chain (the rows cover the actor's id, and the
    # foreign key protects them): such users are deactivated instead.
    actions = ["deactivate"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        from django.contrib.admin.utils import unquote
        from django.shortcuts import redirect

        user = self.get_object(request, unquote(object_id))
        if user is not None and AuditEvent.objects.filter(actor=user).exists():
            self.message_user(
                request,
                f"{user} cannot be deleted: the activity log names them, and must go on naming them. "
                'Deactivate the account instead (the "Deactivate selected users" action, or untick Active).',
                messages.ERROR,
            )
            return redirect("admin:auth_user_change", user.pk)
        return super().delete_view(request, object_id, extra_context)

    @admin.action(description="Deactivate selected users", permissions=["change"])
    def deactivate(self, request, queryset) -> None:
        for user in queryset:
            try:
                user_deactivate(user=user, acting_user=request.user)
            except AccessError as error:
                self.message_user(request, f"{user}: {error}", messages.ERROR)


_SETTINGS = reverse_lazy("matching:organisation_settings")


class OrganisationAdminForm(forms.ModelForm):
    class Meta:
        model = Organisation
        fields = [
            "name",
            "slug",
            "distance_threshold",
            "max_candidates",
            "target_fmr",
            "fpir_ceiling",
            "audit_max_age_days",
            "retention_days",
            "keep_originals",
            "require_valid_audit",
            "permitted_purpose",
            "legal_basis",
            "use_case_approved_at",
            "threshold_confirmed_at",
            "threshold_confirmed_by",
        ]
        # Shown beside the read-only values: where, and how, they change.
        help_texts = {
            "distance_threshold": format_lazy(
                'Changed only by an org admin confirming a threshold on <a href="{}">the settings page</a>, beside '
                "what it means for searches of this gallery.",
                _SETTINGS,
            ),
            "max_candidates": format_lazy(
                'Confirmed with the threshold on <a href="{}">the settings page</a>.', _SETTINGS
            ),
            "retention_days": format_lazy(
                'Changed only by an org admin on <a href="{}#retention">the settings page</a>, which first lists the '
                "closed cases the change brings due, moves, or stops purging. Empty: kept until erased by hand.",
                _SETTINGS,
            ),
            "slug": "Members sign in as &lt;slug&gt;.&lt;name&gt;. Only a superuser sets it.",
        }


@admin.register(Organisation)
class OrganisationAdmin(ScopedAdmin, admin.ModelAdmin):
    form = OrganisationAdminForm
    organisation_path = "pk"
    list_display = ["name", "slug", "distance_threshold", "max_candidates", "use_case_approved_at", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    view_check = staticmethod(access.can_manage_organisation)
    add_check = staticmethod(lambda user: False)
    use_case_fields = ("permitted_purpose", "legal_basis")
    # Each is its own step on /settings/, which shows what it does first, for superusers too: a superuser is no
    # member, so they are confirmed there by the organisation's own admin.
    settings_fields = ("distance_threshold", "max_candidates", "retention_days")

    def get_readonly_fields(self, request, obj=None):
        # Only a superuser records what an organisation may search for, and on what legal basis, and names its
        # members' namespace.
        confirmation = ["threshold_confirmed_at", "threshold_confirmed_by"]
        if access.is_superuser(request.user):
            return [*self.settings_fields, "use_case_approved_at", *confirmation]
        return ["slug", *self.settings_fields, *self.use_case_fields, "use_case_approved_at", *confirmation]

    def get_prepopulated_fields(self, request, obj=None):
        return self.prepopulated_fields if obj is None else {}

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
        changed = [f for f in form.changed_data if f not in self.use_case_fields]
        organisation_update(
            organisation=Organisation.objects.get(pk=obj.pk),
            acting_user=request.user,
            **{field: form.cleaned_data[field] for field in changed},
        )
        if any(f in form.changed_data for f in self.use_case_fields):
            organisation_use_case_approve(
                organisation=Organisation.objects.get(pk=obj.pk),
                permitted_purpose=form.cleaned_data["permitted_purpose"],
                legal_basis=form.cleaned_data["legal_basis"],
                acting_user=request.user,
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
        # member_create puts the name in the organisation's namespace and refuses a name already used there.
        return self.cleaned_data["username"].strip()

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

    def get_queryset(self, request):
        # An organisation API key acts through a service user with a membership; it is managed, and
        # revoked, as a key (ApiKeyAdmin), not listed among the people.
        return super().get_queryset(request).exclude(user__api_keys__kind=ApiKeyKind.ORGANISATION)

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
class AuditEventAdmin(DeclaredLookupsOnly, ScopedAdmin, admin.ModelAdmin):
    list_display = ["created_at", "action", "actor", "organisation", "target_type", "target_id"]
    list_filter = ["action", "created_at"]
    search_fields = ["action", "actor__username", "target_id"]
    list_select_related = ["actor", "organisation"]
    fields = readonly_fields = ["created_at", "action", "actor", "organisation", "target_type", "target_id", "shown"]
    view_check = staticmethod(access.can_manage_organisation)
    change_check = add_check = staticmethod(lambda user: False)

    def get_queryset(self, request):
        # Blind review: rows that would tell a reviewer that someone has decided are not listed to them.
        return audit_events_for(request.user, super().get_queryset(request))

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # Read-only fields are not given the request; blind review depends on who is reading.
            obj.shown_detail = audit_detail_for(request.user, obj)
        return obj

    @admin.display(description="detail")
    def shown(self, obj: AuditEvent) -> str:
        import json

        return json.dumps(getattr(obj, "shown_detail", {}), indent=1, ensure_ascii=False, sort_keys=True)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False


def _may_see_workers(user) -> bool:
    return access.is_superuser(user) or access.can_manage_organisation(user)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    """Workers and what is waiting or failing. Read-only.

    The whole (each worker's hostname and PID, the broker's queues, the outbox and its errors) spans every
    organisation, so it is for superusers. An org admin sees their own organisation's photos by state.
    """

    list_display = ["hostname", "alive", "last_seen_at", "started_at", "pid"]
    ordering = ["-last_seen_at"]

    def has_module_permission(self, request) -> bool:
        return _may_see_workers(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return _may_see_workers(request.user)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if access.is_superuser(request.user) else queryset.none()

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: WorkerHeartbeat) -> bool:
        from datetime import timedelta

        from django.conf import settings
        from django.utils import timezone

        # Three missed heartbeats, so that one slow database write does not mark a worker dead.
        return obj.last_seen_at >= timezone.now() - timedelta(seconds=3 * settings.WORKER_HEARTBEAT_SECONDS)

    def changelist_view(self, request, extra_context=None):
        from django.apps import apps
        from django.conf import settings
        from django.db.models import Count

        from portal.outbox import outbox_unsent_count, queue_depth

        # By name: portal sits below matching and must not import it.
        photos = apps.get_model("matching", "Photo").objects.all()
        if not access.is_superuser(request.user):
            own = photos.filter(organisation=access.organisation_of(request.user)).exclude(status="done")
            by_status = {row["status"]: row["n"] for row in own.order_by().values("status").annotate(n=Count("id"))}
            context = {
                "title": "Processing of your organisation's photos",
                "organisation_photos": [
                    ("Photos waiting for a worker", by_status.get("queued", 0)),
                    ("Photos being processed", by_status.get("detecting", 0) + by_status.get("matching", 0)),
                ],
                "failed_photos": by_status.get("failed", 0),
                **(extra_context or {}),
            }
            return super().changelist_view(request, extra_context=context)
        depths = [(name, queue_depth(name)) for name in settings.CELERY_TASK_QUEUES]
        oldest_unsent = TaskOutbox.objects.filter(sent_at__isnull=True).order_by("id").first()
        context = {
            "whole": True,
            "queue_depths": [(name, "n/a" if depth is None else depth) for name, depth in depths],
            "failed_photos": photos.filter(status="failed").count(),
            "unsent_outbox": outbox_unsent_count(),
            "oldest_unsent": oldest_unsent,
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)


# API keys: created and revoked by org admins; the secret is shown once, only its hash is kept.


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["organisation", "name", "role"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].required = True
        self.fields["role"].help_text = "The key acts as a member with this role; give it the least it needs."


@admin.register(ApiKey)
class ApiKeyAdmin(ScopedAdmin, admin.ModelAdmin):
    list_display = ["name", "prefix", "kind", "role", "organisation", "created_by", "last_used_at", "active"]
    list_filter = ["kind", "role", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    list_select_related = ["organisation", "created_by"]
    actions = ["revoke"]
    view_check = change_check = add_check = staticmethod(access.can_manage_organisation)
    shown = ["name", "prefix", "kind", "role", "organisation", "user", "created_by", "created_at", "last_used_at"]
    shown += ["revoked_at", "revoked_by"]

    @admin.display(boolean=True, description="active")
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is not None:
            return self.shown
        return ["organisation", "name", "role"] if access.is_superuser(request.user) else ["name", "role"]

    def get_readonly_fields(self, request, obj=None):
        return self.shown if obj is not None else []

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return
        organisation = (
            form.cleaned_data["organisation"]
            if access.is_superuser(request.user)
            else access.organisation_of(request.user)
        )
        key, secret = api_key_create(
            organisation=organisation,
            name=form.cleaned_data["name"],
            role=form.cleaned_data["role"],
            acting_user=request.user,
        )
        obj.pk, obj.prefix, obj.name, obj.organisation = key.pk, key.prefix, key.name, key.organisation
        self.message_user(
            request,
            f"The key's secret, shown only this once: {secret} — copy it now. Only its hash is kept; "
            "if it is lost, revoke the key and create another.",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            try:
                api_key_revoke(api_key=key, acting_user=request.user)
            except AccessError as error:
                self.message_user(request, f"{key}: {error}", messages.ERROR)


class InvitationForm(forms.ModelForm):
    class Meta:
        model = Invitation
        fields = ["email", "role"]


@admin.register(Invitation)
class InvitationAdmin(ServiceErrorsAsMessages, ScopedAdmin, admin.ModelAdmin):
    """Invite someone by email: they get a single-use link that expires after a week."""

    service_errors = (AccessError,)
    form = InvitationForm
    list_display = ["email", "role", "organisation", "invited_by", "created_at", "expires_at", "accepted_at"]
    list_display += ["revoked_at"]
    list_select_related = ["organisation", "invited_by"]
    actions = ["revoke"]
    view_check = add_check = staticmethod(access.can_manage_organisation)
    # "change" only lets the revoke action run: the form itself has no editable field for an existing invitation.
    change_check = staticmethod(access.can_manage_organisation)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["email", "role", "organisation", "invited_by", "created_at", "expires_at", "accepted_at", "revoked_at"]

    def get_fields(self, request, obj=None):
        return ["email", "role"] if obj is None else self.get_readonly_fields(request, obj)

    @admin.action(description="Withdraw selected invitations (their links stop working)", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        for invitation in queryset:
            try:
                invitation_revoke(invitation=invitation, acting_user=request.user)
            except AccessError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"The invitation of {invitation.email} is withdrawn.")

    def save_model(self, request, obj, form, change) -> None:
        # The service queues the mail through the outbox; SMTP being down delays it, the invitation stands.
        if change:
            return
        invitation, token = invitation_create(
            organisation=access.organisation_of(request.user),
            email=form.cleaned_data["email"],
            role=form.cleaned_data["role"],
            acting_user=request.user,
        )
        self.message_user(
            request,
            f"Invitation created; the mail to {invitation.email} is on its way. "
            f"The link works once: {invitation_link(token)}",
        )
        obj.pk, obj.organisation = invitation.pk, invitation.organisation

    def response_add(self, request, obj, post_url_continue=None):
        # The message above says what happened and carries the link; the admin's "was added successfully"
        # beside it would be a second, vaguer one.
        return HttpResponseRedirect(reverse("admin:portal_invitation_changelist"))
