"""The admin audit log and runtime app settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, UTCDateTime, utcnow
from controller.db.models._types import IdType, fk


class AdminAuditLog(Base):
    """Who changed what, written in the same transaction as the change itself."""

    __tablename__ = "admin_audit_log"
    __table_args__ = (
        sa.Index(None, "created_at"),
        sa.Index(None, "target_type", "target_id"),
        sa.Index(None, "actor_user_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    actor_user_id: Mapped[int | None] = mapped_column(fk("users.id", "SET NULL"))
    actor: Mapped[str] = mapped_column(sa.String(64))  # "cli", "tg:123456", "system"
    action: Mapped[str] = mapped_column(sa.String(64))
    target_type: Mapped[str | None] = mapped_column(sa.String(32))
    target_id: Mapped[str | None] = mapped_column(sa.String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AppSetting(Base):
    """Settings admins change at run time (texts, trial length...), as JSON values."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(sa.JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(fk("users.id", "SET NULL"))
