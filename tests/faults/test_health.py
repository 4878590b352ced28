"""/healthz and the workers' heartbeat page say what is wrong, quickly, and only to those allowed to know."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone

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
def test_a_running_worker_shows_as_alive_to_a_superuser(client, start_worker, django_user_model):
    # Given a worker that has been running for a few heartbeats
    worker = start_worker("visible")
    first = WorkerHeartbeat.objects.get(hostname=worker.hostname).last_seen_at
    wait_for(
        lambda: WorkerHeartbeat.objects.get(hostname=worker.hostname).last_seen_at > first,
        timeout=20,
        message="a second heartbeat",
    )

    # When a superuser opens the workers page
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x"))
    page = client.get(reverse(CHANGELIST)).content.decode()

    # Then it lists the worker as alive, with the queue depths read from Redis
    assert worker.hostname in page
    assert 'alt="True"' in page
    assert "Tasks waiting in queue “celery”</th><td>0</td>" in page


@pytest.fixture
def work_in_two_organisations(open_case, charlie):
    """A failed photo here and another in a second organisation, a worker, and the upload's task unsent."""
    photo = open_case(OBAMA_2, process=False).photos.get()
    Photo.objects.filter(pk=photo.pk).update(status=PhotoStatus.FAILED, failure_reason="No face.")
    elsewhere = Case.objects.create(
        organisation=charlie.membership.organisation, reference="O-1", title="Other", purpose="Other"
    )
    for status in (PhotoStatus.FAILED, PhotoStatus.QUEUED):
        Photo.objects.create(
            organisation=elsewhere.organisation,
            kind="probe",
            case=elsewhere,
            image=photo.image.name,
            width=photo.width,
            height=photo.height,
            status=status,
            failure_reason="No face." if status == PhotoStatus.FAILED else "",
        )
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="celery@gpu-host-7", pid=48213, started_at=now, last_seen_at=now)
    TaskOutbox.objects.update(last_error="ConnectionError: redis://10.1.2.3:6379 refused")


@pytest.mark.django_db
def test_the_workers_page_shows_a_superuser_every_worker_queue_and_failure(
    client, work_in_two_organisations, django_user_model
):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x"))

    response = client.get(reverse(CHANGELIST))

    page = response.content.decode()
    assert response.status_code == 200
    assert "celery@gpu-host-7" in page and "48213" in page
    assert '<td id="failed-photos">2</td>' in page
    assert '<td id="unsent-outbox">1 (oldest' in page and "redis://10.1.2.3:6379 refused" in page
    assert "Tasks waiting in queue “celery”</th><td>n/a</td>" in page


@pytest.mark.django_db
def test_an_org_admin_sees_only_their_organisations_work_on_the_workers_page(client, dana, work_in_two_organisations):
    # When the org admin opens the workers page
    client.force_login(dana)
    response = client.get(reverse(CHANGELIST))

    # Then nothing that spans organisations: no worker host or PID, no queue, no outbox or its errors ...
    page = response.content.decode()
    assert response.status_code == 200
    assert [s for s in ("celery@gpu-host-7", "48213", "10.1.2.3", "unsent-outbox", "Tasks waiting") if s in page] == []
    # ... and the counts are their organisation's: one failed photo, none of the other's queued one
    assert '<td id="failed-photos">1</td>' in page
    assert "Photos waiting for a worker</th><td>0</td>" in page


@pytest.mark.django_db
@pytest.mark.parametrize(("persona", "status"), [("alice", 404), ("bob", 403)])
def test_the_workers_page_is_hidden_from_caseworkers_and_reviewers(client, persona, status, request):
    client.force_login(request.getfixturevalue(persona))

    assert client.get(reverse(CHANGELIST)).status_code == status
