"""Work that gets stuck is queued again; work that keeps failing ends failed, with its reason."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from matching import services
from matching.models import Photo, PhotoStatus
from matching.services import processing
from matching.tasks import process_photo
from portal.models import TaskOutbox
from tests.conftest import OBAMA_2, wait_for
from tests.faults.conftest import record_figures

LONG_AGO = timedelta(hours=2)


def _sends_for(photo: Photo) -> int:
    return TaskOutbox.objects.filter(task_name="matching.tasks.process_photo", args=[photo.id]).count()


def _left(photo: Photo, status: str, attempts: int) -> None:
    Photo.objects.filter(pk=photo.pk).update(
        status=status, attempts=attempts, status_changed_at=timezone.now() - LONG_AGO
    )


@pytest.mark.django_db
def test_a_photo_left_working_by_a_lost_worker_is_queued_and_sent_again(open_case):
    photo = open_case(OBAMA_2, process=False).photos.get()
    _left(photo, PhotoStatus.DETECTING, attempts=1)

    result = services.photos_requeue_stale()

    photo.refresh_from_db()
    assert (result.requeued, photo.status) == (1, PhotoStatus.QUEUED)
    assert _sends_for(photo) == 2  # the upload's, and the sweeper's


@pytest.mark.django_db
def test_a_photo_still_within_the_stale_timeout_is_left_to_its_worker(open_case, settings):
    settings.PHOTO_STALE_AFTER_SECONDS = 900
    photo = open_case(OBAMA_2, process=False).photos.get()
    Photo.objects.filter(pk=photo.pk).update(
        status=PhotoStatus.MATCHING, attempts=1, status_changed_at=timezone.now() - timedelta(seconds=600)
    )

    services.photos_requeue_stale()

    photo.refresh_from_db()
    assert photo.status == PhotoStatus.MATCHING
    assert _sends_for(photo) == 1


@pytest.mark.django_db(transaction=True)
def test_a_queued_photo_whose_message_was_lost_is_sent_again_once_the_queue_is_empty(redis_server, open_case):
    import redis

    # Given an old queued photo whose message died with a worker, and nothing else queued
    photo = open_case(OBAMA_2, process=False).photos.get()
    assert redis_server.llen("celery") == 1  # the upload's own message
    redis.Redis.from_url(redis_server.url).delete("celery")
    Photo.objects.filter(pk=photo.pk).update(status_changed_at=timezone.now() - LONG_AGO)

    result = services.photos_requeue_stale()

    assert result.resent == 1
    assert redis_server.llen("celery") == 1


@pytest.mark.django_db(transaction=True)
def test_a_queued_photo_is_not_sent_again_while_the_queue_holds_a_backlog(redis_server, open_case):
    # Given an old queued photo whose message may still be waiting behind others
    photo = open_case(OBAMA_2, process=False).photos.get()
    Photo.objects.filter(pk=photo.pk).update(status_changed_at=timezone.now() - LONG_AGO)

    result = services.photos_requeue_stale()

    assert result.resent == 0
    assert _sends_for(photo) == 1


@pytest.mark.django_db
def test_a_photo_interrupted_at_every_attempt_ends_failed_with_the_reason(open_case, settings):
    settings.PHOTO_MAX_ATTEMPTS = 3
    photo = open_case(OBAMA_2, process=False).photos.get()
    _left(photo, PhotoStatus.DETECTING, attempts=3)

    result = services.photos_requeue_stale()

    photo.refresh_from_db()
    assert result.given_up == 1
    assert (photo.status, photo.failure_reason) == (
        PhotoStatus.FAILED,
        "Processing was interrupted 3 times; giving up.",
    )
    assert _sends_for(photo) == 1


@pytest.mark.django_db
def test_a_redelivered_task_for_a_photo_out_of_attempts_fails_it_instead_of_running(open_case, settings):
    settings.PHOTO_MAX_ATTEMPTS = 3
    photo = open_case(OBAMA_2, process=False).photos.get()
    _left(photo, PhotoStatus.MATCHING, attempts=3)

    services.photo_process(photo_id=photo.id)

    photo.refresh_from_db()
    assert photo.status == PhotoStatus.FAILED
    assert not photo.faces.exists()


@pytest.mark.django_db
def test_a_photo_whose_database_writes_keep_failing_ends_failed_after_bounded_retries(open_case, monkeypatch, settings):
    # Given a database that refuses every write of faces
    settings.PHOTO_MAX_ATTEMPTS = 3
    photo = open_case(OBAMA_2, process=False).photos.get()

    def refuse(*args, **kwargs):
        raise OperationalError("could not extend file: No space left on device")

    monkeypatch.setattr(processing, "_faces_store", refuse)

    # When the task runs in this process, its retries run at once instead of after their countdown
    process_photo.apply(args=[photo.id])

    # Then it gives up after PHOTO_MAX_ATTEMPTS, with the last error as the reason
    photo.refresh_from_db()
    assert photo.attempts == 3
    assert photo.status == PhotoStatus.FAILED
    assert "No space left on device" in photo.failure_reason


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_photo_that_kills_every_worker_ends_failed_after_three_attempts(start_worker, open_case):
    # Given a photo slow enough (full size, no downscaling) to be caught mid-detection
    photo = open_case("compreface/004_A.jpg", process=False).photos.get()
    slow = {"FACE_MAX_SIDE": "0", "PHOTO_MAX_ATTEMPTS": "3"}

    # When every worker that takes it dies (SIGKILL, as from the kernel's OOM killer)
    for attempt in (1, 2, 3):
        worker = start_worker(f"poison{attempt}", **slow)
        wait_for(
            lambda attempt=attempt: Photo.objects.filter(
                pk=photo.pk, status=PhotoStatus.DETECTING, attempts=attempt
            ).exists(),
            timeout=60,
            interval=0.05,
            message=f"attempt {attempt} at the photo",
        )
        worker.kill(signal.SIGKILL)
    start_worker("survivor", **slow)

    # Then the sweeper gives up on it, with the reason, instead of handing it out again
    wait_for(
        lambda: Photo.objects.filter(pk=photo.pk, status=PhotoStatus.FAILED).exists(),
        timeout=60,
        message="the photo to be given up",
    )
    photo.refresh_from_db()
    record_figures("poison photo", attempts=photo.attempts, status=photo.status, reason=photo.failure_reason)
    assert photo.attempts == 3
    assert photo.failure_reason == "Processing was interrupted 3 times; giving up."
