"""The review queue's list filters and its paginator."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.functional import cached_property

from matching.models import Case, Outcome
from portal import access
from reviews import selectors
from reviews.models import Severity


class OpenFilter(admin.SimpleListFilter):
    """Open items this reviewer may still decide are the default view."""

    title = "items"
    parameter_name = "items"

    def lookups(self, request, model_admin):
        return [
            ("mine", "Mine to decide"),
            ("escalated", "Escalated"),
            ("open", "All open"),
            ("decided", "Closed"),
            ("all", "All"),
        ]

    def choices(self, changelist):
        value = self.value() or "mine"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or "mine"
        if value == "mine":
            return selectors.candidates_decidable_by(request.user, queryset)
        if value == "escalated":
            return queryset.filter(outcome=Outcome.ESCALATED)
        if value == "open":
            return queryset.open()
        if value == "decided":
            return queryset.decided()
        return queryset


class CaseFilter(admin.SimpleListFilter):
    """Lists only the cases in the reviewer's own queue; a plain field filter would list every organisation's."""

    title = "case"
    parameter_name = "case"
    # Beyond this many cases a list of links costs more to render than the page itself and helps nobody;
    # the search box (case reference or title) takes over.
    MAX_LISTED = 50

    def lookups(self, request, model_admin):
        organisation = access.organisation_of(request.user)
        if organisation is None:
            return []
        mine = (request.GET.get(OpenFilter.parameter_name) or "mine") == "mine"
        return selectors.queue_cases(
            request.user, organisation, mine=mine, find=lambda: self._case_ids(request, model_admin, organisation, mine)
        )

    def _case_ids(self, request, model_admin, organisation, mine: bool) -> list[int] | None:
        # Cases with open items (closed ones stay reachable through "items"), found from the case side: a
        # DISTINCT over the candidates would read every one of them to list a handful of cases. Under "Mine to
        # decide" (the default), only cases with an item this reviewer may still decide: a case whose items
        # they have all decided would lead to an empty list.
        listed = model_admin.get_queryset(request)
        listed = selectors.candidates_decidable_by(request.user, listed) if mine else listed.open()
        ids = list(
            Case.objects.filter(organisation=organisation)
            .filter(Exists(listed.filter(case=OuterRef("pk")).order_by().values("pk")))
            .order_by()
            .values_list("id", flat=True)[: self.MAX_LISTED + 1]
        )
        return None if len(ids) > self.MAX_LISTED else ids

    def queryset(self, request, queryset):
        return queryset.filter(case_id=self.value()) if self.value() else queryset


class WaitingFilter(admin.SimpleListFilter):
    title = "waiting"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("day", "Under a day"), ("week", "1 to 7 days"), ("older", "Over 7 days")]

    def queryset(self, request, queryset):
        now = timezone.now()
        bounds = {
            "day": Q(created_at__gte=now - timedelta(days=1)),
            "week": Q(created_at__lt=now - timedelta(days=1), created_at__gte=now - timedelta(days=7)),
            "older": Q(created_at__lt=now - timedelta(days=7)),
        }
        return queryset.filter(bounds[self.value()]) if self.value() in bounds else queryset


class SeverityFilter(admin.SimpleListFilter):
    title = "warning severity"
    parameter_name = "severity"

    def lookups(self, request, model_admin):
        return Severity.choices

    def queryset(self, request, queryset):
        return queryset.filter(warning__severity=self.value()) if self.value() else queryset


class ClaimFilter(admin.SimpleListFilter):
    title = "claimed"
    parameter_name = "claimed"

    def lookups(self, request, model_admin):
        return [("me", "By me"), ("nobody", "By nobody"), ("others", "By others only")]

    def queryset(self, request, queryset):
        if self.value() == "me":
            return queryset.filter(claims__reviewer=request.user)
        if self.value() == "nobody":
            return queryset.filter(claims__isnull=True)
        if self.value() == "others":
            return queryset.filter(claims__isnull=False).exclude(claims__reviewer=request.user)
        return queryset


class QueueCountPaginator(Paginator):
    """Counts at most `cap` items: an exact count of a 100k-item queue reads all of it on every page view,
    and a reviewer works from the oldest item down. The queue's template says when the count stopped."""

    cap = 1000

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: self.cap].count()
