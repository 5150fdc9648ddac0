"""Users, their activity trail and referrals."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controller.db.base import Base, TimestampMixin, UTCDateTime, utcnow
from controller.db.models._types import IdType, UserRoleType, VpnProtocolType, fk
from controller.domain.enums import UserRole, VpnProtocol

if TYPE_CHECKING:
    from controller.db.models.billing import Payment, Subscription
    from controller.db.models.support import SupportTicket


def new_referral_code() -> str:
    return secrets.token_urlsafe(9)


class User(TimestampMixin, Base):
    """A Telegram user: a client, or staff (admin, support) of the seller."""

    __tablename__ = "users"
    __table_args__ = (
        sa.Index(None, "role"),
        sa.Index(None, "username"),
        sa.Index(None, "country_code"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    telegram_id: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    username: Mapped[str | None] = mapped_column(sa.String(255))
    first_name: Mapped[str | None] = mapped_column(sa.String(255))
    last_name: Mapped[str | None] = mapped_column(sa.String(255))

    language_code: Mapped[str] = mapped_column(sa.String(10), default="ru")
    role: Mapped[UserRole] = mapped_column(UserRoleType, default=UserRole.CLIENT)

    is_active: Mapped[bool] = mapped_column(default=True)
    is_banned: Mapped[bool] = mapped_column(default=False)
    is_premium: Mapped[bool] = mapped_column(default=False)
    banned_at: Mapped[datetime | None]
    ban_reason: Mapped[str | None] = mapped_column(sa.String(500))

    preferred_protocol: Mapped[VpnProtocol | None] = mapped_column(VpnProtocolType)
    auto_select_protocol: Mapped[bool] = mapped_column(default=True)
    preferred_server_id: Mapped[int | None] = mapped_column(fk("servers.id", "SET NULL"))

    registration_ip: Mapped[str | None] = mapped_column(sa.String(45))
    country_code: Mapped[str | None] = mapped_column(sa.String(2))

    referral_code: Mapped[str] = mapped_column(
        sa.String(16), unique=True, default=new_referral_code
    )
    trial_used_at: Mapped[datetime | None]
    last_activity: Mapped[datetime | None]

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="user", passive_deletes=True
    )
    payments: Mapped[list[Payment]] = relationship(back_populates="user", passive_deletes=True)
    support_tickets: Mapped[list[SupportTicket]] = relationship(
        back_populates="user", foreign_keys="SupportTicket.user_id", passive_deletes=True
    )

    @property
    def is_staff(self) -> bool:
        return self.role in (UserRole.ADMIN, UserRole.SUPPORT)

    def __repr__(self) -> str:
        return f"<User id={self.id} telegram_id={self.telegram_id}>"


class UserActivity(Base):
    """What a user did and when: the trail support and admins look at."""

    __tablename__ = "user_activity"
    __table_args__ = (sa.Index(None, "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(fk("users.id", "CASCADE"))
    action: Mapped[str] = mapped_column(sa.String(100))
    details: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    ip_address: Mapped[str | None] = mapped_column(sa.String(45))
    user_agent: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Referral(Base):
    """Who brought whom. A user can be referred once, and never by themselves."""

    __tablename__ = "referrals"
    __table_args__ = (
        sa.CheckConstraint("referrer_id <> referred_id", name="not_self"),
        sa.Index(None, "referrer_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # The record outlives the referrer: a referred user stays referred (and rewarded) once.
    referrer_id: Mapped[int | None] = mapped_column(fk("users.id", "SET NULL"))
    referred_id: Mapped[int] = mapped_column(fk("users.id", "CASCADE"), unique=True)
    reward_days: Mapped[int | None]
    rewarded_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
