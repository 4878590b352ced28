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


def test_review_queue_reads_its_claims_in_the_same_queries_for_30_claimed_items_as_for_3(
    client, alice, bob, org, trained, django_assert_num_queries
):
    from reviews.services import review_claim

    # Given three open candidates, each claimed by bob, who has seen the queue once
    trained(bob)
    for _ in range(3):
        review_claim(candidate_id=candidate_with(organisation=org, created_by=alice).pk, acting_user=bob)
    client.force_login(bob)
    client.get(QUEUE)
    with_three = queries_for(client, QUEUE)

    # When there are thirty, each claimed by him
    for _ in range(27):
        review_claim(candidate_id=candidate_with(organisation=org, created_by=alice).pk, acting_user=bob)
    response = client.get(QUEUE)
    assert response.content.decode().count('<td class="field-claimed_by">bob</td>') == 25

    # Then the page costs the same queries: the claims and their reviewers' names come in one
    with django_assert_num_queries(with_three):
        client.get(QUEUE)


def _reads_of(client, url: str, table: str) -> int:
    with CaptureQueriesContext(connection) as context:
        assert client.get(url).status_code == 200
    return sum(f'FROM "{table}"' in query["sql"] for query in context.captured_queries)


def test_the_queue_and_a_candidate_read_the_policy_and_the_training_once_a_page(client, alice, bob, org, trained):
    # Given a trained reviewer and a page of open candidates
    trained(bob)
    candidates = [candidate_with(organisation=org, created_by=alice) for _ in range(3)]
    client.force_login(bob)
    client.get(QUEUE)
    candidate = f"{QUEUE}{candidates[0].pk}/change/"

    # When the queue and a candidate's page are loaded, Then each reads the policy and the training once
    assert _reads_of(client, QUEUE, "reviews_reviewpolicy") == 1
    assert _reads_of(client, QUEUE, "reviews_trainingattestation") == 1
    assert _reads_of(client, candidate, "reviews_reviewpolicy") == 1
    assert _reads_of(client, candidate, "reviews_trainingattestation") == 1


def test_a_candidate_page_that_asks_for_the_probe_s_analysis_reads_nothing_of_the_comparison(
    client, alice, bob, org, trained
):
    # Given a trained reviewer who has not analysed the probe of an open candidate
    trained(bob)
    candidate = f"{QUEUE}{candidate_with(organisation=org, created_by=alice).pk}/change/"
    client.force_login(bob)

    # When its page asks for the analysis, Then it reads no feature comparison (the step after the analysis)
    assert 'name="analysis_value"' in client.get(candidate).content.decode()
    assert _reads_of(client, candidate, "reviews_featurecomparison") == 0


def test_the_queue_writes_the_admins_own_action_checkbox(client, alice, bob, org, trained):
    from django.contrib import admin

    from reviews.models import ReviewItem

    # Given an item in the queue
    trained(bob)
    item = ReviewItem.objects.get(pk=candidate_with(organisation=org, created_by=alice).pk)
    client.force_login(bob)

    # When the queue is shown, Then its checkbox is exactly the one Django's widget renders
    django_markup = admin.ModelAdmin.action_checkbox(admin.site._registry[ReviewItem], item)
    assert str(django_markup) in client.get(QUEUE).content.decode()


def test_the_queue_and_the_candidate_page_read_no_permission_tables(client, alice, bob, org, trained):
    # Given a trained reviewer and an open candidate; roles, not Django's permissions, decide what they may do
    trained(bob)
    candidate = candidate_with(organisation=org, created_by=alice)
    client.force_login(bob)

    # When they open the queue, the candidate page and the admin's index
    pages = {}
    for name, url in [
        ("queue", QUEUE),
        ("candidate", f"{QUEUE}{candidate.pk}/change/"),
        ("index", "/admin/"),
    ]:
        with CaptureQueriesContext(connection) as context:
            response = client.get(url)
        assert response.status_code == 200, (name, response.status_code)
        pages[name] = [query["sql"] for query in context if "auth_permission" in query["sql"]]

    # Then the two pages without a side bar build no list of apps, which asks Django's permission tables; the
    # index, which is that list, still does
    assert pages["queue"] == [] and pages["candidate"] == []
    assert pages["index"]


def test_the_candidate_page_reads_the_reviewers_own_decision_comparison_and_the_analyses_once(
    client, alice, org, reviewers
):
    from tests.conftest import analyse, decide

    # Given a candidate that rita has decided and bob has analysed but not yet decided
    bob, rita = reviewers
    candidate = candidate_with(organisation=org, created_by=alice)
    decide(candidate, rita)
    analyse(candidate, bob)
    client.force_login(bob)

    # When bob opens the candidate's page
    with CaptureQueriesContext(connection) as context:
        response = client.get(f"{QUEUE}{candidate.pk}/change/")
    assert response.status_code == 200
    reads = [query["sql"].split(" FROM ")[1].split()[0].strip('"') for query in context if " FROM " in query["sql"]]

    # Then his own decision, his comparison and the probe's analyses are each read once, however many parts of
    # the page ask (the blockers, blind review, hidden scores, the marks, the worksheet)
    assert reads.count("reviews_reviewdecision") == 1
    assert reads.count("reviews_featurecomparison") == 1
    assert reads.count("reviews_probeanalysis") == 1
    # and blind review still holds: nothing of rita's decision is on the page
    assert "Blind review" in response.content.decode() and rita.get_username() not in response.content.decode()
