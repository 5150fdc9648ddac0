"""Users: idempotent registration from Telegram (with referrals), roles, bans, language,
protocol and server preferences, and activity."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
import structlog

from controller.db.models import Referral, Subscription, User
from controller.db.models.users import new_referral_code
from controller.db.uow import UnitOfWork
from controller.domain import rules
from controller.domain.enums import SubscriptionStatus, SuspendReason, UserRole, VpnProtocol
from controller.domain.errors import InvalidInput, NodeNotFound, UserNotFound
from controller.services import audit
from controller.services.base import Actor, Service
from controller.services.configs import PROVISIONED

log = structlog.get_logger(__name__)

# What new_referral_code() makes (URL-safe base64), within the column's 16 characters.
_REFERRAL_CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


@dataclass(frozen=True, slots=True)
class TelegramProfile:
    """The parts of a Telegram ``User`` object we keep."""

    telegram_id: int
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    is_premium: bool = False


@dataclass(frozen=True, slots=True)
class Registration:
    user: User
    created: bool
    referred_by: int | None = None  # the referrer's user id, when recorded by this call


@dataclass(frozen=True, slots=True)
class ReferralStats:
    code: str
    invited: int  # users who registered through this user's link
    paid: int  # of them, those whose first payment earned the reward
    reward_days: int  # days earned so far


def _clip(value: str | None, limit: int = 255) -> str | None:
    return None if value is None else value[:limit]


class UserService(Service):
    async def register(
        self, profile: TelegramProfile, *, referral_code: str | None = None
    ) -> Registration:
        """Create the user on first contact; later calls refresh the profile. Safe to race.

        A user created by this call with another user's ``referral_code`` (from a deep link)
        is recorded as referred by them. An unknown, malformed or own code is ignored (a
        link is not worth an error), and a known user is never re-referred.
        """
        rules.validate_telegram_id(profile.telegram_id)
        now = self._now()
        async with self._uow() as uow:
            new_id = await uow.users.insert_if_absent(
                {
                    "telegram_id": profile.telegram_id,
                    "username": _clip(profile.username),
                    "first_name": _clip(profile.first_name),
                    "last_name": _clip(profile.last_name),
                    "language_code": rules.normalize_language(profile.language_code),
                    "is_premium": profile.is_premium,
                    "role": UserRole.CLIENT,
                    "referral_code": new_referral_code(),
                    "last_activity": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            user = await uow.users.get_by_telegram_id(profile.telegram_id)
            assert user is not None
            if new_id is None:
                # Known user: keep the profile fresh, but never overwrite a chosen language.
                user.username = _clip(profile.username)
                user.first_name = _clip(profile.first_name)
                user.last_name = _clip(profile.last_name)
                user.is_premium = profile.is_premium
                user.last_activity = now
            referred_by = None
            if new_id is not None:
                referred_by = await _record_referral(uow, user, referral_code)
                details = {"referred_by": referred_by} if referred_by is not None else None
                await uow.activity.add(user.id, "registered", details)
            await uow.commit()
            return Registration(user=user, created=new_id is not None, referred_by=referred_by)

    async def get(self, telegram_id: int) -> User:
        async with self._uow() as uow:
            return await _require(uow, telegram_id)

    async def list(
        self,
        *,
        role: UserRole | None = None,
        banned: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[User]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise InvalidInput("limit must be 1..1000 and offset not negative")
        async with self._uow() as uow:
            return await uow.users.list(role=role, banned=banned, limit=limit, offset=offset)

    async def set_role(self, actor: Actor, telegram_id: int, role: UserRole) -> User:
        """Give a Telegram user a role; a Telegram id not seen before gets a user record."""
        rules.validate_telegram_id(telegram_id)
        now = self._now()
        async with self._uow() as uow:
            existing = await uow.users.get_by_telegram_id(telegram_id)
            previous = existing.role.value if existing is not None else None
            await uow.users.insert_if_absent(
                {
                    "telegram_id": telegram_id,
                    "role": role,
                    "language_code": rules.DEFAULT_LANGUAGE,
                    "referral_code": new_referral_code(),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            user = await _require(uow, telegram_id, for_update=True)
            user.role = role
            await audit.record(
                uow,
                actor,
                "user.set_role",
                target_type="user",
                target_id=user.id,
                details={"telegram_id": telegram_id, "from": previous, "to": role.value},
            )
            await uow.commit()
            return user

    async def ban(self, actor: Actor, telegram_id: int, reason: str | None = None) -> User:
        """Ban a user and suspend their active subscriptions in the same transaction."""
        now = self._now()
        async with self._uow() as uow:
            user = await _require(uow, telegram_id, for_update=True)
            user.is_banned = True
            user.banned_at = now
            user.ban_reason = _clip(reason, 500)
            result = await uow.session.execute(
                sa.update(Subscription)
                .where(
                    Subscription.user_id == user.id,
                    Subscription.status == SubscriptionStatus.ACTIVE,
                )
                .values(
                    status=SubscriptionStatus.SUSPENDED,
                    suspend_reason=SuspendReason.BANNED,
                    suspended_at=now,
                    updated_at=now,
                )
                .returning(Subscription.id)
            )
            suspended = sorted(result.scalars().all())
            await uow.touch_user(user.id)
            await audit.record(
                uow,
                actor,
                "user.ban",
                target_type="user",
                target_id=user.id,
                details={"reason": reason, "suspended_subscriptions": suspended},
            )
            await uow.commit()
            return user

    async def unban(self, actor: Actor, telegram_id: int) -> User:
        """Lift a ban; subscriptions suspended by the ban come back, unless their time or
        traffic ran out meanwhile (then they are expired, or suspended for the traffic limit)."""
        now = self._now()
        async with self._uow() as uow:
            user = await _require(uow, telegram_id, for_update=True)
            user.is_banned = False
            user.banned_at = None
            user.ban_reason = None
            banned = sa.and_(
                Subscription.user_id == user.id,
                Subscription.status == SubscriptionStatus.SUSPENDED,
                Subscription.suspend_reason == SuspendReason.BANNED,
            )
            lifted = {"suspend_reason": None, "suspended_at": None, "updated_at": now}
            within_limit = sa.or_(
                Subscription.traffic_limit_bytes.is_(None),
                Subscription.traffic_used_bytes < Subscription.traffic_limit_bytes,
            )
            await uow.session.execute(
                sa.update(Subscription)
                .where(banned, Subscription.expires_at > now, within_limit)
                .values(status=SubscriptionStatus.ACTIVE, **lifted)
            )
            # Traffic reported during the ban may have used the limit up: that stays off.
            await uow.session.execute(
                sa.update(Subscription)
                .where(banned, Subscription.expires_at > now)
                .values(suspend_reason=SuspendReason.TRAFFIC_LIMIT, updated_at=now)
            )
            # Whatever ran out while banned (or never had an expiry) comes back expired.
            await uow.session.execute(
                sa.update(Subscription)
                .where(banned)
                .values(status=SubscriptionStatus.EXPIRED, **lifted)
            )
            await uow.touch_user(user.id)
            await audit.record(uow, actor, "user.unban", target_type="user", target_id=user.id)
            await uow.commit()
            return user

    async def set_language(self, telegram_id: int, language: str) -> User:
        language = rules.validate_language(language)
        async with self._uow() as uow:
            user = await _require(uow, telegram_id, for_update=True)
            user.language_code = language
            await uow.commit()
            return user

    async def set_preferred_protocol(self, telegram_id: int, protocol: VpnProtocol | None) -> User:
        """The protocol new devices get first (None: no preference, automatic order)."""
        if protocol is not None and protocol not in PROVISIONED:
            raise InvalidInput(f"{protocol.value} is not offered")
        async with self._uow() as uow:
            user = await _require(uow, telegram_id, for_update=True)
            user.preferred_protocol = protocol
            await uow.commit()
            return user

    async def set_auto_select(self, telegram_id: int, enabled: bool) -> User:
        """Whether placement may fall back from the preferred protocol to others."""
        async with self._uow() as uow:
            user = await _require(uow, telegram_id, for_update=True)
            user.auto_select_protocol = enabled
            await uow.commit()
            return user

    async def set_preferred_server(self, telegram_id: int, server_id: int | None) -> User:
        """The node new devices go to first while it has room (None: the best one)."""
        async with self._uow() as uow:
            user = await _require(uow, telegram_id, for_update=True)
            if server_id is not None:
                server = await uow.nodes.get(server_id)
                if server is None or not server.is_active or server.enrolled_at is None:
                    raise NodeNotFound(f"no location with id {server_id}")
            user.preferred_server_id = server_id
            await uow.commit()
            return user

    async def referral_stats(self, telegram_id: int) -> ReferralStats:
        async with self._uow().read_only() as uow:
            user = await _require(uow, telegram_id)
            counts = await uow.referrals.counts(user.id)
            return ReferralStats(
                code=user.referral_code,
                invited=counts.invited,
                paid=counts.rewarded,
                reward_days=counts.reward_days,
            )

    async def touch(self, telegram_id: int) -> None:
        """Record that the user was active just now."""
        async with self._uow() as uow:
            await uow.session.execute(
                sa.update(User)
                .where(User.telegram_id == telegram_id)
                .values(last_activity=self._now())
            )
            await uow.commit()


async def _record_referral(uow: UnitOfWork, user: User, code: str | None) -> int | None:
    """Store who referred the just-created ``user``; the referrer's id, or None."""
    if not isinstance(code, str) or not _REFERRAL_CODE.fullmatch(code):
        return None
    referrer = await uow.users.get_by_referral_code(code)
    if referrer is None or referrer.id == user.id:
        return None
    await uow.referrals.add(Referral(referrer_id=referrer.id, referred_id=user.id))
    log.info("referral_recorded", referrer_id=referrer.id, referred_id=user.id)
    return referrer.id


async def _require(uow: UnitOfWork, telegram_id: int, *, for_update: bool = False) -> User:
    user = await uow.users.get_by_telegram_id(telegram_id, for_update=for_update)
    if user is None:
        raise UserNotFound(f"no user with Telegram id {telegram_id}")
    return user
