"""Support tickets and their messages (tickets become forum topics in the support bot)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controller.db.base import Base, TimestampMixin, UTCDateTime, utcnow
from controller.db.models._types import IdType, TicketPriorityType, TicketStatusType, fk
from controller.domain.enums import TicketPriority, TicketStatus

if TYPE_CHECKING:
    from controller.db.models.users import User


class SupportTicket(TimestampMixin, Base):
    __tablename__ = "support_tickets"
    __table_args__ = (
        sa.Index(None, "status", "priority"),
        sa.Index(None, "user_id", "status"),
        sa.Index(None, "assigned_admin_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(fk("users.id", "CASCADE"))
    assigned_admin_id: Mapped[int | None] = mapped_column(fk("users.id", "SET NULL"))
    subject: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[TicketStatus] = mapped_column(TicketStatusType, default=TicketStatus.OPEN)
    priority: Mapped[TicketPriority] = mapped_column(
        TicketPriorityType, default=TicketPriority.MEDIUM
    )
    forum_topic_id: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    last_message_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="support_tickets", foreign_keys=[user_id])
    messages: Mapped[list[SupportMessage]] = relationship(
        back_populates="ticket", passive_deletes=True, order_by="SupportMessage.id"
    )


class SupportMessage(Base):
    __tablename__ = "support_messages"
    __table_args__ = (sa.Index(None, "ticket_id", "created_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(fk("support_tickets.id", "CASCADE"))
    # Staff may leave; what they wrote stays.
    sender_id: Mapped[int | None] = mapped_column(fk("users.id", "SET NULL"))
    is_from_staff: Mapped[bool] = mapped_column(default=False)
    message: Mapped[str] = mapped_column(sa.Text, default="")
    attachment_file_id: Mapped[str | None] = mapped_column(sa.String(255))
    attachment_type: Mapped[str | None] = mapped_column(sa.String(16))
    telegram_message_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    read_at: Mapped[datetime | None]

    ticket: Mapped[SupportTicket] = relationship(back_populates="messages")
