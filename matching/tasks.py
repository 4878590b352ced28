from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
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
        services.photo_requeue(photo_id=photo_id)
        if self.request.retries >= MAX_RETRIES:
            services.photo_fail(
                photo_id=photo_id, reason=f"Processing failed after {MAX_RETRIES + 1} attempts: {error}"
            )
            return
        raise
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
