from __future__ import annotations

from typing import Any

from django.db import models

from portal.models import AuditEvent, Organisation


def audit_record(
    *,
    action: str,
    actor: Any = None,
    organisation: Organisation | None = None,
    organisation_id: int | None = None,
    target: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit row. Call it inside the service's transaction."""
    return AuditEvent.objects.create(
        action=action,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        organisation_id=organisation.pk if organisation is not None else organisation_id,
        target_type=target._meta.label if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        detail=detail or {},
    )
