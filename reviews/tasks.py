from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from reviews.models import DisclosureReport, DisclosureStatus


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(DatabaseError, OSError),
    retry_backoff=2,
    max_retries=3,
    soft_time_limit=600,
    time_limit=660,
)
def generate_disclosure(report_id: int) -> None:
    from reviews.disclosure import disclosure_generate

    try:
        disclosure_generate(report_id=report_id)
    except (DatabaseError, OSError):
        raise
    except Exception as error:
        DisclosureReport.objects.filter(pk=report_id).update(
            status=DisclosureStatus.FAILED, failure_reason=f"The report could not be generated: {error}"[:500]
        )
        raise


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, soft_time_limit=60, time_limit=90)
def notify_caseworker(self, case_id: int, confirmed: bool) -> None:
    """Mail the caseworker about a decision. Queued through the outbox; retried while SMTP is down."""
    from portal.mail import MAIL_TRANSIENT, mail_task_retry
    from reviews.services import notify_caseworker as caseworker_notify

    try:
        caseworker_notify(case_id=case_id, confirmed=confirmed)
    except MAIL_TRANSIENT as error:
        mail_task_retry(self, error)
        raise
