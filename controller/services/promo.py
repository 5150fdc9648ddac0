"""Promo codes: extra days or a percent off, with usage limits and one use per user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from controller.db.models import PromoCode, PromoRedemption, Subscription
from controller.db.uow import UnitOfWork
from controller.domain import money, rules
from controller.domain.enums import PromoKind, SubscriptionStatus
from controller.domain.errors import (
    AlreadyExists,
    InvalidInput,
    PromoCodeAlreadyUsed,
    PromoCodeExhausted,
    PromoCodeInactive,
    PromoCodeNotFound,
    UserBanned,
    UserNotFound,
)
from controller.services import audit
from controller.services.base import Actor, Service
from controller.services.subscriptions import extend_locked, start_from_plan


@dataclass(frozen=True, slots=True)
class PromoDraft:
    code: str
    kind: PromoKind
    value: int
    max_uses: int | None = None
    plan_id: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    promo_code_id: int
    price_minor: int
    discounted_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class DaysRedemption:
    subscription: Subscription
    days: int


class PromoService(Service):
    async def create(self, actor: Actor, draft: PromoDraft) -> PromoCode:
        code = rules.normalize_promo_code(draft.code)
        rules.validate_promo_value(draft.kind is PromoKind.PERCENT, draft.value)
        if draft.max_uses is not None and draft.max_uses < 1:
            raise InvalidInput("max uses must be at least 1, or unlimited")
        if draft.valid_from and draft.valid_until and draft.valid_until <= draft.valid_from:
            raise InvalidInput("a promo code must end after it starts")
        async with self._uow() as uow:
            if await uow.promo.get_by_code(code) is not None:
                raise AlreadyExists(f"promo code {code} already exists")
            if draft.plan_id is not None and await uow.plans.get(draft.plan_id) is None:
                raise InvalidInput(f"no plan with id {draft.plan_id}")
            promo = await uow.promo.add(
                PromoCode(
                    code=code,
                    kind=draft.kind,
                    value=draft.value,
                    max_uses=draft.max_uses,
                    plan_id=draft.plan_id,
                    valid_from=draft.valid_from,
                    valid_until=draft.valid_until,
                    description=draft.description,
                    created_by_id=actor.user_id,
                )
            )
            await audit.record(
                uow,
                actor,
                "promo.create",
                target_type="promo",
                target_id=promo.id,
                details={"code": code, "kind": draft.kind.value, "value": draft.value},
            )
            await uow.commit()
            return promo

    async def quote(self, user_id: int, code: str, plan_id: int) -> Quote:
        """The price of a plan with a percent code, checked but not yet used."""
        async with self._uow() as uow:
            promo = await self._usable(uow, user_id, code, PromoKind.PERCENT, plan_id=plan_id)
            plan = await uow.plans.get(plan_id)
            if plan is None or not plan.is_active:
                raise PromoCodeInactive("this plan is not on sale")
            return Quote(
                promo.id,
                plan.price_minor,
                money.apply_percent_discount(plan.price_minor, promo.value),
                plan.currency,
            )

    async def redeem_days(self, user_id: int, code: str) -> DaysRedemption:
        """Use a days code: extend the user's subscription, or start one if they have none."""
        now = self._now()
        async with self._uow() as uow:
            promo = await self._usable(uow, user_id, code, PromoKind.DAYS)
            await consume(uow, promo)
            subscription = await _latest_subscription(uow, user_id)
            if promo.plan_id is not None and subscription is None:
                subscription = await start_from_plan(
                    uow,
                    user_id,
                    promo.plan_id,
                    now=now,
                    allow_inactive_plan=True,
                    days=promo.value,
                )
            elif subscription is None:
                subscription = await uow.subscriptions.add(
                    Subscription(
                        user_id=user_id,
                        status=SubscriptionStatus.ACTIVE,
                        started_at=now,
                        expires_at=now + timedelta(days=promo.value),
                        traffic_used_bytes=0,
                        device_limit=1,
                    )
                )
            else:
                extend_locked(subscription, promo.value, now)
                await uow.touch_subscriptions([subscription.id])
            try:
                # Unique per (code, user): a simultaneous second redemption by the same user
                # fails here, on the flush, or at commit.
                await uow.promo.add_redemption(
                    PromoRedemption(
                        promo_code_id=promo.id, user_id=user_id, subscription_id=subscription.id
                    )
                )
                await uow.activity.add(
                    user_id,
                    "promo_redeemed",
                    {"code": promo.code, "days": promo.value, "subscription_id": subscription.id},
                )
                await uow.commit()
            except IntegrityError:
                raise PromoCodeAlreadyUsed("you have already used this promo code") from None
            return DaysRedemption(subscription, promo.value)

    async def _usable(
        self,
        uow: UnitOfWork,
        user_id: int,
        code: str,
        kind: PromoKind,
        *,
        plan_id: int | None = None,
    ) -> PromoCode:
        code = rules.normalize_promo_code(code)
        user = await uow.users.get(user_id, for_share=True)
        if user is None:
            raise UserNotFound(f"no user with id {user_id}")
        if user.is_banned:
            raise UserBanned("this user is banned")
        return await usable_code(uow, user.id, code, kind, now=self._now(), plan_id=plan_id)


async def usable_code(
    uow: UnitOfWork,
    user_id: int,
    code: str,
    kind: PromoKind,
    *,
    now: datetime,
    plan_id: int | None = None,
) -> PromoCode:
    """The promo code ``code`` if ``user_id`` may use it now (for ``plan_id``), else the
    reason why not. The caller has checked the user (exists, not banned)."""
    code = rules.normalize_promo_code(code)
    promo = await uow.promo.get_by_code(code)
    if promo is None:
        raise PromoCodeNotFound(f"no promo code {code}")
    if (
        not promo.is_active
        or (promo.valid_from is not None and now < promo.valid_from)
        or (promo.valid_until is not None and now >= promo.valid_until)
    ):
        raise PromoCodeInactive(f"promo code {code} is not valid now")
    if promo.kind is not kind:
        raise PromoCodeInactive(f"promo code {code} gives {promo.kind.value}, not {kind.value}")
    if plan_id is not None and promo.plan_id is not None and promo.plan_id != plan_id:
        raise PromoCodeInactive(f"promo code {code} is for another plan")
    if promo.max_uses is not None and promo.uses_count >= promo.max_uses:
        raise PromoCodeExhausted(f"promo code {code} has been used up")
    if await uow.promo.redemption_exists(promo.id, user_id):
        raise PromoCodeAlreadyUsed("you have already used this promo code")
    return promo


async def consume(uow: UnitOfWork, promo: PromoCode) -> None:
    """Count one use of ``promo`` inside ``uow``; refuse when it is used up.

    The increment is a single conditional UPDATE, so the last use cannot be taken twice.
    The caller records the :class:`PromoRedemption` (unique per user) in the same transaction.
    """
    if not await uow.promo.claim_use(promo.id):
        raise PromoCodeExhausted(f"promo code {promo.code} has been used up")


async def _latest_subscription(uow: UnitOfWork, user_id: int) -> Subscription | None:
    subscriptions = await uow.subscriptions.list_for_user(user_id)
    if not subscriptions:
        return None
    live = [s for s in subscriptions if s.status is SubscriptionStatus.ACTIVE]
    chosen = (live or list(subscriptions))[0]
    return await uow.subscriptions.get(chosen.id, for_update=True)
