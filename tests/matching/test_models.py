"""RowImport: the progress and summary that enrolment batches and evaluation sets share."""

from __future__ import annotations

from django.urls import reverse

from matching.models import AuditDataset, EnrolmentBatch
from tests.factories import GalleryFactory

REPORT = [{"status": "enrolled"}, {"status": "refused"}, {"status": "accepted"}, {"status": "enrolled"}]


def test_each_import_names_its_own_accepted_rows_in_the_summary(org):
    batch = EnrolmentBatch(gallery=GalleryFactory(organisation=org), report=REPORT)
    dataset = AuditDataset(organisation=org, name="Set", report=REPORT)

    assert batch.summary == "2 enrolled, 1 refused"
    assert dataset.summary == "1 accepted, 1 refused"


def test_the_pages_poll_the_same_progress_until_it_is_finished(client, dana, org):
    # Given a running batch and a failed evaluation set
    batch = EnrolmentBatch.objects.create(
        gallery=GalleryFactory(organisation=org), archive="x.zip", manifest="x.csv", status="running", rows_total=4
    )
    dataset = AuditDataset.objects.create(organisation=org, name="Set", status="failed", rows_total=2, rows_done=1)
    client.force_login(dana)

    # When their pages are polled
    batch_progress = client.get(reverse("matching:batch_detail", args=[batch.pk]), {"format": "json"}).json()
    dataset_progress = client.get(reverse("matching:audit_dataset", args=[dataset.pk]), {"format": "json"}).json()

    # Then both answer in one shape, finished only once done or failed
    assert batch_progress == {"status": "running", "rows_total": 4, "rows_done": 0, "finished": False}
    assert dataset_progress == {"status": "failed", "rows_total": 2, "rows_done": 1, "finished": True}
