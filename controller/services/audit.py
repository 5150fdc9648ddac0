"""The audit-log writer: records a staff action inside the transaction that performs it."""

from __future__ import annotations

from typing import Any

from controller.db.models import AdminAuditLog
from controller.db.uow import UnitOfWork
from controller.services.base import Actor


async def record(
    uow: UnitOfWork,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: int | str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit entry to ``uow``'s transaction: it commits or rolls back with the change."""
    await uow.audit.add(
        AdminAuditLog(
            actor_user_id=actor.user_id,
            actor=actor.label,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            details=details,
        )
    )
