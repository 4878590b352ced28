"""Redis goes away while caseworkers upload: uploads are kept, and the work is sent when Redis returns."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from matching.models import Case, Photo, PhotoStatus
from portal.models import TaskOutbox
from portal.outbox import outbox_flush
from tests.conftest import BIDEN, OBAMA, wait_for
from tests.faults.conftest import all_finished, elapsed, one_face_photos, photo_counts, record_figures

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Each upload must answer well inside this while the broker is down.
MAX_REQUEST_SECONDS = 3.0
OUTAGE_SECONDS = 12.0


def _upload(client, faces, reference: str, name: str):
    started = time.monotonic()
    response = client.post(
        reverse("matching:case_create"),
        {
            "reference": reference,
            "title": "Missing child",
            "purpose": "Locate a missing child",
            "photos": [faces.upload(name)],
        },
    )
    return response, time.monotonic() - started


def test_uploads_during_a_broker_outage_are_kept_and_processed_when_it_returns(
    client, start_worker, redis_server, enrol, alice, faces
):
    # Given a worker, with a few cases processed while Redis is up
    enrol("OBAMA", OBAMA)
    enrol("BIDEN", BIDEN)
    worker = start_worker("outage")
    client.force_login(alice)
    names = one_face_photos(faces, 30)
    for number, name in enumerate(names[:5], start=1):
        assert _upload(client, faces, f"UP-{number}", name)[0].status_code == 302
    wait_for(lambda: all_finished(list(Photo.objects.values_list("id", flat=True))), message="cases before the outage")

    # When Redis stops and caseworkers keep uploading, for longer than a publish pause lasts
    redis_server.stop()
    stopped = time.monotonic()
    slowest = 0.0
    for number, name in enumerate(names[5:], start=1):
        response, seconds = _upload(client, faces, f"DOWN-{number}", name)
        slowest = max(slowest, seconds)
        # Then each upload is accepted at once, neither failing nor hanging
        assert response.status_code == 302, response.content[:500]
        time.sleep(max(0.0, number * OUTAGE_SECONDS / 25 - (time.monotonic() - stopped)))
    down_ids = list(Photo.objects.filter(case__reference__startswith="DOWN-").values_list("id", flat=True))
    unsent_during_outage = TaskOutbox.objects.filter(sent_at__isnull=True).count()
    assert Case.objects.filter(reference__startswith="DOWN-").count() == 25
    assert set(Photo.objects.filter(id__in=down_ids).values_list("status", flat=True)) == {PhotoStatus.QUEUED}
    assert unsent_during_outage == 25

    # And when Redis returns, empty (its queue died with it), the kept work is sent and processed once.
    # A worker that held an unacknowledged task when Redis went away exits (kombu cannot restore the
    # task to a broker that is gone); like systemd, the test starts it again.
    outage = elapsed(stopped)
    redis_server.start()
    returned = time.monotonic()

    def finished() -> bool:
        worker.restart_if_dead()
        return all_finished(down_ids)

    wait_for(finished, timeout=180, message="the cases uploaded during the outage")

    counts = photo_counts(down_ids)
    record_figures(
        "broker down",
        **counts,
        slowest_upload_seconds=round(slowest, 2),
        outage_seconds=outage,
        unsent_during_outage=unsent_during_outage,
        seconds_to_finish_after_return=elapsed(returned),
        worker_restarts=worker.restarts,
    )
    assert slowest < MAX_REQUEST_SECONDS
    assert counts["completed"] == 25
    assert counts["searches"] == counts["faces"] >= 24
    assert counts["duplicated"] == 0
    assert not TaskOutbox.objects.filter(sent_at__isnull=True).exists()


def test_an_upload_while_the_broker_is_frozen_answers_within_seconds_and_is_sent_later(
    client, redis_server, alice, faces
):
    # Given a broker that accepts connections but never answers
    client.force_login(alice)
    redis_server.freeze()
    try:
        # When a caseworker uploads
        response, seconds = _upload(client, faces, "FROZEN-1", one_face_photos(faces, 1)[0])
    finally:
        redis_server.thaw()

    # Then the case is accepted within the broker timeouts, its task kept for later
    assert response.status_code == 302 and seconds < MAX_REQUEST_SECONDS
    (row,) = TaskOutbox.objects.filter(sent_at__isnull=True)
    assert "Timeout" in row.last_error
    # and the sweeper sends it once the broker answers again (the abandoned
    # publish may land too: a duplicate, which the photo claim makes harmless)
    assert outbox_flush().sent == 1
    assert redis_server.llen("celery") >= 1
