"""PromoService against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from controller.db.models import PromoCode, PromoRedemption, UserActivity
from controller.db.uow import UnitOfWorkFactory
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
from controller.services import Actor, Services
from controller.services.promo import PromoDraft
from tests.conftest import FakeClock
from tests.integration.factories import make_plan, make_user

ADMIN = Actor.cli()
GIB = 1024**3


async def _user(services: Services, telegram_id: int = 42) -> int:
    return await make_user(services, telegram_id)


async def _plan(services: Services, **values: Any) -> int:
    return await make_plan(services, **{"price": 999, "devices": 2, **values})


async def _promo_row(uow_factory: UnitOfWorkFactory, code: str) -> PromoCode:
    async with uow_factory() as uow:
        promo = await uow.promo.get_by_code(code)
        assert promo is not None
        return promo


async def _redemptions(uow_factory: UnitOfWorkFactory) -> list[tuple[int, int, int | None]]:
    async with uow_factory() as uow:
        rows = await uow.session.execute(
            sa.select(
                PromoRedemption.promo_code_id,
                PromoRedemption.user_id,
                PromoRedemption.subscription_id,
            ).order_by(PromoRedemption.id)
        )
        return [tuple(r) for r in rows.all()]


async def _set_promo(uow_factory: UnitOfWorkFactory, code: str, **values: object) -> None:
    async with uow_factory() as uow:
        promo = await uow.promo.get_by_code(code, for_update=True)
        assert promo is not None
        for key, value in values.items():
            setattr(promo, key, value)
        await uow.commit()


DAYS10 = PromoDraft(code="days10", kind=PromoKind.DAYS, value=10)


# --- create -------------------------------------------------------------------------------


async def test_create_normalises_code_and_audits(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    promo = await services.promo.create(ADMIN, dataclasses.replace(DAYS10, code="  summer-25 "))
    assert promo.code == "SUMMER-25"
    stored = await _promo_row(uow_factory, "SUMMER-25")
    assert stored.id == promo.id
    assert (stored.kind, stored.value, stored.uses_count) == (PromoKind.DAYS, 10, 0)
    assert stored.is_active and stored.max_uses is None and stored.plan_id is None
    async with uow_factory() as uow:
        entry = (await uow.audit.list())[0]
    assert entry.action == "promo.create"
    assert entry.target_id == str(promo.id)
    assert entry.details == {"code": "SUMMER-25", "kind": "days", "value": 10}


async def test_create_duplicate_code_refused(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    await services.promo.create(ADMIN, DAYS10)
    with pytest.raises(AlreadyExists):
        await services.promo.create(
            ADMIN, PromoDraft(code="DAYS10", kind=PromoKind.PERCENT, value=5)
        )
    stored = await _promo_row(uow_factory, "DAYS10")
    assert (stored.kind, stored.value) == (PromoKind.DAYS, 10)


async def test_create_refuses_bad_values_and_writes_nothing(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    bad = {
        "short code": dataclasses.replace(DAYS10, code="ab"),
        "long code": dataclasses.replace(DAYS10, code="A" * 33),
        "bad characters": dataclasses.replace(DAYS10, code="NO SPACE"),
        "zero percent": PromoDraft(code="P0", kind=PromoKind.PERCENT, value=0),
        "101 percent": PromoDraft(code="P101", kind=PromoKind.PERCENT, value=101),
        "zero days": dataclasses.replace(DAYS10, value=0),
        "too many days": dataclasses.replace(DAYS10, value=3651),
        "bool value": dataclasses.replace(DAYS10, value=True),
        "zero max uses": dataclasses.replace(DAYS10, max_uses=0),
        "ends before start": dataclasses.replace(
            DAYS10, valid_from=clock.now, valid_until=clock.now - timedelta(days=1)
        ),
        "ends at start": dataclasses.replace(DAYS10, valid_from=clock.now, valid_until=clock.now),
        "unknown plan": dataclasses.replace(DAYS10, plan_id=999),
    }
    accepted = []
    for label, draft in bad.items():
        try:
            await services.promo.create(ADMIN, draft)
        except InvalidInput:
            continue
        accepted.append(label)
    assert accepted == []
    async with uow_factory() as uow:
        assert (await uow.session.execute(sa.select(sa.func.count(PromoCode.id)))).scalar() == 0
        assert list(await uow.audit.list()) == []


# --- redeem_days --------------------------------------------------------------------------


async def test_redeem_days_extends_latest_subscription(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services, days=30)
    sub = await services.subscriptions.create_from_plan(user_id, plan_id)
    await services.promo.create(ADMIN, DAYS10)

    result = await services.promo.redeem_days(user_id, " days10 ")
    assert result.days == 10
    assert result.subscription.id == sub.id
    stored = await services.subscriptions.get(sub.id)
    assert stored.expires_at == sub.expires_at + timedelta(days=10)
    assert len(await services.subscriptions.list_for_user(user_id)) == 1

    promo = await _promo_row(uow_factory, "DAYS10")
    assert promo.uses_count == 1
    assert await _redemptions(uow_factory) == [(promo.id, user_id, sub.id)]


async def test_redeem_days_prefers_active_over_newer_expired(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _user(services)
    long_plan = await _plan(services, days=60, name="long")
    short_plan = await _plan(services, days=1, name="short")
    active = await services.subscriptions.create_from_plan(user_id, long_plan)
    newer = await services.subscriptions.create_from_plan(user_id, short_plan)
    clock.advance(days=2)
    assert await services.subscriptions.expire_due() == [newer.id]
    await services.promo.create(ADMIN, DAYS10)
    result = await services.promo.redeem_days(user_id, "DAYS10")
    assert result.subscription.id == active.id
    assert (
        await services.subscriptions.get(active.id)
    ).expires_at == active.expires_at + timedelta(days=10)
    assert (await services.subscriptions.get(newer.id)).status is SubscriptionStatus.EXPIRED


async def test_redeem_days_revives_expired_subscription_from_now(
    services: Services, clock: FakeClock
) -> None:
    user_id = await _user(services)
    sub = await services.subscriptions.create_from_plan(user_id, await _plan(services, days=5))
    clock.advance(days=20)
    await services.subscriptions.expire_due()
    await services.promo.create(ADMIN, DAYS10)
    result = await services.promo.redeem_days(user_id, "DAYS10")
    assert result.subscription.id == sub.id
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.ACTIVE
    assert stored.expires_at == clock.now + timedelta(days=10)


async def test_redeem_days_without_subscription_starts_planless_one(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _user(services)
    await services.promo.create(ADMIN, DAYS10)
    result = await services.promo.redeem_days(user_id, "days10")
    subs = await services.subscriptions.list_for_user(user_id)
    assert [s.id for s in subs] == [result.subscription.id]
    sub = subs[0]
    assert sub.plan_id is None
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.started_at == clock.now
    assert sub.expires_at == clock.now + timedelta(days=10)
    assert sub.device_limit == 1 and sub.traffic_used_bytes == 0
    promo = await _promo_row(uow_factory, "DAYS10")
    assert await _redemptions(uow_factory) == [(promo.id, user_id, sub.id)]


async def test_redeem_days_with_plan_starts_subscription_from_that_plan(
    services: Services, clock: FakeClock
) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services, days=30, traffic_gb=5)
    # The code works even when the plan is no longer on sale.
    await services.plans.set_active(ADMIN, plan_id, False)
    await services.promo.create(ADMIN, dataclasses.replace(DAYS10, plan_id=plan_id, value=7))
    result = await services.promo.redeem_days(user_id, "DAYS10")
    sub = await services.subscriptions.get(result.subscription.id)
    assert sub.plan_id == plan_id
    assert sub.expires_at == clock.now + timedelta(days=7)
    assert sub.traffic_limit_bytes == 5 * GIB
    assert sub.device_limit == 2
    assert result.days == 7


async def test_redeem_once_per_user(services: Services, uow_factory: UnitOfWorkFactory) -> None:
    user_id = await _user(services)
    await services.promo.create(ADMIN, DAYS10)
    first = await services.promo.redeem_days(user_id, "DAYS10")
    with pytest.raises(PromoCodeAlreadyUsed):
        await services.promo.redeem_days(user_id, "days10")
    assert (await _promo_row(uow_factory, "DAYS10")).uses_count == 1
    stored = await services.subscriptions.get(first.subscription.id)
    assert stored.expires_at == first.subscription.expires_at
    assert len(await _redemptions(uow_factory)) == 1


async def test_max_uses_reached(services: Services, uow_factory: UnitOfWorkFactory) -> None:
    users = [await _user(services, t) for t in (1, 2, 3)]
    await services.promo.create(ADMIN, dataclasses.replace(DAYS10, max_uses=2))
    await services.promo.redeem_days(users[0], "DAYS10")
    await services.promo.redeem_days(users[1], "DAYS10")
    with pytest.raises(PromoCodeExhausted):
        await services.promo.redeem_days(users[2], "DAYS10")
    assert (await _promo_row(uow_factory, "DAYS10")).uses_count == 2
    assert await services.subscriptions.list_for_user(users[2]) == []


async def test_double_redemption_race_reports_already_used(
    services: Services,
    uow_factory: UnitOfWorkFactory,
) -> None:
    user_id = await _user(services)
    await services.promo.create(ADMIN, DAYS10)
    results = await asyncio.gather(
        *(services.promo.redeem_days(user_id, "DAYS10") for _ in range(5)),
        return_exceptions=True,
    )
    successes = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    # Whatever the outcome, the database stays consistent...
    assert (await _promo_row(uow_factory, "DAYS10")).uses_count == 1
    assert len(await _redemptions(uow_factory)) == 1
    assert len(successes) == 1
    # ...and the losers get the domain error, not a database exception.
    assert [type(f) for f in failures] == [PromoCodeAlreadyUsed] * 4


async def test_inactive_not_yet_valid_and_expired_codes(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _user(services)
    start = clock.now + timedelta(days=1)
    await services.promo.create(
        ADMIN,
        dataclasses.replace(DAYS10, valid_from=start, valid_until=start + timedelta(days=2)),
    )
    with pytest.raises(PromoCodeInactive):  # not yet valid
        await services.promo.redeem_days(user_id, "DAYS10")
    clock.now = start + timedelta(days=2)  # valid_until is exclusive
    with pytest.raises(PromoCodeInactive):
        await services.promo.redeem_days(user_id, "DAYS10")
    assert (await _promo_row(uow_factory, "DAYS10")).uses_count == 0

    clock.now = start  # valid_from is inclusive
    await _set_promo(uow_factory, "DAYS10", is_active=False)
    with pytest.raises(PromoCodeInactive):
        await services.promo.redeem_days(user_id, "DAYS10")
    await _set_promo(uow_factory, "DAYS10", is_active=True)
    await services.promo.redeem_days(user_id, "DAYS10")
    assert (await _promo_row(uow_factory, "DAYS10")).uses_count == 1


async def test_unknown_code_user_and_banned_user(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _user(services, 5)
    plan_id = await _plan(services)
    await services.promo.create(ADMIN, DAYS10)
    await services.promo.create(ADMIN, PromoDraft(code="OFF10", kind=PromoKind.PERCENT, value=10))
    with pytest.raises(PromoCodeNotFound):
        await services.promo.redeem_days(user_id, "NOPE1")
    with pytest.raises(InvalidInput):
        await services.promo.redeem_days(user_id, "!")
    with pytest.raises(UserNotFound):
        await services.promo.redeem_days(user_id + 100, "DAYS10")

    await services.users.ban(ADMIN, 5)
    with pytest.raises(UserBanned):
        await services.promo.redeem_days(user_id, "DAYS10")
    with pytest.raises(UserBanned):
        await services.promo.quote(user_id, "OFF10", plan_id)
    assert (await _promo_row(uow_factory, "DAYS10")).uses_count == 0
    assert await services.subscriptions.list_for_user(user_id) == []


async def test_kind_mismatch_refused(services: Services, uow_factory: UnitOfWorkFactory) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services)
    await services.promo.create(ADMIN, DAYS10)
    await services.promo.create(ADMIN, PromoDraft(code="OFF10", kind=PromoKind.PERCENT, value=10))
    with pytest.raises(PromoCodeInactive):
        await services.promo.redeem_days(user_id, "OFF10")
    with pytest.raises(PromoCodeInactive):
        await services.promo.quote(user_id, "DAYS10", plan_id)
    assert (await _promo_row(uow_factory, "OFF10")).uses_count == 0
    assert await _redemptions(uow_factory) == []


# --- quote --------------------------------------------------------------------------------


async def test_quote_applies_discount_rounded_down_without_using_the_code(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services, price=999)
    promo = await services.promo.create(
        ADMIN, PromoDraft(code="off15", kind=PromoKind.PERCENT, value=15, max_uses=1)
    )
    quote = await services.promo.quote(user_id, "OFF15", plan_id)
    # 15 % of 999 is 149.85: the discount is rounded down to 149.
    assert (quote.promo_code_id, quote.price_minor, quote.discounted_minor) == (
        promo.id,
        999,
        850,
    )
    assert quote.currency == "RUB"
    again = await services.promo.quote(user_id, "off15", plan_id)
    assert again == quote
    other_user = await _user(services, 43)
    assert (await services.promo.quote(other_user, "OFF15", plan_id)).discounted_minor == 850
    assert (await _promo_row(uow_factory, "OFF15")).uses_count == 0
    assert await _redemptions(uow_factory) == []


async def test_quote_full_discount_and_inactive_plan(services: Services) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services, price=501)
    await services.promo.create(ADMIN, PromoDraft(code="FREE", kind=PromoKind.PERCENT, value=100))
    assert (await services.promo.quote(user_id, "FREE", plan_id)).discounted_minor == 0
    await services.promo.create(ADMIN, PromoDraft(code="HALF", kind=PromoKind.PERCENT, value=50))
    assert (await services.promo.quote(user_id, "HALF", plan_id)).discounted_minor == 251
    await services.plans.set_active(ADMIN, plan_id, False)
    with pytest.raises(PromoCodeInactive):
        await services.promo.quote(user_id, "HALF", plan_id)
    with pytest.raises(PromoCodeInactive):
        await services.promo.quote(user_id, "HALF", plan_id + 100)


async def test_plan_restricted_percent_code(services: Services) -> None:
    user_id = await _user(services)
    plan_a = await _plan(services, price=1000, name="a")
    plan_b = await _plan(services, price=2000, name="b")
    await services.promo.create(
        ADMIN, PromoDraft(code="ONLYA", kind=PromoKind.PERCENT, value=20, plan_id=plan_a)
    )
    assert (await services.promo.quote(user_id, "ONLYA", plan_a)).discounted_minor == 800
    with pytest.raises(PromoCodeInactive):
        await services.promo.quote(user_id, "ONLYA", plan_b)


async def test_quote_refused_when_exhausted_or_expired(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services)
    await services.promo.create(
        ADMIN,
        PromoDraft(
            code="LIMITED",
            kind=PromoKind.PERCENT,
            value=10,
            max_uses=1,
            valid_until=clock.now + timedelta(days=1),
        ),
    )
    await _set_promo(uow_factory, "LIMITED", uses_count=1)
    with pytest.raises(PromoCodeExhausted):
        await services.promo.quote(user_id, "LIMITED", plan_id)
    await _set_promo(uow_factory, "LIMITED", uses_count=0)
    assert (await services.promo.quote(user_id, "LIMITED", plan_id)).discounted_minor == 900
    clock.advance(days=1)
    with pytest.raises(PromoCodeInactive):
        await services.promo.quote(user_id, "LIMITED", plan_id)


async def test_redemption_is_recorded_in_the_users_activity(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _user(services)
    await services.promo.create(ADMIN, DAYS10)
    redemption = await services.promo.redeem_days(user_id, "days10")
    async with uow_factory() as uow:
        rows = (
            (
                await uow.session.execute(
                    sa.select(UserActivity).where(
                        UserActivity.user_id == user_id, UserActivity.action == "promo_redeemed"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert [r.details for r in rows] == [
        {"code": "DAYS10", "days": 10, "subscription_id": redemption.subscription.id}
    ]
