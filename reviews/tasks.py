from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from reviews.models import DisclosureReport, DisclosureStatus

# Rows per warnings_refresh call; a full batch means there may be more.
WARNINGS_BATCH = 500


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


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=120, time_limit=150)
def refresh_warnings(organisation_id: int) -> None:
    """Bring the queue's stored warning severities up to date for one organisation; the queue only reads them."""
    from portal.models import Organisation
    from reviews.services import warnings_refresh

    organisation = Organisation.objects.filter(pk=organisation_id).first()
    if organisation is not None:
        for _ in range(1000):  # bounded: a batch that never shrinks must not hold the worker
            if warnings_refresh(organisation=organisation, limit=WARNINGS_BATCH) < WARNINGS_BATCH:
                break


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=300, time_limit=330)
def refresh_all_warnings() -> None:
    """The beat sweep: new candidates and new audit runs come from matching, which does not know about warnings."""
    from portal.models import Organisation

    for organisation_id in Organisation.objects.values_list("pk", flat=True):
        refresh_warnings(organisation_id)
