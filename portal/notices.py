"""What a service tells the person who asked for a change, beside the change itself.

A refusal is an exception (portal.errors); a notice is the other case: the change went through and did more than
was asked, and the person who made it must hear so. A demotion that withdraws the demoted admin's pending
invitations, for example. Services call `notice_add` and know nothing of requests; NoticesMiddleware
(portal.middleware) shows what a request's services said as messages on the next page. Outside a request (a
shell, a task) notices go nowhere: the activity log records the same facts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_pending: ContextVar[list[str] | None] = ContextVar("portal_notices", default=None)


def notice_add(message: str) -> None:
    pending = _pending.get()
    if pending is not None:
        pending.append(message)


@contextmanager
def notices_collect() -> Iterator[list[str]]:
    """Collect the notices of everything run inside; the list is filled as they come."""
    collected: list[str] = []
    token = _pending.set(collected)
    try:
        yield collected
    finally:
        _pending.reset(token)
