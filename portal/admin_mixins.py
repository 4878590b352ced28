"""Permission plumbing shared by every ModelAdmin: roles decide, via portal.access."""

from __future__ import annotations

from portal import access


class ScopedAdmin:
    """Limits rows to the user's organisation and answers permissions from roles.

    `organisation_path` is the lookup from the model to its organisation.
    `roles` says which role may view; `editable` whether the row may be changed.
    """

    organisation_path = "organisation"
    view_check = staticmethod(access.can_use_admin)
    change_check = staticmethod(access.can_manage_organisation)
    add_check = staticmethod(access.can_manage_organisation)
    delete_check = staticmethod(lambda user: False)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if access.is_superuser(request.user):
            return queryset
        organisation = access.organisation_of(request.user)
        if organisation is None:
            return queryset.none()
        return queryset.filter(**{self.organisation_path: organisation})

    def has_module_permission(self, request) -> bool:
        return access.is_superuser(request.user) or self.view_check(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return access.is_superuser(request.user) or self.view_check(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return access.is_superuser(request.user) or self.change_check(request.user)

    def has_add_permission(self, request) -> bool:
        return access.is_superuser(request.user) or self.add_check(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.delete_check(request.user)

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Another organisation's row must look exactly like one that does not exist.
        from django.http import Http404

        raise Http404


class ServiceErrorsAsMessages:
    """Shows a service's refusal as an admin message instead of a server error."""

    service_errors: tuple[type[Exception], ...] = ()

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        from django.contrib import messages
        from django.http import HttpResponseRedirect

        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except self.service_errors as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class DeclaredLookupsOnly:
    """Filters the list only by its declared filters: no `?distance__lte=` or `?detail__conclusion=` in the URL.

    Django allows any lookup on a model's own fields, so a crafted URL could binary-search a hidden value.
    Field filters answer to their own field's lookups (`created_at__gte`, `action__exact`), list filter classes
    to their parameter name; anything else is refused (400).
    """

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        for list_filter in self.list_filter:
            if isinstance(list_filter, (list, tuple)):
                list_filter = list_filter[0]
            if isinstance(list_filter, str):
                field, _, rest = lookup.partition("__")
                if field == list_filter and "__" not in rest:
                    return True
            elif getattr(list_filter, "parameter_name", None) == lookup:
                return True
        return False
