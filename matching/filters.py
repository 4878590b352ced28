"""The API's list filters (django-filter), each bounded to what the database can store.

An integer the database cannot hold (SQLite's and PostgreSQL's bigint is 64-bit signed) is refused by the form
field before any query is built, so it answers 400 rather than reaching the driver (SQLite's raises
OverflowError, a 500). Unknown query parameters are refused too: a misspelt filter must not return everything.
"""

from __future__ import annotations

import datetime
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.contrib.django_filters import DjangoFilterExtension

from portal.api import unknown_fields_refuse
from portal.pagination import PAGE_MAX

# The largest id of a BigAutoField, on SQLite and PostgreSQL alike.
ID_MAX = 2**63 - 1


class IntegerFilter(django_filters.NumberFilter):
    """An integer, not the decimal that NumberFilter reads: bounds come as the field's min_value and max_value."""

    field_class = forms.IntegerField


class IdFilter(IntegerFilter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(*args, **kwargs)


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 moment, turned to UTC here: Python allows offsets up to ±23:59, PostgreSQL refuses those
    beyond ±15:59 (a 500), and a moment that leaves years 1 to 9999 in UTC has no place in a query."""

    def to_python(self, value: Any) -> datetime.datetime | None:
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(datetime.UTC)
        except OverflowError:
            raise ValidationError(self.error_messages["invalid"], code="invalid") from None


class MomentFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class PageFilterSet(django_filters.FilterSet):
    """Every list takes `?page=`; the paginator reads it, this only bounds it."""

    page = IntegerFilter(min_value=1, max_value=PAGE_MAX, method="page_keep", help_text="A page of 50.")

    def page_keep(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        return queryset


class CaseFilterSet(PageFilterSet):
    reference = django_filters.CharFilter(max_length=100, help_text="Exact reference number.")
    created_after = MomentFilter(field_name="created_at", lookup_expr="gte")
    created_before = MomentFilter(field_name="created_at", lookup_expr="lt")


class MatchFilterSet(PageFilterSet):
    case = IdFilter(field_name="case_id", help_text="Only this case's matches.")
    confirmed_after = MomentFilter(field_name="outcome_at", lookup_expr="gte")
    confirmed_before = MomentFilter(field_name="outcome_at", lookup_expr="lt")


class SubjectFilterSet(PageFilterSet):
    code = django_filters.CharFilter(max_length=100, help_text="Exact reference code.")


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter's backend, refusing query parameters the view's filter set does not declare.

    The filter sets name no model: one view filters several (a gallery's subjects and imports), and each is
    given its queryset."""

    def filter_queryset(self, request, queryset: QuerySet, view) -> QuerySet:
        filterset_class = self.get_filterset_class(view, queryset) or PageFilterSet
        unknown_fields_refuse(request.query_params.keys(), filterset_class.base_filters.keys())
        filterset = filterset_class(data=request.query_params, queryset=queryset, request=request)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        return filterset.qs


class StrictFilterExtension(DjangoFilterExtension):
    """drf-spectacular's description of the filters, with the bounds their form fields enforce."""

    target_class = StrictFilterBackend
    priority = 1

    def resolve_filter_field(self, auto_schema, model, filterset_class, field_name, filter_field) -> list[dict]:
        parameters = super().resolve_filter_field(auto_schema, model, filterset_class, field_name, filter_field)
        field = filter_field.field
        bounds: dict[str, Any] = {}
        if isinstance(field, forms.IntegerField):
            bounds["type"] = "integer"
            bounds.update({"minimum": field.min_value, "maximum": field.max_value})
        elif isinstance(field, forms.CharField) and field.max_length:
            bounds["maxLength"] = field.max_length
        for parameter in parameters:
            parameter["schema"].update({key: value for key, value in bounds.items() if value is not None})
        return parameters
