"""Subscriptions: creation from a plan, extension, suspension, expiry and traffic limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.db.models import Subscription, SubscriptionPlan
from controller.db.models.users import new_referral_code
from controller.db.uow import UnitOfWork
from controller.domain import rules
from controller.domain.enums import SubscriptionStatus, SuspendReason
from controller.domain.errors import (
    InvalidInput,
    InvalidStateTransition,
    PlanInactive,
    PlanNotFound,
    SubscriptionNotFound,
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


class SubscriptionService(Service):
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
            await _keep_ban(uow, subscription, now)
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
                    plan = await _require_plan(uow, plan_id, allow_inactive=True)
                    _renew_locked(subscription, plan, now)
                else:
                    assert days is not None
                    extend_locked(subscription, days, now)
                if devices is not None:
                    subscription.device_limit = devices
                await _keep_ban(uow, subscription, now)
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
            plan = await _require_plan(uow, plan_id, allow_inactive=False)
            now = self._now()
            _renew_locked(subscription, plan, now)
            await _keep_ban(uow, subscription, now)
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
) -> Subscription:
    """Create an active subscription inside ``uow`` (shared by services that sell or grant)."""

    # Share-locked: a ban in progress is waited for, so it cannot miss this subscription.
    user = await uow.users.get(user_id, for_share=True)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    if user.is_banned:
        raise UserBanned("this user is banned")
    plan = await _require_plan(uow, plan_id, allow_inactive=allow_inactive_plan)
    duration = rules.validate_days(days if days is not None else plan.duration_days)
    return await uow.subscriptions.add(
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


def _renew_locked(subscription: Subscription, plan: SubscriptionPlan, now: datetime) -> None:
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


async def _keep_ban(uow: UnitOfWork, subscription: Subscription, now: datetime) -> None:
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
        subscription.status = SubscriptionStatus.SUSPENDED
        subscription.suspend_reason = SuspendReason.BANNED
        subscription.suspended_at = subscription.suspended_at or now


def _lift_suspension(subscription: Subscription, now: datetime) -> None:

    expires = subscription.expires_at
    subscription.status = (
        SubscriptionStatus.ACTIVE
        if expires is not None and expires > now
        else SubscriptionStatus.EXPIRED
    )
    subscription.suspend_reason = None
    subscription.suspended_at = None


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


async def _require_plan(uow: UnitOfWork, plan_id: int, *, allow_inactive: bool) -> SubscriptionPlan:
    plan = await uow.plans.get(plan_id)
    if plan is None:
        raise PlanNotFound(f"no plan with id {plan_id}")
    if not plan.is_active and not allow_inactive:
        raise PlanInactive(f"plan {plan_id} is not on sale")
    return plan
