"""The review queue costs the same number of queries whatever the number of items (no N+1)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import candidate_with

QUEUE = "/admin/reviews/reviewitem/"


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200, response.status_code
    return len(context)


def test_review_queue_costs_the_same_queries_for_30_items_as_for_3(
    client, alice, bob, org, trained, django_assert_num_queries
):
    # Given a trained reviewer and three open candidates, their warnings already cached by a first visit
    trained(bob)
    for _ in range(3):
        candidate_with(organisation=org, created_by=alice)
    client.force_login(bob)
    client.get(QUEUE)
    with_three = queries_for(client, QUEUE)

    # When there are thirty (again after the visit that caches their warnings)
    for _ in range(27):
        candidate_with(organisation=org, created_by=alice)
    response = client.get(QUEUE)
    assert response.content.count(b'class="action-select"') == 25  # a full page

    # Then the queue costs the same queries
    with django_assert_num_queries(with_three):
        client.get(QUEUE)


def test_review_queue_with_every_filter_set_costs_the_same_queries(
    client, alice, bob, org, trained, django_assert_num_queries
):
    # Scores shown, so that the severity filter is offered too
    from reviews.models import ReviewPolicy

    ReviewPolicy.objects.create(organisation=org, hide_scores_until_compared=False)
    trained(bob)
    for _ in range(3):
        candidate_with(organisation=org, created_by=alice)
    client.force_login(bob)
    url = f"{QUEUE}?items=open&waiting=day&claimed=nobody&severity=unknown"
    client.get(url)
    with_three = queries_for(client, url)

    for _ in range(27):
        candidate_with(organisation=org, created_by=alice)
    client.get(url)

    with django_assert_num_queries(with_three):
        client.get(url)
