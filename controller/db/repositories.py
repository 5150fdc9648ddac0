"""Repositories: queries over one session. They flush when they must, and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.base import utcnow
from controller.db.models import (
    AdminAuditLog,
    AppSetting,
    Base,
    Subscription,
    SubscriptionPlan,
    SupportMessage,
    SupportTicket,
    User,
    UserActivity,
    VpnConfig,
)
from controller.domain.enums import (
    SubscriptionStatus,
    SuspendReason,
    TicketStatus,
    UserRole,
)

_T = TypeVar("_T")


class _Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _one_or_none(
        self, stmt: sa.Select[_T], *, for_update: bool, for_share: bool = False
    ) -> _T | None:
        """The single row ``stmt`` selects, optionally locked.

        ``for_update`` takes a write lock (SELECT ... FOR NO KEY UPDATE), ``for_share`` a read lock
        that makes a concurrent writer of the row (e.g. a ban) wait, or be waited for. A locked
        read always refreshes an object the session already holds: the values it loaded
        before the lock may be stale. (SQLite ignores the clauses; its writers are serialised
        by BEGIN IMMEDIATE.)
        """
        if for_update or for_share:
            # FOR NO KEY UPDATE rather than FOR UPDATE: rows that merely reference this one
            # (an audit entry naming its actor, a new subscription of a user) take KEY SHARE
            # locks, and must neither block on it nor deadlock two admins acting on each other.
            stmt = stmt.with_for_update(
                read=not for_update, key_share=for_update
            ).execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def _insert(self, entity: type[Base]) -> Any:
        """An INSERT that understands ON CONFLICT on both supported backends."""
        if self.session.get_bind().dialect.name == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)


class UserRepository(_Repository):
    async def get(
        self, user_id: int, *, for_update: bool = False, for_share: bool = False
    ) -> User | None:
        return await self._one_or_none(
            sa.select(User).where(User.id == user_id), for_update=for_update, for_share=for_share
        )

    async def get_by_telegram_id(
        self, telegram_id: int, *, for_update: bool = False
    ) -> User | None:
        return await self._one_or_none(
            sa.select(User).where(User.telegram_id == telegram_id), for_update=for_update
        )

    async def insert_if_absent(self, values: dict[str, Any]) -> int | None:
        """Insert a user unless one with this telegram_id exists; return the new id or None.

        ON CONFLICT DO NOTHING makes two simultaneous registrations of one Telegram user
        produce one row without either of them failing.
        """
        stmt = (
            self._insert(User)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["telegram_id"])
            .returning(User.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(
        self,
        *,
        role: UserRole | None = None,
        banned: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[User]:
        stmt = sa.select(User).order_by(User.id).limit(limit).offset(offset)
        if role is not None:
            stmt = stmt.where(User.role == role)
        if banned is not None:
            stmt = stmt.where(User.is_banned == banned)
        return (await self.session.execute(stmt)).scalars().all()

    async def count(self) -> int:
        return int((await self.session.execute(sa.select(sa.func.count(User.id)))).scalar_one())

    async def get_by_referral_code(self, code: str) -> User | None:
        return await self._one_or_none(
            sa.select(User).where(User.referral_code == code), for_update=False
        )

    async def claim_trial(self, user_id: int, now: datetime) -> bool:
        """Mark the trial used unless it already is; False when it was (one conditional
        UPDATE, so of two simultaneous claims exactly one wins)."""
        stmt = (
            sa.update(User)
            .where(User.id == user_id, User.trial_used_at.is_(None))
            .values(trial_used_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))


class PlanRepository(_Repository):
    async def get(self, plan_id: int, *, for_update: bool = False) -> SubscriptionPlan | None:
        return await self._one_or_none(
            sa.select(SubscriptionPlan).where(SubscriptionPlan.id == plan_id), for_update=for_update
        )

    async def add(self, plan: SubscriptionPlan) -> SubscriptionPlan:
        self.session.add(plan)
        await self.session.flush()
        return plan

    async def list(self, *, active_only: bool = False) -> Sequence[SubscriptionPlan]:
        stmt = sa.select(SubscriptionPlan).order_by(
            SubscriptionPlan.sort_order, SubscriptionPlan.id
        )
        if active_only:
            stmt = stmt.where(SubscriptionPlan.is_active.is_(True))
        return (await self.session.execute(stmt)).scalars().all()

    async def trial_plan(self) -> SubscriptionPlan | None:
        """The active trial plan that sorts first, if any."""
        stmt = (
            sa.select(SubscriptionPlan)
            .where(SubscriptionPlan.is_active.is_(True), SubscriptionPlan.is_trial.is_(True))
            .order_by(SubscriptionPlan.sort_order, SubscriptionPlan.id)
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalars().first()


@dataclass(frozen=True, slots=True)
class TrafficState:
    subscription_id: int
    used_bytes: int
    limit_bytes: int | None
    status: SubscriptionStatus


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    subscription: Subscription
    plan_name: str | None
    devices_used: int


class SubscriptionRepository(_Repository):
    async def rows_for_user(
        self, user_id: int, subscription_id: int | None = None
    ) -> list[SubscriptionRow]:
        """The user's subscriptions, newest first, with their plan's name and device count."""
        return await self._rows(Subscription.user_id == user_id, subscription_id)

    async def rows_for_telegram_id(
        self, telegram_id: int, subscription_id: int | None = None
    ) -> list[SubscriptionRow]:
        """``rows_for_user`` by the owner's Telegram id, in the same one query (what a bot
        screen asks; [] both for a user without subscriptions and for no such user)."""
        owner = sa.select(User.id).where(User.telegram_id == telegram_id).scalar_subquery()
        return await self._rows(Subscription.user_id == owner, subscription_id)

    async def _rows(
        self, owned: sa.ColumnElement[bool], subscription_id: int | None
    ) -> list[SubscriptionRow]:
        # Correlated, so it counts through the subscription_id index for these rows only
        # (a grouped subquery would count every config of every user).
        devices = (
            sa.select(sa.func.count(VpnConfig.id))
            .where(VpnConfig.subscription_id == Subscription.id)
            .correlate(Subscription)
            .scalar_subquery()
        )
        stmt = (
            sa.select(Subscription, SubscriptionPlan.name, devices)
            .outerjoin(SubscriptionPlan, SubscriptionPlan.id == Subscription.plan_id)
            .where(owned)
            .order_by(Subscription.id.desc())
        )
        if subscription_id is not None:
            stmt = stmt.where(Subscription.id == subscription_id)
        rows = (await self.session.execute(stmt)).all()
        return [SubscriptionRow(row[0], row[1], int(row[2])) for row in rows]

    async def get(self, subscription_id: int, *, for_update: bool = False) -> Subscription | None:
        return await self._one_or_none(
            sa.select(Subscription).where(Subscription.id == subscription_id), for_update=for_update
        )

    async def add(self, subscription: Subscription) -> Subscription:
        self.session.add(subscription)
        await self.session.flush()
        return subscription

    async def list_for_user(self, user_id: int) -> Sequence[Subscription]:
        stmt = (
            sa.select(Subscription)
            .where(Subscription.user_id == user_id)
            .order_by(Subscription.id.desc())
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def latest_renewable(
        self, user_id: int, *, traffic_suspended: bool = False
    ) -> Subscription | None:
        """The user's newest subscription that a grant may extend (not suspended; with
        ``traffic_suspended``, also one stopped by its traffic limit — a paid renewal starts
        a fresh traffic period, which lifts that suspension)."""
        renewable: sa.ColumnElement[bool] = Subscription.status.in_(
            [SubscriptionStatus.ACTIVE, SubscriptionStatus.EXPIRED]
        )
        if traffic_suspended:
            renewable = sa.or_(
                renewable,
                sa.and_(
                    Subscription.status == SubscriptionStatus.SUSPENDED,
                    Subscription.suspend_reason == SuspendReason.TRAFFIC_LIMIT,
                ),
            )
        stmt = (
            sa.select(Subscription)
            .where(Subscription.user_id == user_id, renewable)
            .order_by(Subscription.expires_at.desc(), Subscription.id.desc())
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalars().first()

    async def current_active(self, user_id: int, now: datetime) -> Subscription | None:
        """The user's active, unexpired subscription that ends last."""
        stmt = (
            sa.select(Subscription)
            .where(
                Subscription.user_id == user_id,
                Subscription.status == SubscriptionStatus.ACTIVE,
                Subscription.expires_at > now,
            )
            .order_by(Subscription.expires_at.desc(), Subscription.id.desc())
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalars().first()

    async def expire_due(self, now: datetime) -> list[int]:
        """Mark every active subscription whose time is up as expired, in one statement."""
        stmt = (
            sa.update(Subscription)
            .where(
                Subscription.status == SubscriptionStatus.ACTIVE,
                Subscription.expires_at <= now,
            )
            .values(status=SubscriptionStatus.EXPIRED, updated_at=now)
            .returning(Subscription.id)
            .execution_options(synchronize_session=False)
        )
        return sorted((await self.session.execute(stmt)).scalars().all())

    async def add_traffic(self, subscription_id: int, delta_bytes: int) -> TrafficState | None:
        """Add to the used-traffic counter atomically (no read-modify-write in Python)."""
        stmt = (
            sa.update(Subscription)
            .where(Subscription.id == subscription_id)
            .values(traffic_used_bytes=Subscription.traffic_used_bytes + delta_bytes)
            .returning(
                Subscription.id,
                Subscription.traffic_used_bytes,
                Subscription.traffic_limit_bytes,
                Subscription.status,
            )
            .execution_options(synchronize_session=False)
        )
        row = (await self.session.execute(stmt)).one_or_none()
        if row is None:
            return None
        return TrafficState(row[0], row[1], row[2], SubscriptionStatus(row[3]))

    async def suspend_if_active(
        self, subscription_id: int, reason: SuspendReason, now: datetime
    ) -> bool:
        stmt = (
            sa.update(Subscription)
            .where(
                Subscription.id == subscription_id,
                Subscription.status == SubscriptionStatus.ACTIVE,
            )
            .values(
                status=SubscriptionStatus.SUSPENDED,
                suspend_reason=reason,
                suspended_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))


OPEN_TICKET_STATUSES = (TicketStatus.OPEN, TicketStatus.IN_PROGRESS, TicketStatus.WAITING_CLIENT)


class SupportRepository(_Repository):
    async def add_ticket(self, ticket: SupportTicket) -> SupportTicket:
        self.session.add(ticket)
        await self.session.flush()
        return ticket

    async def add_message(self, message: SupportMessage) -> SupportMessage:
        self.session.add(message)
        await self.session.flush()
        return message

    async def get(self, ticket_id: int) -> SupportTicket | None:
        return await self._one_or_none(
            sa.select(SupportTicket).where(SupportTicket.id == ticket_id), for_update=False
        )

    async def count_open(self, user_id: int) -> int:
        stmt = sa.select(sa.func.count(SupportTicket.id)).where(
            SupportTicket.user_id == user_id, SupportTicket.status.in_(OPEN_TICKET_STATUSES)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def list_for_user(self, user_id: int, *, limit: int) -> Sequence[SupportTicket]:
        stmt = (
            sa.select(SupportTicket)
            .where(SupportTicket.user_id == user_id)
            .order_by(SupportTicket.id.desc())
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()


class AuditRepository(_Repository):
    async def add(self, entry: AdminAuditLog) -> None:
        self.session.add(entry)
        await self.session.flush()

    async def list(self, *, limit: int = 50) -> Sequence[AdminAuditLog]:
        stmt = sa.select(AdminAuditLog).order_by(AdminAuditLog.id.desc()).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()


class ActivityRepository(_Repository):
    async def add(self, user_id: int, action: str, details: dict[str, Any] | None = None) -> None:
        self.session.add(UserActivity(user_id=user_id, action=action, details=details))
        await self.session.flush()


class AppSettingsRepository(_Repository):
    async def get(self, key: str) -> AppSetting | None:
        return await self.session.get(AppSetting, key)

    async def insert_if_absent(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key`` unless the key exists; True when this call stored it."""
        stmt = (
            self._insert(AppSetting)
            .values(key=key, value=value, updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(AppSetting.key)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def set(self, key: str, value: Any, *, updated_by_id: int | None = None) -> None:
        row = await self.session.get(AppSetting, key)
        if row is None:
            self.session.add(AppSetting(key=key, value=value, updated_by_id=updated_by_id))
        else:
            row.value = value
            row.updated_by_id = updated_by_id
        await self.session.flush()
