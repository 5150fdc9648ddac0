"""Simultaneous writes on the same rows: nothing is lost and nothing is duplicated.

(Races on traffic reports and on one user's double promo redemption live beside the other
tests of those services.)

These run on both backends; the acceptance bar is PostgreSQL, where the transactions really
interleave on separate connections (SQLite serialises writers with BEGIN IMMEDIATE).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db.models import User
from controller.db.uow import UnitOfWork, UnitOfWorkFactory
from controller.domain.enums import PromoKind, SubscriptionStatus, SuspendReason, UserRole
from controller.domain.errors import PromoCodeExhausted, UserBanned
from controller.services import Actor, Services
from controller.services.plans import PlanDraft
from controller.services.promo import PromoDraft
from controller.services.users import TelegramProfile
from tests.conftest import FakeClock

PARALLEL = 8


async def test_simultaneous_extensions_all_count(services: Services, clock: FakeClock) -> None:
    user = (await services.users.register(TelegramProfile(telegram_id=1001))).user
    plan = await services.plans.create(
        Actor.cli(), PlanDraft(name="Month", duration_days=30, price_minor=19900)
    )
    subscription = await services.subscriptions.create_from_plan(user.id, plan.id)
    assert subscription.expires_at is not None
    start = subscription.expires_at

    await asyncio.gather(
        *(services.subscriptions.extend(subscription.id, 7) for _ in range(PARALLEL))
    )

    final = await services.subscriptions.get(subscription.id)
    assert final.expires_at == start + timedelta(days=7 * PARALLEL)


async def test_simultaneous_registrations_make_one_row(
    services: Services, engine: AsyncEngine
) -> None:
    results = await asyncio.gather(
        *(
            services.users.register(TelegramProfile(telegram_id=777, username=f"u{i}"))
            for i in range(PARALLEL)
        )
    )
    async with engine.connect() as connection:
        count = (
            await connection.execute(
                sa.select(sa.func.count()).select_from(User).where(User.telegram_id == 777)
            )
        ).scalar_one()
    assert count == 1
    assert len({r.user.id for r in results}) == 1
    assert sum(r.created for r in results) == 1


async def test_last_promo_use_is_taken_once(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    promo = await services.promo.create(
        Actor.cli(), PromoDraft(code="LAST1", kind=PromoKind.DAYS, value=5, max_uses=1)
    )
    users = [
        (await services.users.register(TelegramProfile(telegram_id=2000 + i))).user
        for i in range(PARALLEL)
    ]
    results = await asyncio.gather(
        *(services.promo.redeem_days(u.id, promo.code) for u in users), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(e, PromoCodeExhausted) for e in losers), losers
    async with uow_factory() as uow:
        stored = await uow.promo.get_by_code("LAST1")
        assert stored is not None
        assert stored.uses_count == 1


# --- a change that starts while another holds the row waits for it, then sees it -----------

WAIT = 0.3  # long enough for the second transaction to reach the lock it needs


async def _setup(services: Services, telegram_id: int) -> tuple[int, int, int]:
    user = (await services.users.register(TelegramProfile(telegram_id=telegram_id))).user
    plan = await services.plans.create(
        Actor.cli(), PlanDraft(name="Month", duration_days=30, price_minor=100)
    )
    subscription = await services.subscriptions.create_from_plan(user.id, plan.id)
    return user.id, plan.id, subscription.id


async def test_promo_days_land_on_top_of_an_extension_in_flight(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id, _plan_id, subscription_id = await _setup(services, 3001)
    await services.promo.create(Actor.cli(), PromoDraft(code="PLUS5", kind=PromoKind.DAYS, value=5))
    start = (await services.subscriptions.get(subscription_id)).expires_at
    assert start is not None
    async with uow_factory() as uow:  # an extension by 30 days, not yet committed
        locked = await uow.subscriptions.get(subscription_id, for_update=True)
        assert locked is not None and locked.expires_at is not None
        locked.expires_at = locked.expires_at + timedelta(days=30)
        await uow.session.flush()
        redeem = asyncio.create_task(services.promo.redeem_days(user_id, "PLUS5"))
        await asyncio.sleep(WAIT)
        assert not redeem.done()
        await uow.commit()
    await redeem
    final = await services.subscriptions.get(subscription_id)
    assert final.expires_at == start + timedelta(days=35)


async def test_subscription_started_during_a_ban_is_refused(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id, plan_id, _ = await _setup(services, 3002)
    async with uow_factory() as uow:  # a ban in progress
        user = await uow.users.get(user_id, for_update=True)
        assert user is not None
        user.is_banned = True
        await uow.session.flush()
        create = asyncio.create_task(services.subscriptions.create_from_plan(user_id, plan_id))
        await asyncio.sleep(WAIT)
        assert not create.done()
        await uow.commit()
    with pytest.raises(UserBanned):
        await create


async def test_resume_during_a_ban_is_refused(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id, _plan_id, subscription_id = await _setup(services, 3003)
    await services.subscriptions.suspend(Actor.cli(), subscription_id)
    async with uow_factory() as uow:
        user = await uow.users.get(user_id, for_update=True)
        assert user is not None
        user.is_banned = True
        await uow.session.flush()
        resume = asyncio.create_task(services.subscriptions.resume(Actor.cli(), subscription_id))
        await asyncio.sleep(WAIT)
        assert not resume.done()
        await uow.commit()
    with pytest.raises(UserBanned):
        await resume
    assert (
        await services.subscriptions.get(subscription_id)
    ).status is SubscriptionStatus.SUSPENDED


async def test_extension_during_a_ban_keeps_the_subscription_off(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id, _plan_id, subscription_id = await _setup(services, 3004)
    async with uow_factory() as uow:  # what ban() does, held open
        user = await uow.users.get(user_id, for_update=True)
        assert user is not None
        user.is_banned = True
        await uow.session.flush()
        await services_ban_subscriptions(uow, user_id)
        extend = asyncio.create_task(services.subscriptions.extend(subscription_id, 10))
        await asyncio.sleep(WAIT)
        assert not extend.done()
        await uow.commit()
    extended = await extend
    assert extended.status is SubscriptionStatus.SUSPENDED
    assert extended.suspend_reason is SuspendReason.BANNED


async def services_ban_subscriptions(uow: UnitOfWork, user_id: int) -> None:
    for subscription in await uow.subscriptions.list_for_user(user_id):
        subscription.status = SubscriptionStatus.SUSPENDED
        subscription.suspend_reason = SuspendReason.BANNED
    await uow.session.flush()


async def test_two_admins_banning_each_other_do_not_deadlock(services: Services) -> None:
    """The audit entry of each ban references its actor's user row; locking the target must
    not conflict with that reference (FOR NO KEY UPDATE vs KEY SHARE)."""
    first = await services.users.set_role(Actor.cli(), 4001, UserRole.ADMIN)
    second = await services.users.set_role(Actor.cli(), 4002, UserRole.ADMIN)
    as_first = Actor.telegram(first.telegram_id, first.id)
    as_second = Actor.telegram(second.telegram_id, second.id)
    for _ in range(10):
        await asyncio.gather(
            services.users.ban(as_first, second.telegram_id),
            services.users.ban(as_second, first.telegram_id),
        )
        await asyncio.gather(
            services.users.unban(as_first, second.telegram_id),
            services.users.unban(as_second, first.telegram_id),
        )
    assert not (await services.users.get(first.telegram_id)).is_banned
