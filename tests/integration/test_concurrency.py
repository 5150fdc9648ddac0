"""Simultaneous writes on the same rows: nothing is lost and nothing is duplicated.

(Races on traffic reports and on one user's double promo redemption live beside the other
tests of those services.)

These run on both backends; the acceptance bar is PostgreSQL, where the transactions really
interleave on separate connections (SQLite serialises writers with BEGIN IMMEDIATE).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db.models import User
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import PromoKind
from controller.domain.errors import PromoCodeExhausted
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
