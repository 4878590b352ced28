"""/healthz and the workers' heartbeat page say what is wrong, quickly, and only to those allowed to know."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError
from django.urls import reverse

from matching.models import Case, Photo, PhotoStatus
from portal.models import TaskOutbox, WorkerHeartbeat
from tests.conftest import OBAMA_2, wait_for

CHANGELIST = "admin:portal_workerheartbeat_changelist"


def _health(client):
    started = time.monotonic()
    response = client.get(reverse("healthz"))
    return response, time.monotonic() - started


@pytest.mark.django_db
def test_healthz_reports_the_database_and_the_broker(client, redis_server):
    response, _ = _health(client)

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_healthz_stays_up_and_answers_at_once_when_the_broker_is_down(client, redis_server):
    redis_server.stop()

    response, seconds = _health(client)

    # The web still takes uploads (the outbox keeps them), so it is healthy; it says the broker is not.
    assert response.status_code == 200
    assert response.json()["broker"] == "unreachable"
    assert seconds < 2


@pytest.mark.django_db
def test_healthz_answers_within_seconds_when_the_broker_is_frozen(client, redis_server):
    redis_server.freeze()
    try:
        response, seconds = _health(client)
    finally:
        redis_server.thaw()

    assert response.json()["broker"] == "unreachable"
    assert seconds < 3


@pytest.mark.django_db
def test_healthz_answers_503_when_the_database_is_down(client, monkeypatch):
    class DeadConnection:
        def cursor(self):
            raise OperationalError("connection refused")

    monkeypatch.setattr("portal.views.connection", DeadConnection())

    response, _ = _health(client)

    assert response.status_code == 503
    assert response.json()["database"] == "error: OperationalError"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_running_worker_shows_as_alive_to_the_org_admin(client, start_worker, dana):
    # Given a worker that has been running for a few heartbeats
    worker = start_worker("visible")
    first = WorkerHeartbeat.objects.get(hostname=worker.hostname).last_seen_at
    wait_for(
        lambda: WorkerHeartbeat.objects.get(hostname=worker.hostname).last_seen_at > first,
        timeout=20,
        message="a second heartbeat",
    )

    # When the org admin opens the workers page
    client.force_login(dana)
    page = client.get(reverse(CHANGELIST)).content.decode()

    # Then it lists the worker as alive, with the queue depths read from Redis
    assert worker.hostname in page
    assert 'alt="True"' in page
    assert "Tasks waiting in queue “celery”</th><td>0</td>" in page


@pytest.mark.django_db
def test_the_workers_page_counts_the_organisations_failed_photos_and_unsent_tasks(
    client, dana, open_case, charlie, django_user_model
):
    # Given a failed photo here, another in a second organisation, and the upload's task never sent
    photo = open_case(OBAMA_2, process=False).photos.get()
    Photo.objects.filter(pk=photo.pk).update(status=PhotoStatus.FAILED, failure_reason="No face.")
    elsewhere = Case.objects.create(
        organisation=charlie.membership.organisation, reference="O-1", title="Other", purpose="Other"
    )
    Photo.objects.create(
        organisation=elsewhere.organisation,
        kind="probe",
        case=elsewhere,
        image=photo.image.name,
        width=photo.width,
        height=photo.height,
        status=PhotoStatus.FAILED,
        failure_reason="No face.",
    )
    TaskOutbox.objects.update(last_error="ConnectionError: refused")

    # When the org admin opens the workers page
    client.force_login(dana)
    page = client.get(reverse(CHANGELIST)).content.decode()

    # Then the failures counted are their organisation's, and the queue depth is "n/a" off Redis
    assert '<td id="failed-photos">1</td>' in page
    assert '<td id="unsent-outbox">1 (oldest' in page and "ConnectionError: refused" in page
    assert "Tasks waiting in queue “celery”</th><td>n/a</td>" in page
    # while a superuser sees every organisation's
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x"))
    assert '<td id="failed-photos">2</td>' in client.get(reverse(CHANGELIST)).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(("persona", "status"), [("alice", 404), ("bob", 403)])
def test_the_workers_page_is_hidden_from_caseworkers_and_reviewers(client, persona, status, request):
    client.force_login(request.getfixturevalue(persona))

    assert client.get(reverse(CHANGELIST)).status_code == status
