"""Housekeeping tasks and worker hooks: the outbox sweeper, invitation mail, the activity log's seals and
checkpoints, and the worker heartbeat."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import connections
from django.utils import timezone

logger = logging.getLogger(__name__)

# A heartbeat row nobody has written for this long belongs to a worker that is gone for good.
FORGET_WORKERS_AFTER = timedelta(days=7)


# No autoretry: beat sends the next sweep within seconds, which is the retry.
@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def outbox_flush() -> dict[str, int]:
    from portal import outbox

    result = outbox.outbox_flush()
    pruned = outbox.outbox_prune()
    return {"sent": result.sent, "failed": result.failed, "unsent": result.unsent, "pruned": pruned}


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, soft_time_limit=60, time_limit=90)
def send_invitation_mail(self, invitation_id: int, sealed_token: str) -> bool:
    """Mail an invitation's link. Queued through the outbox by invitation_create; retried while SMTP is down."""
    from portal.mail import MAIL_TRANSIENT, mail_task_retry
    from portal.services import invitation_mail_send

    try:
        return invitation_mail_send(invitation_id=invitation_id, sealed_token=sealed_token)
    except MAIL_TRANSIENT as error:
        mail_task_retry(self, error)
        raise


# Both are safe to run twice: a view is sealed once (under its chain's lock), and each checkpoint is a new file.
@shared_task(acks_late=True, soft_time_limit=240, time_limit=300)
def audit_views_seal() -> int:
    from portal import audit

    return audit.audit_views_seal()


@shared_task(
    acks_late=True,
    soft_time_limit=240,
    time_limit=300,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def audit_checkpoint_export() -> str:
    from portal import audit

    return audit.audit_checkpoint_export()


def worker_heartbeat_record(*, hostname: str, pid: int, started_at: datetime) -> None:
    from portal.models import WorkerHeartbeat

    values = {"pid": pid, "started_at": started_at, "last_seen_at": timezone.now()}
    # One UPDATE rather than update_or_create's read-then-write transaction, which
    # SQLite can refuse at once ("database is locked") while a worker is writing.
    if not WorkerHeartbeat.objects.filter(hostname=hostname[:255]).update(**values):
        WorkerHeartbeat.objects.create(hostname=hostname[:255], **values)


def worker_heartbeats_forget_old() -> int:
    from portal.models import WorkerHeartbeat

    deleted, _ = WorkerHeartbeat.objects.filter(last_seen_at__lt=timezone.now() - FORGET_WORKERS_AFTER).delete()
    return deleted


class WorkerHeartbeatThread(threading.Thread):
    """Writes this worker's heartbeat every WORKER_HEARTBEAT_SECONDS, and sends what the outbox holds at start.

    A thread of the worker's main process rather than a task, so that each worker
    (not whichever one takes a beat task) reports itself, and so that a long photo
    cannot delay it.
    """

    def __init__(self, hostname: str) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.hostname = hostname
        self.started_at = timezone.now()
        self.stopping = threading.Event()

    def run(self) -> None:
        from portal import outbox

        self._safely(worker_heartbeats_forget_old)
        # Rows left unsent while no worker ran (or the broker was down) go out now, not at the next beat.
        self._safely(outbox.outbox_flush)
        while True:
            self._safely(
                lambda: worker_heartbeat_record(hostname=self.hostname, pid=os.getpid(), started_at=self.started_at)
            )
            if self.stopping.wait(settings.WORKER_HEARTBEAT_SECONDS):
                return

    def _safely(self, work) -> None:
        try:
            work()
        except Exception:
            # The database may be down for a while; the worker must keep running and try again.
            logger.exception("worker heartbeat: %s failed", getattr(work, "__name__", "work"))
        finally:
            # This thread's own connections: none is left open for a forked pool child to inherit.
            connections.close_all()


_heartbeat: WorkerHeartbeatThread | None = None


@worker_ready.connect
def start_worker_heartbeat(sender=None, **kwargs) -> None:
    global _heartbeat
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    _heartbeat = WorkerHeartbeatThread(hostname)
    _heartbeat.start()


@worker_shutdown.connect
def stop_worker_heartbeat(sender=None, **kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stopping.set()
        _heartbeat.join(timeout=5)
