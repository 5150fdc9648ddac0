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
    PromoCode,
    PromoRedemption,
    Subscription,
    SubscriptionPlan,
    User,
    UserActivity,
)
from controller.domain.enums import SubscriptionStatus, SuspendReason, UserRole

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


@dataclass(frozen=True, slots=True)
class TrafficState:
    subscription_id: int
    used_bytes: int
    limit_bytes: int | None
    status: SubscriptionStatus


class SubscriptionRepository(_Repository):
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

    async def latest_renewable(self, user_id: int) -> Subscription | None:
        """The user's newest subscription that a grant may extend (not suspended)."""
        stmt = (
            sa.select(Subscription)
            .where(
                Subscription.user_id == user_id,
                Subscription.status.in_([SubscriptionStatus.ACTIVE, SubscriptionStatus.EXPIRED]),
            )
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


class PromoRepository(_Repository):
    async def get_by_code(self, code: str, *, for_update: bool = False) -> PromoCode | None:
        return await self._one_or_none(
            sa.select(PromoCode).where(PromoCode.code == code), for_update=for_update
        )

    async def add(self, promo: PromoCode) -> PromoCode:
        self.session.add(promo)
        await self.session.flush()
        return promo

    async def claim_use(self, promo_id: int) -> bool:
        """Count one use if the code still has uses left; False when it is exhausted."""
        stmt = (
            sa.update(PromoCode)
            .where(
                PromoCode.id == promo_id,
                sa.or_(PromoCode.max_uses.is_(None), PromoCode.uses_count < PromoCode.max_uses),
            )
            .values(uses_count=PromoCode.uses_count + 1)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def redemption_exists(self, promo_id: int, user_id: int) -> bool:
        stmt = sa.select(PromoRedemption.id).where(
            PromoRedemption.promo_code_id == promo_id, PromoRedemption.user_id == user_id
        )
        return (await self.session.execute(stmt)).first() is not None

    async def add_redemption(self, redemption: PromoRedemption) -> None:
        self.session.add(redemption)
        await self.session.flush()


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
