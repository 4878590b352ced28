"""List pages cost the same number of queries whatever the number of rows (no N+1)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from matching.models import Candidate, Case, Photo
from tests.factories import CaseFactory, candidate_with


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200, response.status_code
    return len(context)


def confirmed_matches_add(case, count: int, organisation, reviewer) -> None:
    """Confirmed candidates of this case, each with its own probe photo, subject and reference face."""
    for _ in range(count):
        candidate = candidate_with(organisation=organisation)
        Photo.objects.filter(faces__search__candidates=candidate).update(case=case)
        Candidate.objects.filter(pk=candidate.pk).update(
            case=case, outcome="confirmed", outcome_by=reviewer, outcome_at=timezone.now(), outcome_reason="Agree."
        )


def test_case_page_costs_the_same_queries_for_30_matches_as_for_3(client, alice, bob, org, django_assert_num_queries):
    # Given a case with 3 probe photos and 3 confirmed matches
    case = CaseFactory(organisation=org, created_by=alice)
    confirmed_matches_add(case, 3, org, bob)
    client.force_login(alice)
    url = reverse("matching:case_detail", args=[case.pk])
    with_three = queries_for(client, url)

    # When it has 30 of each
    confirmed_matches_add(case, 27, org, bob)

    # Then the page costs the same queries
    with django_assert_num_queries(with_three):
        assert client.get(url).status_code == 200


def test_case_list_page_costs_the_same_queries_for_30_cases_as_for_3(
    client, alice, bob, org, django_assert_num_queries
):
    def cases_add(count: int) -> None:
        for _ in range(count):
            confirmed_matches_add(CaseFactory(organisation=org, created_by=alice), 2, org, bob)
        Case.objects.filter(photos__isnull=True).delete()  # the cases candidate_with made and emptied

    # Given 3 cases with photos and candidates
    cases_add(3)
    client.force_login(alice)
    url = reverse("matching:case_list")
    with_three = queries_for(client, url)

    # When there are 30
    cases_add(27)

    # Then the page costs the same queries, and shows every case's counts
    with django_assert_num_queries(with_three):
        response = client.get(url)
    assert len(response.context["rows"]) == 30
    assert {row["confirmed"] for row in response.context["rows"]} == {2}


def test_api_case_list_costs_the_same_queries_for_30_cases_as_for_3(client, alice, org, django_assert_num_queries):
    for _ in range(3):
        CaseFactory(organisation=org, created_by=alice)
    client.force_login(alice)
    url = reverse("case-list")
    with_three = queries_for(client, url)

    for _ in range(27):
        CaseFactory(organisation=org, created_by=alice)

    with django_assert_num_queries(with_three):
        response = client.get(url)
    assert len(response.json()["results"]) == 30


def test_api_match_list_costs_the_same_queries_for_30_matches_as_for_3(
    client, alice, bob, org, django_assert_num_queries
):
    case = CaseFactory(organisation=org, created_by=alice)
    confirmed_matches_add(case, 3, org, bob)
    client.force_login(alice)
    url = reverse("match-list")
    with_three = queries_for(client, url)

    confirmed_matches_add(case, 27, org, bob)

    with django_assert_num_queries(with_three):
        response = client.get(url)
    assert len(response.json()["results"]) == 30
