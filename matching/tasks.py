from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init
from django.db import DatabaseError

from matching import services
from matching.imaging import ImageRejected

logger = logging.getLogger(__name__)

TRANSIENT = (DatabaseError, OSError, ConnectionError)
MAX_RETRIES = 3


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=MAX_RETRIES,
    soft_time_limit=240,
    time_limit=300,
)
def process_photo(self, photo_id: int) -> None:
    try:
        services.photo_process(photo_id=photo_id)
    except ImageRejected as error:
        services.photo_fail(photo_id=photo_id, reason=str(error))
    except SoftTimeLimitExceeded:
        services.photo_fail(photo_id=photo_id, reason="Processing took too long and was stopped.")
    except TRANSIENT as error:
        if services.photo_requeue(photo_id=photo_id) and self.request.retries < MAX_RETRIES:
            raise
        services.photo_fail(photo_id=photo_id, reason=f"Processing failed after several attempts: {error}")
    except Exception as error:
        logger.exception("photo %s failed", photo_id)
        services.photo_fail(photo_id=photo_id, reason=f"The photo could not be processed: {error}")


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    max_retries=MAX_RETRIES,
    soft_time_limit=3000,
    time_limit=3300,
)
def process_enrolment_batch(batch_id: int) -> None:
    services.enrolment_batch_process(batch_id=batch_id)


# No autoretry: beat sends the next sweep within PHOTO_SWEEP_SECONDS, which is the retry.
@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def requeue_stale_photos() -> dict[str, int]:
    result = services.photos_requeue_stale()
    return {"requeued": result.requeued, "resent": result.resent, "given_up": result.given_up}


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=6000, time_limit=6600)
def import_audit_dataset(dataset_id: int) -> None:
    """Import an uploaded evaluation set, then measure it for the organisations it serves."""
    from matching.accuracy import evaluation
    from matching.models import AuditDataset, BatchStatus

    dataset = evaluation.audit_dataset_import(dataset_id=dataset_id)
    if dataset.status == BatchStatus.DONE and not dataset.runs.exists():
        try:
            evaluation.audit_run_for_each_organisation(dataset=dataset, acting_user=dataset.created_by)
        except evaluation.AuditError as error:
            AuditDataset.objects.filter(id=dataset_id).update(failure_reason=str(error)[:500])


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1900)
def purge_expired_cases() -> int:
    """Beat: apply each organisation's retention policy."""
    return services.cases_purge_expired()


# Search across shards: see services.probe_photo_search for why the fan-out is a chord and not a wait.


@shared_task(
    ignore_result=False,  # the chord's callback collects the shards' results through the result backend
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    max_retries=MAX_RETRIES,
    soft_time_limit=120,
    time_limit=150,
)
def search_shard(
    organisation_id: int,
    face_ids: list[int],
    subject_from: int,
    subject_to: int | None,
    threshold: float,
    k: int,
) -> dict:
    return services.gallery_shard_search(
        organisation_id=organisation_id,
        face_ids=face_ids,
        subject_from=subject_from,
        subject_to=subject_to,
        threshold=threshold,
        k=k,
    )


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    max_retries=MAX_RETRIES,
    soft_time_limit=60,
    time_limit=90,
)
def store_search_results(
    shard_results: list[dict], photo_id: int, threshold: float, k: int, gallery_version: int
) -> None:
    """The chord's callback: Celery passes the shards' results first, then these arguments."""
    services.shard_results_store(
        photo_id=photo_id, shard_results=shard_results, threshold=threshold, k=k, gallery_version=gallery_version
    )


@worker_init.connect
@worker_process_init.connect
def _blas_threads_limit(**kwargs) -> None:
    """One BLAS thread per worker process: on a small machine, two BLAS threads per search slow it down
    (and several worker processes already use every core)."""
    from django.conf import settings

    if settings.SEARCH_BLAS_THREADS <= 0:
        return
    import numpy  # noqa: F401  (loads OpenBLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=settings.SEARCH_BLAS_THREADS, user_api="blas")
