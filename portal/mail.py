"""Mail, sent only from tasks queued through the outbox, with retries while SMTP is down.

A request that commits a decision or an invitation never talks to SMTP: its service writes an outbox row in
its own transaction, and the task sends the mail. An SMTP outage then delays the mail instead of failing
(or rolling back) the request, and the task retries with backoff until the server answers again.
"""

from __future__ import annotations

import base64
import hashlib
import smtplib
import socket
from typing import Any

from django.conf import settings

# Errors that mean "try again later": the server is down, refuses for now, or the network failed.
MAIL_TRANSIENT = (smtplib.SMTPException, OSError, socket.timeout)


def mail_retry_countdown(retries: int) -> float:
    """Seconds before the next attempt: doubling from MAIL_RETRY_BASE_SECONDS up to MAIL_RETRY_MAX_SECONDS."""
    return min(settings.MAIL_RETRY_MAX_SECONDS, settings.MAIL_RETRY_BASE_SECONDS * 2**retries)


def mail_task_retry(task: Any, error: BaseException) -> None:
    """Raise the task's retry for a transient SMTP error, or the error itself once retries are used up."""
    raise task.retry(
        exc=error, countdown=mail_retry_countdown(task.request.retries), max_retries=settings.MAIL_MAX_RETRIES
    )


def _fernet():
    from cryptography.fernet import Fernet

    digest = hashlib.sha256(b"portal.mail.token:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def secret_seal(secret: str) -> str:
    """Encrypt a secret that must travel in an outbox row and a broker message (an invitation token)."""
    return _fernet().encrypt(secret.encode()).decode()


def secret_open(sealed: str) -> str:
    return _fernet().decrypt(sealed.encode()).decode()
