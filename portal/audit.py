"""The audit log: append-only and hash-chained."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from portal.models import AuditChainHead, AuditEvent, Organisation

GENESIS = "0" * 64


def event_hash(event: AuditEvent, prev_hash: str) -> str:
    """SHA-256 over the event's content and the previous hash, in a canonical JSON form."""
    payload = {
        "seq": event.seq,
        "prev": prev_hash,
        "created_at": event.created_at.isoformat(),
        "organisation_id": event.organisation_id,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "detail": event.detail,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# How a row's detail reads to one viewer, by target type. The app that owns a target registers a view (reviews
# hides decisions from whoever may still decide the candidate); portal cannot import it, so it asks here.
DetailView = Callable[[Any, AuditEvent], dict[str, Any]]
_detail_views: dict[str, DetailView] = {}


def audit_detail_view_register(target_type: str, view: DetailView) -> None:
    _detail_views[target_type] = view


def audit_detail_for(user: Any, event: AuditEvent) -> dict[str, Any]:
    """The row's detail as this user may read it. The stored row, and its hash, are never changed."""
    view = _detail_views.get(event.target_type)
    return view(user, event) if view is not None else event.detail


@transaction.atomic
def audit_record(
    *,
    action: str,
    actor: Any = None,
    organisation: Organisation | None = None,
    organisation_id: int | None = None,
    target: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit row. Call it inside the service's transaction, so the row commits with the change."""
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
    event = AuditEvent(
        seq=head.last_seq + 1,
        prev_hash=head.last_hash or GENESIS,
        action=action,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        organisation_id=organisation.pk if organisation is not None else organisation_id,
        target_type=target._meta.label if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        # Round-trip through JSON now, so the hash covers exactly what the database will hand back.
        detail=json.loads(json.dumps(detail or {}, default=str)),
        created_at=timezone.now(),
    )
    event.hash = event_hash(event, event.prev_hash)
    event.save()
    head.last_seq, head.last_hash = event.seq, event.hash
    head.save(update_fields=["last_seq", "last_hash"])
    return event


@dataclass(frozen=True)
class ChainBreak:
    seq: int | None
    event_id: int | None
    problem: str


def audit_chain_verify() -> tuple[int, ChainBreak | None]:
    """Walk the chain in order. Returns how many events were checked and the first broken link, if any."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=2000):
        if event.seq != expected_seq:
            return checked, ChainBreak(
                event.seq,
                event.pk,
                f"expected event {expected_seq} next, found {event.seq}: an event was deleted or inserted",
            )
        if event.prev_hash != prev:
            return checked, ChainBreak(event.seq, event.pk, "its link to the previous event does not match")
        if event_hash(event, prev) != event.hash:
            return checked, ChainBreak(event.seq, event.pk, "its content does not match its hash: it was altered")
        prev = event.hash
        expected_seq += 1
        checked += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and head.last_seq != checked:
        return checked, ChainBreak(None, None, f"the chain head records {head.last_seq} events but {checked} exist")
    return checked, None
