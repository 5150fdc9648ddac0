"""PlanService against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from controller.db.models import SubscriptionPlan
from controller.db.uow import UnitOfWorkFactory
from controller.domain.errors import InvalidInput, PlanNotFound
from controller.services import Actor, Services
from controller.services.plans import PlanChanges, PlanDraft

BASE = PlanDraft(name="Month", duration_days=30, price_minor=19900)


async def _plan_rows(uow_factory: UnitOfWorkFactory) -> list[SubscriptionPlan]:
    async with uow_factory() as uow:
        return list(
            (await uow.session.execute(sa.select(SubscriptionPlan).order_by(SubscriptionPlan.id)))
            .scalars()
            .all()
        )


async def _audit(uow_factory: UnitOfWorkFactory) -> list:
    async with uow_factory() as uow:
        return list(await uow.audit.list())


async def test_create_stores_normalised_plan_and_audits(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    plan = await services.plans.create(
        Actor.cli(),
        PlanDraft(
            name="  Premium  ",
            duration_days=90,
            price_minor=49900,
            currency=" usd ",
            description="three months",
            traffic_limit_gb=500,
            device_limit=5,
            is_popular=True,
            sort_order=3,
        ),
    )
    assert plan.id is not None
    stored = await services.plans.get(plan.id)
    assert stored.name == "Premium"
    assert stored.currency == "USD"
    assert (stored.duration_days, stored.price_minor) == (90, 49900)
    assert (stored.traffic_limit_gb, stored.device_limit) == (500, 5)
    assert stored.description == "three months"
    assert stored.is_popular and stored.is_active and not stored.is_trial
    assert stored.sort_order == 3

    entries = await _audit(uow_factory)
    assert len(entries) == 1
    assert entries[0].action == "plan.create"
    assert entries[0].target_type == "plan"
    assert entries[0].target_id == str(plan.id)
    assert entries[0].details == {"name": "Premium", "price_minor": 49900, "currency": "USD"}


async def test_create_accepts_boundaries(services: Services) -> None:
    free = await services.plans.create(
        Actor.cli(),
        PlanDraft(name="x", duration_days=1, price_minor=0, device_limit=1, traffic_limit_gb=1),
    )
    assert (await services.plans.get(free.id)).price_minor == 0
    big = await services.plans.create(
        Actor.cli(),
        PlanDraft(
            name="y" * 128,
            duration_days=3650,
            price_minor=10**12,
            currency="XTR",
            device_limit=100,
            traffic_limit_gb=1_000_000,
        ),
    )
    stored = await services.plans.get(big.id)
    assert stored.price_minor == 10**12
    assert stored.traffic_limit_gb == 1_000_000


BAD_DRAFTS = {
    "zero days": {"duration_days": 0},
    "negative days": {"duration_days": -30},
    "too many days": {"duration_days": 3651},
    "bool days": {"duration_days": True},
    "negative price": {"price_minor": -1},
    "huge price": {"price_minor": 10**12 + 1},
    "float price": {"price_minor": 199.5},
    "unknown currency": {"currency": "XXX"},
    "bad currency": {"currency": "R1B"},
    "zero devices": {"device_limit": 0},
    "too many devices": {"device_limit": 101},
    "fractional devices": {"device_limit": 2.5},
    "fractional traffic": {"traffic_limit_gb": 1.5},
    "empty name": {"name": "   "},
    "long name": {"name": "n" * 129},
    "zero traffic": {"traffic_limit_gb": 0},
    "too much traffic": {"traffic_limit_gb": 1_000_001},
}


async def test_create_refuses_invalid_drafts_and_writes_nothing(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    accepted = []
    for label, change in BAD_DRAFTS.items():
        try:
            await services.plans.create(Actor.cli(), dataclasses.replace(BASE, **change))
        except InvalidInput:
            continue
        accepted.append(label)
    assert accepted == []
    assert await _plan_rows(uow_factory) == []
    assert await _audit(uow_factory) == []


async def test_update_changes_only_given_fields_and_audits(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    plan = await services.plans.create(
        Actor.cli(),
        PlanDraft(
            name="Month",
            duration_days=30,
            price_minor=19900,
            description="d",
            traffic_limit_gb=100,
            device_limit=3,
            sort_order=2,
            is_popular=True,
        ),
    )
    updated = await services.plans.update(
        Actor.cli(), plan.id, PlanChanges(price_minor=24900, name=" Month+ ")
    )
    assert updated.price_minor == 24900
    assert updated.name == "Month+"

    stored = await services.plans.get(plan.id)
    assert (stored.name, stored.price_minor) == ("Month+", 24900)
    assert (stored.duration_days, stored.currency, stored.description) == (30, "RUB", "d")
    assert (stored.traffic_limit_gb, stored.device_limit, stored.sort_order) == (100, 3, 2)
    assert stored.is_popular and stored.is_active

    entry = (await _audit(uow_factory))[0]
    assert entry.action == "plan.update"
    assert entry.target_id == str(plan.id)
    assert entry.details == {"name": "Month+", "price_minor": 24900}

    # Price may go to zero; sort order may go to zero: explicit values, not "unset".
    await services.plans.update(Actor.cli(), plan.id, PlanChanges(price_minor=0, sort_order=0))
    stored = await services.plans.get(plan.id)
    assert (stored.price_minor, stored.sort_order) == (0, 0)

    await services.plans.update(Actor.cli(), plan.id, PlanChanges(clear_traffic_limit=True))
    assert (await services.plans.get(plan.id)).traffic_limit_gb is None
    await services.plans.update(Actor.cli(), plan.id, PlanChanges(traffic_limit_gb=50))
    assert (await services.plans.get(plan.id)).traffic_limit_gb == 50
    await services.plans.update(
        Actor.cli(), plan.id, PlanChanges(duration_days=7, device_limit=2, currency="eur")
    )
    stored = await services.plans.get(plan.id)
    assert (stored.duration_days, stored.device_limit, stored.currency) == (7, 2, "EUR")
    assert len(await _audit(uow_factory)) == 1 + 5


async def test_update_with_nothing_to_change_is_refused(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    plan = await services.plans.create(Actor.cli(), BASE)
    for changes in (
        PlanChanges(),
        PlanChanges(name="Month", price_minor=19900),
        PlanChanges(currency="rub"),
    ):
        with pytest.raises(InvalidInput, match="nothing to change"):
            await services.plans.update(Actor.cli(), plan.id, changes)
    assert [e.action for e in await _audit(uow_factory)] == ["plan.create"]


async def test_update_refuses_invalid_values_and_keeps_plan(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    plan = await services.plans.create(Actor.cli(), BASE)
    for changes in (
        PlanChanges(price_minor=-5),
        PlanChanges(name=""),
        PlanChanges(currency="XXX"),
        PlanChanges(duration_days=4000),
        PlanChanges(device_limit=500),
        PlanChanges(name="Valid", traffic_limit_gb=2_000_000),
    ):
        with pytest.raises(InvalidInput):
            await services.plans.update(Actor.cli(), plan.id, changes)
    stored = await services.plans.get(plan.id)
    assert (stored.name, stored.price_minor, stored.duration_days) == ("Month", 19900, 30)
    assert stored.traffic_limit_gb is None
    assert len(await _audit(uow_factory)) == 1


async def test_update_refuses_zero_values_instead_of_ignoring_them(services: Services) -> None:
    """Zero is a value, not "unset": it must be validated (and refused), never ignored."""
    plan = await services.plans.create(
        Actor.cli(), dataclasses.replace(BASE, device_limit=2, traffic_limit_gb=10)
    )
    for changes in (
        PlanChanges(name="Renamed 1", duration_days=0),
        PlanChanges(name="Renamed 2", device_limit=0),
        PlanChanges(name="Renamed 3", traffic_limit_gb=0),
        PlanChanges(name="Renamed 4", currency=""),
    ):
        with pytest.raises(InvalidInput):
            await services.plans.update(Actor.cli(), plan.id, changes)
    stored = await services.plans.get(plan.id)
    assert stored.name == "Month"
    assert (stored.duration_days, stored.device_limit, stored.traffic_limit_gb) == (30, 2, 10)


async def test_update_unknown_plan(services: Services) -> None:
    with pytest.raises(PlanNotFound):
        await services.plans.update(Actor.cli(), 12345, PlanChanges(name="x"))


async def test_set_active_and_popular(services: Services, uow_factory: UnitOfWorkFactory) -> None:
    plan = await services.plans.create(Actor.cli(), BASE)
    result = await services.plans.set_active(Actor.cli(), plan.id, False)
    assert result.is_active is False
    assert (await services.plans.get(plan.id)).is_active is False
    await services.plans.set_popular(Actor.cli(), plan.id, True)
    stored = await services.plans.get(plan.id)
    assert stored.is_popular is True and stored.is_active is False
    await services.plans.set_active(Actor.cli(), plan.id, True)
    assert (await services.plans.get(plan.id)).is_active is True

    entries = await _audit(uow_factory)
    assert [(e.action, e.details) for e in entries[:3]] == [
        ("plan.is_active", {"is_active": True}),
        ("plan.is_popular", {"is_popular": True}),
        ("plan.is_active", {"is_active": False}),
    ]
    assert all(e.target_id == str(plan.id) for e in entries)

    for call in (services.plans.set_active, services.plans.set_popular):
        with pytest.raises(PlanNotFound):
            await call(Actor.cli(), plan.id + 100, True)


async def test_list_orders_by_sort_order_then_id_and_filters_active(services: Services) -> None:
    created = {}
    for name, sort_order in (("c", 2), ("a", 1), ("b", 2), ("d", 0), ("e", 1)):
        plan = await services.plans.create(
            Actor.cli(), dataclasses.replace(BASE, name=name, sort_order=sort_order)
        )
        created[name] = plan.id
    await services.plans.set_active(Actor.cli(), created["e"], False)
    await services.plans.set_active(Actor.cli(), created["c"], False)

    everything = await services.plans.list()
    assert [p.name for p in everything] == ["d", "a", "e", "c", "b"]
    active = await services.plans.list(active_only=True)
    assert [p.name for p in active] == ["d", "a", "b"]

    await services.plans.update(Actor.cli(), created["b"], PlanChanges(sort_order=-1))
    assert [p.name for p in await services.plans.list(active_only=True)] == ["b", "d", "a"]


async def test_get_unknown_plan(services: Services) -> None:
    with pytest.raises(PlanNotFound):
        await services.plans.get(1)
    assert await services.plans.list() == []
