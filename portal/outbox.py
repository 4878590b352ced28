"""A transactional outbox for Celery tasks.

A service writes the task it wants sent with `outbox_enqueue`, inside its own
transaction. After the commit, one quick publish is tried; if the broker is
down the row simply waits, and `outbox_flush` (a beat task, and worker start)
sends it later. So a task exists if and only if its rows were committed, a
broker outage never fails or hangs a request, and nothing is lost.

A row may be sent twice (a sender can die between publishing and marking the
row sent), so every task sent this way must be safe to run twice.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.models import TaskOutbox

logger = logging.getLogger(__name__)

# A sender holds a claimed row this long; a publish takes milliseconds, or
# fails within the broker connection timeout.
CLAIM_SECONDS = 60
# After a failed publish, requests skip their own publish for this long rather
# than each waiting on the broker's connection timeout; the sweeper still tries.
PAUSE_AFTER_FAILURE_SECONDS = 5.0
# The longest a request waits on the broker after its commit.
PUBLISH_TIMEOUT_SECONDS = 2.5
# Sent rows are kept this long, for diagnosis, then deleted by the sweeper.
KEEP_SENT = timedelta(days=7)

_paused_until = 0.0


class OutboxOutsideTransaction(RuntimeError):
    """outbox_enqueue was called outside a transaction, where it could not be atomic with anything."""


@dataclass(frozen=True)
class FlushResult:
    sent: int
    failed: int
    unsent: int


def outbox_enqueue(task_name: str, *args: Any) -> TaskOutbox:
    """Record a task to send once the caller's transaction commits. Must be called inside that transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise OutboxOutsideTransaction(f"outbox_enqueue({task_name!r}) must run inside the caller's transaction.")
    row = TaskOutbox.objects.create(task_name=task_name, args=list(args))
    row_id = row.id
    transaction.on_commit(lambda: _publish_after_commit(row_id))
    return row


def _publish_after_commit(row_id: int) -> None:
    if time.monotonic() < _paused_until:
        return
    try:
        outbox_flush(ids=[row_id])
    except Exception:
        # The commit has happened; the sweeper will send the row. The request must not fail now.
        logger.exception("outbox: publishing row %s after commit failed", row_id)


def _publish(row: TaskOutbox) -> None:
    from portal.celery import app

    module = row.task_name.rpartition(".")[0]
    if row.task_name not in app.tasks and module:
        # The web process imports task modules lazily; the task object carries
        # its routing and honours task_always_eager, which send_task does not.
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    task = app.tasks.get(row.task_name)

    def send() -> None:
        # retry=False: one attempt, bounded by the broker connection timeouts in settings.
        if task is not None:
            task.apply_async(args=row.args, retry=False)
        else:
            app.send_task(row.task_name, args=row.args, retry=False)

    if app.conf.task_always_eager:
        # The task runs here, and must see this thread's transaction.
        send()
        return
    # The socket timeouts do not bound a publish to a broker that accepts
    # connections but never answers: redis-py retries the handshake and its
    # health check, with backoff, for minutes. So the wait is bounded here; a
    # publish that finishes after all only makes a duplicate, which is harmless.
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            send()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    sender = threading.Thread(target=run, name="outbox-publish", daemon=True)
    sender.start()
    sender.join(PUBLISH_TIMEOUT_SECONDS)
    if not outcome:
        raise TimeoutError(f"The broker did not answer within {PUBLISH_TIMEOUT_SECONDS:.0f} s.")
    if outcome[0] is not None:
        raise outcome[0]


def outbox_flush(*, ids: list[int] | None = None, limit: int = 500) -> FlushResult:
    """Publish unsent rows, oldest first, stopping at the first broker error. Safe to run concurrently."""
    global _paused_until
    now = timezone.now()
    free = Q(sent_at__isnull=True) & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
    pending = TaskOutbox.objects.filter(free)
    if ids is not None:
        pending = pending.filter(id__in=ids)
    sent = failed = 0
    for row in pending.order_by("id")[:limit]:
        # The conditional update is the claim: of two sweepers, one wins each row.
        claim_until = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
        if not TaskOutbox.objects.filter(free, id=row.id).update(claimed_until=claim_until):
            continue
        try:
            _publish(row)
        except Exception as error:
            failed += 1
            _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
            TaskOutbox.objects.filter(id=row.id).update(
                attempts=F("attempts") + 1, last_error=f"{type(error).__name__}: {error}"[:500], claimed_until=None
            )
            logger.warning("outbox: broker unavailable, %s left for the sweeper: %s", row, error)
            break
        sent += 1
        TaskOutbox.objects.filter(id=row.id).update(
            sent_at=timezone.now(), attempts=F("attempts") + 1, last_error="", claimed_until=None
        )
    if sent:
        _paused_until = 0.0
    unsent = TaskOutbox.objects.filter(sent_at__isnull=True).count() if ids is None else 0
    return FlushResult(sent=sent, failed=failed, unsent=unsent)


def outbox_prune() -> int:
    old = TaskOutbox.objects.filter(sent_at__lt=timezone.now() - KEEP_SENT)
    # Read first: a DELETE would take SQLite's one write lock even when nothing is old enough.
    if not old.exists():
        return 0
    deleted, _ = old.delete()
    return deleted


def outbox_unsent_count() -> int:
    return TaskOutbox.objects.filter(sent_at__isnull=True).count()


# The broker, as seen from the web process and the admin


def _redis_client(timeout: float = 1.0):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from portal.celery import app

    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    # No retries: redis-py's default policy turns a frozen server into a wait of minutes.
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def broker_reachable(timeout: float = 1.0) -> bool | None:
    """True or False for a Redis broker, answered within about `timeout`; None for other brokers."""
    import redis

    client = _redis_client(timeout)
    if client is None:
        return None
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def queue_depth(queue: str | None = None, timeout: float = 1.0) -> int | None:
    """Messages waiting in a queue of a Redis broker; None for other brokers or when Redis does not answer."""
    import redis

    client = _redis_client(timeout)
    if client is None:
        return None
    try:
        return int(client.llen(queue or settings.CELERY_TASK_DEFAULT_QUEUE))
    except redis.RedisError:
        return None
    finally:
        client.close()
