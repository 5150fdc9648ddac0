"""Subscriptions: creation from a plan, extension, suspension, expiry and traffic limits,
the client's overview of them and the one-time trial."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.db.models import Subscription, SubscriptionPlan, User
from controller.db.models.users import new_referral_code
from controller.db.repositories import SubscriptionRow
from controller.db.uow import UnitOfWork
from controller.domain import rules
from controller.domain.enums import SubscriptionStatus, SuspendReason
from controller.domain.errors import (
    InvalidInput,
    InvalidStateTransition,
    PlanInactive,
    PlanNotFound,
    SubscriptionNotFound,
    TrialAlreadyUsed,
    TrialUnavailable,
    UserBanned,
    UserNotFound,
)
from controller.services import audit
from controller.services.base import Actor, Service


@dataclass(frozen=True, slots=True)
class TrafficResult:
    subscription_id: int
    used_bytes: int
    limit_bytes: int | None
    limit_reached: bool
    suspended_now: bool


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    """A subscription as the client sees it (with its plan's name and device count)."""

    id: int
    plan_id: int | None
    plan_name: str | None
    status: SubscriptionStatus
    suspend_reason: SuspendReason | None
    started_at: datetime | None
    expires_at: datetime | None
    traffic_used_bytes: int
    traffic_limit_bytes: int | None
    device_limit: int
    devices_used: int
    auto_renew: bool

    @classmethod
    def of(cls, row: SubscriptionRow) -> SubscriptionView:
        s = row.subscription
        return cls(
            id=s.id,
            plan_id=s.plan_id,
            plan_name=row.plan_name,
            status=s.status,
            suspend_reason=s.suspend_reason,
            started_at=s.started_at,
            expires_at=s.expires_at,
            traffic_used_bytes=s.traffic_used_bytes,
            traffic_limit_bytes=s.traffic_limit_bytes,
            device_limit=s.device_limit,
            devices_used=row.devices_used,
            auto_renew=s.auto_renew,
        )


class SubscriptionService(Service):
    async def overview(self, telegram_id: int) -> list[SubscriptionView]:
        """The user's subscriptions, newest first."""
        async with self._uow().read_only() as uow:
            rows = await uow.subscriptions.rows_for_telegram_id(telegram_id)
            if not rows:
                await require_user(uow, telegram_id)  # "no such user" is not "no subscriptions"
            return [SubscriptionView.of(r) for r in rows]

    async def view(self, telegram_id: int, subscription_id: int) -> SubscriptionView:
        """One of the user's own subscriptions (another user's is "not found")."""
        async with self._uow().read_only() as uow:
            rows = await uow.subscriptions.rows_for_telegram_id(telegram_id, subscription_id)
            if not rows:
                await require_user(uow, telegram_id)
                raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
            return SubscriptionView.of(rows[0])

    async def set_auto_renew_for(
        self, telegram_id: int, subscription_id: int, enabled: bool
    ) -> SubscriptionView:
        async with self._uow() as uow:
            user = await require_user(uow, telegram_id)
            subscription = await uow.subscriptions.get(subscription_id, for_update=True)
            if subscription is None or subscription.user_id != user.id:
                raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
            subscription.auto_renew = enabled
            await uow.session.flush()
            view = await _view(uow, user.id, subscription_id)
            await uow.commit()
            return view

    async def start_trial(self, telegram_id: int) -> Subscription:
        """The one free trial a user gets, on the active trial plan.

        ``trial_used_at`` is claimed with a conditional UPDATE in the same transaction as the
        subscription, so two simultaneous requests give one trial, and a failure gives none.
        """
        now = self._now()
        async with self._uow() as uow:
            user = await require_user(uow, telegram_id)
            if user.is_banned:
                raise UserBanned("this user is banned")
            if user.trial_used_at is not None:
                raise TrialAlreadyUsed("the free trial has already been used")
            if await uow.subscriptions.current_active(user.id, now) is not None:
                raise TrialAlreadyUsed(
                    "the free trial is for newcomers; you already have an active subscription"
                )
            plan = await uow.plans.trial_plan()
            if plan is None:
                raise TrialUnavailable("no free trial is offered right now")
            if not await uow.users.claim_trial(user.id, now):
                raise TrialAlreadyUsed("the free trial has already been used")
            subscription = await start_from_plan(uow, user.id, plan.id, now=now)
            await uow.activity.add(
                user.id, "trial_started", {"plan_id": plan.id, "subscription_id": subscription.id}
            )
            await uow.commit()
            return subscription

    async def create_from_plan(
        self,
        user_id: int,
        plan_id: int,
        *,
        actor: Actor | None = None,
        allow_inactive_plan: bool = False,
    ) -> Subscription:
        """Start a new active subscription with the plan's duration and limits."""
        async with self._uow() as uow:
            subscription = await start_from_plan(
                uow, user_id, plan_id, now=self._now(), allow_inactive_plan=allow_inactive_plan
            )
            if actor is not None:
                await audit.record(
                    uow,
                    actor,
                    "subscription.create",
                    target_type="subscription",
                    target_id=subscription.id,
                    details={"user_id": user_id, "plan_id": plan_id},
                )
            await uow.commit()
            return subscription

    async def extend(
        self, subscription_id: int, days: int, *, actor: Actor | None = None
    ) -> Subscription:
        """Add days: from the current expiry while time is left, otherwise from now.

        The row is locked for the read-modify-write, so simultaneous extensions all count.
        Pending and expired subscriptions become active; a suspended one stays suspended, and
        one whose owner is banned is held suspended by the ban (unban brings it back).
        """
        rules.validate_days(days)
        async with self._uow() as uow:
            subscription = await _require(uow, subscription_id)
            now = self._now()
            extend_locked(subscription, days, now)
            await keep_ban(uow, subscription, now)
            await uow.touch_subscriptions([subscription.id])
            if actor is not None:
                await audit.record(
                    uow,
                    actor,
                    "subscription.extend",
                    target_type="subscription",
                    target_id=subscription.id,
                    details={"days": days},
                )
            await uow.commit()
            return subscription

    async def grant(
        self,
        actor: Actor,
        telegram_id: int,
        *,
        plan_id: int | None = None,
        days: int | None = None,
        devices: int | None = None,
    ) -> Subscription:
        """Give access without payment (audited). A Telegram id not seen before gets a user
        record. The user's current subscription (active or expired) is extended — with a
        plan, renewed on that plan's terms — otherwise a new one starts."""
        if (plan_id is None) == (days is None):
            raise InvalidInput("give either a plan or a number of days")
        if days is not None:
            rules.validate_days(days)
        if devices is not None:
            rules.validate_device_limit(devices)
        rules.validate_telegram_id(telegram_id)
        now = self._now()
        async with self._uow() as uow:
            await uow.users.insert_if_absent(
                {
                    "telegram_id": telegram_id,
                    "language_code": rules.DEFAULT_LANGUAGE,
                    "referral_code": new_referral_code(),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            user = await uow.users.get_by_telegram_id(telegram_id)
            if user is None:  # deleted in between
                raise UserNotFound(f"no user with Telegram id {telegram_id}")
            current = await uow.subscriptions.latest_renewable(user.id)
            if current is not None:
                subscription = await _require(uow, current.id)
                if plan_id is not None:
                    plan = await require_plan(uow, plan_id, allow_inactive=True)
                    renew_locked(subscription, plan, now)
                else:
                    assert days is not None
                    extend_locked(subscription, days, now)
                if devices is not None:
                    subscription.device_limit = devices
                await keep_ban(uow, subscription, now)
            elif plan_id is not None:
                subscription = await start_from_plan(
                    uow, user.id, plan_id, now=now, allow_inactive_plan=True
                )
                if devices is not None:
                    subscription.device_limit = devices
            else:
                assert days is not None
                if user.is_banned:
                    raise UserBanned("this user is banned")
                subscription = await uow.subscriptions.add(
                    Subscription(
                        user_id=user.id,
                        status=SubscriptionStatus.ACTIVE,
                        started_at=now,
                        expires_at=now + timedelta(days=days),
                        traffic_used_bytes=0,
                        device_limit=devices or 1,
                        active_protocol=user.preferred_protocol,
                    )
                )
            await uow.touch_subscriptions([subscription.id])
            await audit.record(
                uow,
                actor,
                "subscription.grant",
                target_type="subscription",
                target_id=subscription.id,
                details={"telegram_id": telegram_id, "plan_id": plan_id, "days": days},
            )
            await uow.commit()
            return subscription

    async def renew_from_plan(self, subscription_id: int, plan_id: int) -> Subscription:
        """A paid renewal: add the plan's days, take its limits and start a fresh traffic
        period (lifting a traffic-limit suspension)."""
        async with self._uow() as uow:
            subscription = await _require(uow, subscription_id)
            plan = await require_plan(uow, plan_id, allow_inactive=False)
            now = self._now()
            renew_locked(subscription, plan, now)
            await keep_ban(uow, subscription, now)
            await uow.touch_subscriptions([subscription.id])
            await uow.commit()
            return subscription

    async def suspend(
        self, actor: Actor, subscription_id: int, reason: SuspendReason = SuspendReason.ADMIN
    ) -> Subscription:
        async with self._uow() as uow:
            subscription = await _require(uow, subscription_id)
            if subscription.status is not SubscriptionStatus.ACTIVE:
                raise InvalidStateTransition(
                    f"subscription {subscription_id} is {subscription.status.value}, not active"
                )
            now = self._now()
            subscription.status = SubscriptionStatus.SUSPENDED
            subscription.suspend_reason = reason
            subscription.suspended_at = now
            await uow.touch_subscriptions([subscription.id])
            await audit.record(
                uow,
                actor,
                "subscription.suspend",
                target_type="subscription",
                target_id=subscription.id,
                details={"reason": reason.value},
            )
            await uow.commit()
            return subscription

    async def resume(self, actor: Actor, subscription_id: int) -> Subscription:
        async with self._uow() as uow:
            subscription = await _require(uow, subscription_id)
            if subscription.status is not SubscriptionStatus.SUSPENDED:
                raise InvalidStateTransition(
                    f"subscription {subscription_id} is {subscription.status.value}, not suspended"
                )
            user = await uow.users.get(subscription.user_id, for_share=True)
            if user is not None and user.is_banned:
                raise UserBanned("the owner is banned; unban them to resume their subscriptions")
            if rules.traffic_limit_reached(
                subscription.traffic_used_bytes, subscription.traffic_limit_bytes
            ):
                raise InvalidStateTransition(
                    "the traffic limit is used up; renew or raise the limit first"
                )
            _lift_suspension(subscription, self._now())
            await uow.touch_subscriptions([subscription.id])
            await audit.record(
                uow,
                actor,
                "subscription.resume",
                target_type="subscription",
                target_id=subscription.id,
                details={"status": subscription.status.value},
            )
            await uow.commit()
            return subscription

    async def expire_due(self) -> list[int]:
        """The expiry sweep: one set-based UPDATE; returns the ids that expired."""
        async with self._uow() as uow:
            expired = await uow.subscriptions.expire_due(self._now())
            await uow.touch_subscriptions(expired)
            await uow.commit()
            return expired

    async def add_traffic(self, subscription_id: int, delta_bytes: int) -> TrafficResult:
        """Count used traffic; reaching the limit suspends the subscription at once."""
        if isinstance(delta_bytes, bool) or delta_bytes < 0:
            raise InvalidInput("traffic delta must not be negative")
        async with self._uow() as uow:
            state = await uow.subscriptions.add_traffic(subscription_id, delta_bytes)
            if state is None:
                raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
            reached = rules.traffic_limit_reached(state.used_bytes, state.limit_bytes)
            suspended = False
            if reached and state.status is SubscriptionStatus.ACTIVE:
                suspended = await uow.subscriptions.suspend_if_active(
                    subscription_id, SuspendReason.TRAFFIC_LIMIT, self._now()
                )
                if suspended:
                    await uow.touch_subscriptions([subscription_id])
            await uow.commit()
            return TrafficResult(
                subscription_id, state.used_bytes, state.limit_bytes, reached, suspended
            )

    async def set_auto_renew(
        self, user_id: int, subscription_id: int, enabled: bool
    ) -> Subscription:
        """Toggle auto-renewal of the user's own subscription (ownership is re-checked)."""
        async with self._uow() as uow:
            subscription = await _require(uow, subscription_id)
            if subscription.user_id != user_id:
                raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
            subscription.auto_renew = enabled
            await uow.commit()
            return subscription

    async def get(self, subscription_id: int) -> Subscription:
        async with self._uow() as uow:
            subscription = await uow.subscriptions.get(subscription_id)
            if subscription is None:
                raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
            return subscription

    async def list_for_user(self, user_id: int) -> Sequence[Subscription]:
        async with self._uow() as uow:
            return await uow.subscriptions.list_for_user(user_id)


async def start_from_plan(
    uow: UnitOfWork,
    user_id: int,
    plan_id: int,
    *,
    now: datetime,
    allow_inactive_plan: bool = False,
    days: int | None = None,
    allow_banned: bool = False,
) -> Subscription:
    """Create an active subscription inside ``uow`` (shared by services that sell or grant).

    ``allow_banned`` is for what a banned user already paid for: the subscription is made,
    but held suspended by the ban (unbanning restores it) instead of being refused.
    """

    # Share-locked: a ban in progress is waited for, so it cannot miss this subscription.
    user = await uow.users.get(user_id, for_share=True)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    if user.is_banned and not allow_banned:
        raise UserBanned("this user is banned")
    plan = await require_plan(uow, plan_id, allow_inactive=allow_inactive_plan)
    duration = rules.validate_days(days if days is not None else plan.duration_days)
    subscription = await uow.subscriptions.add(
        Subscription(
            user_id=user.id,
            plan_id=plan.id,
            status=SubscriptionStatus.ACTIVE,
            started_at=now,
            expires_at=now + timedelta(days=duration),
            traffic_used_bytes=0,
            traffic_limit_bytes=rules.traffic_limit_bytes(plan.traffic_limit_gb),
            device_limit=plan.device_limit,
            active_protocol=user.preferred_protocol,
        )
    )
    if user.is_banned:
        hold_for_ban(subscription, now)
    return subscription


async def start_plain(
    uow: UnitOfWork, user_id: int, days: int, *, now: datetime, device_limit: int = 1
) -> Subscription:
    """A subscription of ``days`` without a plan (rewards); a banned owner gets it held
    suspended by the ban."""
    rules.validate_days(days)
    user = await uow.users.get(user_id, for_share=True)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    subscription = await uow.subscriptions.add(
        Subscription(
            user_id=user.id,
            status=SubscriptionStatus.ACTIVE,
            started_at=now,
            expires_at=now + timedelta(days=days),
            traffic_used_bytes=0,
            device_limit=device_limit,
            active_protocol=user.preferred_protocol,
        )
    )
    if user.is_banned:
        hold_for_ban(subscription, now)
    return subscription


def hold_for_ban(subscription: Subscription, now: datetime) -> None:
    subscription.status = SubscriptionStatus.SUSPENDED
    subscription.suspend_reason = SuspendReason.BANNED
    subscription.suspended_at = now


def renew_locked(subscription: Subscription, plan: SubscriptionPlan, now: datetime) -> None:
    """A renewal on ``plan``: its days, its limits, a fresh traffic period."""
    extend_locked(subscription, plan.duration_days, now)
    subscription.plan_id = plan.id
    subscription.device_limit = plan.device_limit
    subscription.traffic_limit_bytes = rules.traffic_limit_bytes(plan.traffic_limit_gb)
    subscription.traffic_used_bytes = 0
    if subscription.suspend_reason is SuspendReason.TRAFFIC_LIMIT:
        _lift_suspension(subscription, now)


def extend_locked(subscription: Subscription, days: int, now: datetime) -> None:
    """Extend a subscription row the caller has locked."""

    subscription.expires_at = rules.extended_expiry(subscription.expires_at, now, days)
    if subscription.status in (SubscriptionStatus.PENDING, SubscriptionStatus.EXPIRED):
        subscription.status = SubscriptionStatus.ACTIVE
        subscription.started_at = subscription.started_at or now


async def keep_ban(uow: UnitOfWork, subscription: Subscription, now: datetime) -> None:
    """A banned user's subscription never becomes active: it gains its time but stays
    suspended by the ban, so that unbanning restores it."""
    if subscription.status is SubscriptionStatus.SUSPENDED and subscription.suspend_reason in (
        SuspendReason.BANNED,
        SuspendReason.ADMIN,
    ):
        return
    owner = await uow.users.get(subscription.user_id, for_share=True)
    if owner is None or not owner.is_banned:
        return
    if subscription.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.SUSPENDED):
        hold_for_ban(subscription, subscription.suspended_at or now)


def _lift_suspension(subscription: Subscription, now: datetime) -> None:

    expires = subscription.expires_at
    subscription.status = (
        SubscriptionStatus.ACTIVE
        if expires is not None and expires > now
        else SubscriptionStatus.EXPIRED
    )
    subscription.suspend_reason = None
    subscription.suspended_at = None


async def require_user(uow: UnitOfWork, telegram_id: int) -> User:
    user = await uow.users.get_by_telegram_id(telegram_id)
    if user is None:
        raise UserNotFound(f"no user with Telegram id {telegram_id}")
    return user


async def _view(uow: UnitOfWork, user_id: int, subscription_id: int) -> SubscriptionView:
    rows = await uow.subscriptions.rows_for_user(user_id, subscription_id)
    if not rows:
        raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
    return SubscriptionView.of(rows[0])


async def lock_subscription(uow: UnitOfWork, subscription_id: int) -> Subscription:
    """Lock a subscription for a read-modify-write (owner first; see ``_require``)."""
    return await _require(uow, subscription_id)


async def _require(uow: UnitOfWork, subscription_id: int) -> Subscription:
    """Lock a subscription for a read-modify-write.

    Locks are always taken owner first (share), then the subscription (update) — the order
    ``ban`` uses — so a ban and a change to one of the owner's subscriptions queue instead of
    deadlocking, and neither misses the other.
    """
    found = await uow.subscriptions.get(subscription_id)
    if found is None:
        raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
    await uow.users.get(found.user_id, for_share=True)
    subscription = await uow.subscriptions.get(subscription_id, for_update=True)
    if subscription is None:  # deleted while we waited
        raise SubscriptionNotFound(f"no subscription with id {subscription_id}")
    return subscription


async def require_plan(uow: UnitOfWork, plan_id: int, *, allow_inactive: bool) -> SubscriptionPlan:
    plan = await uow.plans.get(plan_id)
    if plan is None:
        raise PlanNotFound(f"no plan with id {plan_id}")
    if not plan.is_active and not allow_inactive:
        raise PlanInactive(f"plan {plan_id} is not on sale")
    return plan
