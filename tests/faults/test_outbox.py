"""The task outbox: written with the rows it is about, sent once, and harmless when sent twice."""

from __future__ import annotations

import io
import threading
import time
import zipfile

import pytest
from django.db import connections, transaction

from matching.accuracy.evaluation import audit_dataset_create
from matching.models import AuditDataset, Candidate, Case, Face, Photo, PhotoStatus, Search
from portal import outbox
from portal.models import TaskOutbox
from reviews.disclosure import disclosure_request
from reviews.models import DisclosureReport
from tests.conftest import OBAMA, OBAMA_2


@pytest.mark.django_db(transaction=True)
def test_a_task_cannot_be_put_in_the_outbox_outside_a_transaction():
    # Outside a transaction the row could be committed without the rows it is about, or they without it.
    with pytest.raises(outbox.OutboxOutsideTransaction):
        outbox.outbox_enqueue("matching.tasks.process_photo", 1)

    assert not TaskOutbox.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_case_that_is_rolled_back_leaves_no_task_to_send(open_case):
    with pytest.raises(RuntimeError), transaction.atomic():
        open_case(OBAMA_2, process=False)
        raise RuntimeError("the request failed after the case was written")

    assert not Case.objects.exists()
    assert not TaskOutbox.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_committed_case_has_its_task_sent_and_marked_sent_at_commit(open_case, redis_server):
    case = open_case(OBAMA_2, process=False)

    (row,) = TaskOutbox.objects.all()
    assert (row.task_name, row.args) == ("matching.tasks.process_photo", [case.photos.get().id])
    assert row.sent_at is not None and row.attempts == 1
    assert redis_server.llen("celery") == 1


@pytest.mark.django_db(transaction=True)
def test_two_sweepers_at_once_send_each_row_once(monkeypatch):
    # Given forty unsent rows, and a broker slow enough for two sweepers to overlap
    with transaction.atomic():
        for number in range(40):
            outbox.outbox_enqueue("portal.tasks.no_such_task", number)
    TaskOutbox.objects.update(sent_at=None, attempts=0)
    published: list[int] = []

    def slow_publish(row: TaskOutbox) -> None:
        time.sleep(0.01)
        published.append(row.id)

    monkeypatch.setattr(outbox, "_publish", slow_publish)

    # When two sweepers run together, each on its own connection
    def sweep() -> None:
        try:
            outbox.outbox_flush()
        finally:
            connections.close_all()

    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    for sweeper in sweepers:
        sweeper.start()
    for sweeper in sweepers:
        sweeper.join(timeout=60)

    # Then every row was published exactly once, and is marked sent
    assert sorted(published) == sorted(TaskOutbox.objects.values_list("id", flat=True))
    assert len(published) == 40
    assert not TaskOutbox.objects.filter(sent_at__isnull=True).exists()


@pytest.mark.django_db
def test_a_photo_task_sent_twice_is_processed_once(enrol, open_case, eager_tasks):
    # Given an enrolled subject and a probe whose outbox row is published, then published again
    enrol("OBAMA", OBAMA)
    photo = open_case(OBAMA_2, process=False).photos.get()
    row = TaskOutbox.objects.get(task_name="matching.tasks.process_photo", args=[photo.id])

    # When a sweeper sends the same row twice (as after dying between publishing and marking it sent)
    for _ in range(2):
        TaskOutbox.objects.filter(pk=row.pk).update(sent_at=None, claimed_until=None)
        assert outbox.outbox_flush(ids=[row.pk]).sent == 1

    # Then the photo has one face, one search and one candidate
    assert Photo.objects.get(pk=photo.pk).status == PhotoStatus.DONE
    assert Face.objects.filter(photo=photo).count() == 1
    assert Search.objects.filter(face__photo=photo).count() == 1
    assert Candidate.objects.filter(search__face__photo=photo).count() == 1


@pytest.mark.django_db
def test_a_failed_publish_keeps_the_row_with_its_error_for_the_sweeper(open_case, monkeypatch):
    def refuse(row: TaskOutbox) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(outbox, "_publish", refuse)
    open_case(OBAMA_2, process=False)

    result = outbox.outbox_flush()

    row = TaskOutbox.objects.get()
    assert (result.sent, result.failed, result.unsent) == (0, 1, 1)
    assert row.sent_at is None and row.claimed_until is None and row.attempts == 1
    assert row.last_error == "ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused."


@pytest.mark.django_db(transaction=True)
def test_disclosure_requests_and_evaluation_uploads_are_kept_while_the_broker_is_down(
    redis_server, dana, open_case, faces
):
    # Given a case to disclose, an evaluation set to upload, and a broker that has gone away
    case = open_case(OBAMA_2, process=False)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("a.jpg", faces.read(OBAMA))
    redis_server.stop()

    # When the org admin asks for a disclosure report and uploads an evaluation set
    report = disclosure_request(case=case, acting_user=dana)
    dataset = audit_dataset_create(
        name="Outage set",
        organisation=dana.membership.organisation,
        manifest=b"file,identity,sex\na.jpg,p1,M\n",
        archive=archive.getvalue(),
        acting_user=dana,
    )

    # Then both are committed, and their tasks wait in the outbox instead of being lost
    assert DisclosureReport.objects.filter(pk=report.pk).exists()
    assert AuditDataset.objects.filter(pk=dataset.pk).exists()
    unsent = [(row.task_name, row.args) for row in TaskOutbox.objects.filter(sent_at__isnull=True)]
    assert ("reviews.tasks.generate_disclosure", [report.pk]) in unsent
    assert ("matching.tasks.import_audit_dataset", [dataset.pk]) in unsent

    # And once the broker is back, the sweeper sends them
    redis_server.start()
    assert outbox.outbox_flush().unsent == 0
