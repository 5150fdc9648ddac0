"""SubscriptionService against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import SubscriptionStatus, SuspendReason, VpnProtocol
from controller.domain.errors import (
    InvalidInput,
    InvalidStateTransition,
    PlanInactive,
    PlanNotFound,
    SubscriptionNotFound,
    UserBanned,
    UserNotFound,
)
from controller.services import Services
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN, GIB, make_plan, make_user

_user = make_user
_plan = make_plan


async def _set(uow_factory: UnitOfWorkFactory, subscription_id: int, **values: object) -> None:
    """Put a subscription into a state the services do not offer directly (e.g. pending)."""
    async with uow_factory() as uow:
        row = await uow.subscriptions.get(subscription_id, for_update=True)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
        await uow.commit()


async def _audit_actions(uow_factory: UnitOfWorkFactory) -> list[str]:
    async with uow_factory() as uow:
        return [e.action for e in await uow.audit.list()]


# --- create_from_plan ---------------------------------------------------------------------


async def test_create_from_plan_copies_limits_and_duration(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services, days=90, traffic_gb=50, devices=3)
    sub = await services.subscriptions.create_from_plan(user_id, plan_id)
    assert sub.status is SubscriptionStatus.ACTIVE

    stored = await services.subscriptions.get(sub.id)
    assert stored.user_id == user_id and stored.plan_id == plan_id
    assert stored.status is SubscriptionStatus.ACTIVE
    assert stored.started_at == clock.now
    assert stored.expires_at == clock.now + timedelta(days=90)
    assert stored.expires_at.utcoffset() == timedelta(0)
    assert stored.traffic_limit_bytes == 50 * GIB
    assert stored.traffic_used_bytes == 0
    assert stored.device_limit == 3
    assert stored.suspend_reason is None
    assert stored.auto_renew is False
    # No actor: no audit entry beyond the plan's own.
    assert await _audit_actions(uow_factory) == ["plan.create"]


async def test_create_from_plan_unlimited_plan_and_audit_and_protocol(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _user(services)
    async with uow_factory() as uow:
        user = await uow.users.get(user_id, for_update=True)
        assert user is not None
        user.preferred_protocol = VpnProtocol.WIREGUARD
        await uow.commit()
    plan_id = await _plan(services, traffic_gb=None)
    sub = await services.subscriptions.create_from_plan(user_id, plan_id, actor=ADMIN)
    stored = await services.subscriptions.get(sub.id)
    assert stored.traffic_limit_bytes is None
    assert stored.active_protocol is VpnProtocol.WIREGUARD
    async with uow_factory() as uow:
        entry = (await uow.audit.list())[0]
    assert entry.action == "subscription.create"
    assert entry.target_id == str(sub.id)
    assert entry.details == {"user_id": user_id, "plan_id": plan_id}


async def test_create_from_inactive_plan(services: Services) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services)
    await services.plans.set_active(ADMIN, plan_id, False)
    with pytest.raises(PlanInactive):
        await services.subscriptions.create_from_plan(user_id, plan_id)
    assert await services.subscriptions.list_for_user(user_id) == []
    sub = await services.subscriptions.create_from_plan(user_id, plan_id, allow_inactive_plan=True)
    assert sub.status is SubscriptionStatus.ACTIVE
    assert [s.id for s in await services.subscriptions.list_for_user(user_id)] == [sub.id]


async def test_create_refused_for_banned_or_unknown_user_or_unknown_plan(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _user(services, 7)
    plan_id = await _plan(services)
    await services.users.ban(ADMIN, 7)
    with pytest.raises(UserBanned):
        await services.subscriptions.create_from_plan(user_id, plan_id, actor=ADMIN)
    with pytest.raises(UserNotFound):
        await services.subscriptions.create_from_plan(user_id + 99, plan_id)
    other = await _user(services, 8)
    with pytest.raises(PlanNotFound):
        await services.subscriptions.create_from_plan(other, plan_id + 99)
    assert await services.subscriptions.list_for_user(user_id) == []
    assert await services.subscriptions.list_for_user(other) == []
    assert "subscription.create" not in await _audit_actions(uow_factory)


# --- extend -------------------------------------------------------------------------------


async def test_extend_active_with_time_left_extends_from_expiry(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, days=30)
    )
    original_expiry = sub.expires_at
    clock.advance(days=10)
    extended = await services.subscriptions.extend(sub.id, 15, actor=ADMIN)
    assert extended.expires_at == original_expiry + timedelta(days=15)
    stored = await services.subscriptions.get(sub.id)
    assert stored.expires_at == original_expiry + timedelta(days=15)
    assert stored.status is SubscriptionStatus.ACTIVE
    async with uow_factory() as uow:
        entry = (await uow.audit.list())[0]
    assert (entry.action, entry.details) == ("subscription.extend", {"days": 15})


async def test_extend_expired_extends_from_now_and_activates(
    services: Services, clock: FakeClock
) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, days=30)
    )
    clock.advance(days=40)
    assert await services.subscriptions.expire_due() == [sub.id]
    extended = await services.subscriptions.extend(sub.id, 7)
    assert extended.status is SubscriptionStatus.ACTIVE
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.ACTIVE
    assert stored.expires_at == clock.now + timedelta(days=7)


async def test_extend_pending_starts_it(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services)
    )
    await _set(
        uow_factory, sub.id, status=SubscriptionStatus.PENDING, started_at=None, expires_at=None
    )
    clock.advance(days=3)
    await services.subscriptions.extend(sub.id, 10)
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.ACTIVE
    assert stored.started_at == clock.now
    assert stored.expires_at == clock.now + timedelta(days=10)


async def test_extend_suspended_stays_suspended_but_gains_days(
    services: Services, clock: FakeClock
) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, days=30)
    )
    await services.subscriptions.suspend(ADMIN, sub.id)
    await services.subscriptions.extend(sub.id, 5)
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.SUSPENDED
    assert stored.suspend_reason is SuspendReason.ADMIN
    assert stored.expires_at == sub.expires_at + timedelta(days=5)


async def test_extend_refuses_bad_days_and_unknown_subscription(services: Services) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services)
    )
    for days in (0, -1, 3651, True):
        with pytest.raises(InvalidInput):
            await services.subscriptions.extend(sub.id, days)
    assert (await services.subscriptions.get(sub.id)).expires_at == sub.expires_at
    with pytest.raises(SubscriptionNotFound):
        await services.subscriptions.extend(sub.id + 1, 1)


# --- suspend / resume ---------------------------------------------------------------------


async def test_suspend_and_resume(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services)
    )
    suspended = await services.subscriptions.suspend(ADMIN, sub.id, SuspendReason.PAYMENT)
    assert suspended.status is SubscriptionStatus.SUSPENDED
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.SUSPENDED
    assert stored.suspend_reason is SuspendReason.PAYMENT
    assert stored.suspended_at == clock.now

    with pytest.raises(InvalidStateTransition):
        await services.subscriptions.suspend(ADMIN, sub.id)
    assert (await services.subscriptions.get(sub.id)).suspend_reason is SuspendReason.PAYMENT

    clock.advance(days=1)
    resumed = await services.subscriptions.resume(ADMIN, sub.id)
    assert resumed.status is SubscriptionStatus.ACTIVE
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.ACTIVE
    assert stored.suspend_reason is None and stored.suspended_at is None

    with pytest.raises(InvalidStateTransition):
        await services.subscriptions.resume(ADMIN, sub.id)
    async with uow_factory() as uow:
        entries = list(await uow.audit.list())
    assert [(e.action, e.details) for e in entries[:2]] == [
        ("subscription.resume", {"status": "active"}),
        ("subscription.suspend", {"reason": "payment"}),
    ]


async def test_suspend_refused_for_expired_and_pending(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    plan_id = await _plan(services, days=1)
    user_id = await _user(services)
    expired = await services.subscriptions.create_from_plan(user_id, plan_id)
    pending = await services.subscriptions.create_from_plan(user_id, plan_id)
    await _set(uow_factory, pending.id, status=SubscriptionStatus.PENDING)
    clock.advance(days=2)
    await services.subscriptions.expire_due()
    for sub_id in (expired.id, pending.id):
        with pytest.raises(InvalidStateTransition):
            await services.subscriptions.suspend(ADMIN, sub_id)
        with pytest.raises(InvalidStateTransition):
            await services.subscriptions.resume(ADMIN, sub_id)
    assert (await services.subscriptions.get(expired.id)).status is SubscriptionStatus.EXPIRED
    assert (await services.subscriptions.get(pending.id)).status is SubscriptionStatus.PENDING
    with pytest.raises(SubscriptionNotFound):
        await services.subscriptions.suspend(ADMIN, pending.id + 10)


async def test_resume_of_banned_users_subscription_refused(services: Services) -> None:
    user_id = await _user(services, 5)
    sub = await services.subscriptions.create_from_plan(user_id, await _plan(services))
    await services.subscriptions.suspend(ADMIN, sub.id)
    await services.users.ban(ADMIN, 5)
    with pytest.raises(UserBanned):
        await services.subscriptions.resume(ADMIN, sub.id)
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.SUSPENDED
    assert stored.suspend_reason is SuspendReason.ADMIN


async def test_resume_refused_while_traffic_limit_used_up(services: Services) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, traffic_gb=1)
    )
    await services.subscriptions.suspend(ADMIN, sub.id)
    await services.subscriptions.add_traffic(sub.id, GIB)
    with pytest.raises(InvalidStateTransition):
        await services.subscriptions.resume(ADMIN, sub.id)
    assert (await services.subscriptions.get(sub.id)).status is SubscriptionStatus.SUSPENDED


async def test_resume_after_expiry_time_expires(services: Services, clock: FakeClock) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, days=10)
    )
    await services.subscriptions.suspend(ADMIN, sub.id)
    clock.advance(days=10)  # exactly at expiry: no time left
    resumed = await services.subscriptions.resume(ADMIN, sub.id)
    assert resumed.status is SubscriptionStatus.EXPIRED
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.EXPIRED
    assert stored.suspend_reason is None


# --- expire_due ---------------------------------------------------------------------------


async def test_expire_due_is_set_based_and_only_touches_due_active(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _user(services)
    short = await _plan(services, days=5, name="short")
    long = await _plan(services, days=30, name="long")
    due_a = await services.subscriptions.create_from_plan(user_id, short)
    due_b = await services.subscriptions.create_from_plan(user_id, short)
    not_due = await services.subscriptions.create_from_plan(user_id, long)
    suspended_due = await services.subscriptions.create_from_plan(user_id, short)
    await services.subscriptions.suspend(ADMIN, suspended_due.id)
    pending_due = await services.subscriptions.create_from_plan(user_id, short)
    await _set(uow_factory, pending_due.id, status=SubscriptionStatus.PENDING)
    no_expiry = await services.subscriptions.create_from_plan(user_id, short)
    await _set(uow_factory, no_expiry.id, expires_at=None)

    clock.advance(days=5)
    clock.now -= timedelta(microseconds=1)  # one microsecond before expiry: not due yet
    assert await services.subscriptions.expire_due() == []
    clock.now += timedelta(microseconds=1)  # exactly at expiry: due

    expired = await services.subscriptions.expire_due()
    assert expired == sorted([due_a.id, due_b.id])
    assert await services.subscriptions.expire_due() == []

    states = {s.id: s.status for s in await services.subscriptions.list_for_user(user_id)}
    assert states == {
        due_a.id: SubscriptionStatus.EXPIRED,
        due_b.id: SubscriptionStatus.EXPIRED,
        not_due.id: SubscriptionStatus.ACTIVE,
        suspended_due.id: SubscriptionStatus.SUSPENDED,
        pending_due.id: SubscriptionStatus.PENDING,
        no_expiry.id: SubscriptionStatus.ACTIVE,
    }


# --- traffic ------------------------------------------------------------------------------


async def test_add_traffic_accumulates_and_suspends_once_at_limit(
    services: Services, clock: FakeClock
) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, traffic_gb=1)
    )
    first = await services.subscriptions.add_traffic(sub.id, GIB // 2)
    assert (first.used_bytes, first.limit_bytes) == (GIB // 2, GIB)
    assert not first.limit_reached and not first.suspended_now
    assert (await services.subscriptions.add_traffic(sub.id, 0)).used_bytes == GIB // 2

    clock.advance(hours=1)
    crossing = await services.subscriptions.add_traffic(sub.id, GIB // 2 + 10)
    assert crossing.used_bytes == GIB + 10
    assert crossing.limit_reached and crossing.suspended_now
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.SUSPENDED
    assert stored.suspend_reason is SuspendReason.TRAFFIC_LIMIT
    assert stored.suspended_at == clock.now
    assert stored.traffic_used_bytes == GIB + 10

    again = await services.subscriptions.add_traffic(sub.id, 5)
    assert again.limit_reached and not again.suspended_now
    assert again.used_bytes == GIB + 15


async def test_add_traffic_exactly_at_limit_suspends(services: Services) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, traffic_gb=2)
    )
    result = await services.subscriptions.add_traffic(sub.id, 2 * GIB)
    assert result.limit_reached and result.suspended_now


async def test_add_traffic_to_suspended_subscription_keeps_its_reason(services: Services) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, traffic_gb=1)
    )
    await services.subscriptions.suspend(ADMIN, sub.id)
    result = await services.subscriptions.add_traffic(sub.id, 2 * GIB)
    assert result.limit_reached and not result.suspended_now
    assert (await services.subscriptions.get(sub.id)).suspend_reason is SuspendReason.ADMIN


async def test_unlimited_subscription_never_suspends(services: Services) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, traffic_gb=None)
    )
    result = await services.subscriptions.add_traffic(sub.id, 10**15)
    assert result.limit_bytes is None
    assert not result.limit_reached and not result.suspended_now
    assert (await services.subscriptions.get(sub.id)).status is SubscriptionStatus.ACTIVE


async def test_add_traffic_refuses_negative_and_unknown(services: Services) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, traffic_gb=1)
    )
    await services.subscriptions.add_traffic(sub.id, 100)
    for delta in (-1, True):
        with pytest.raises(InvalidInput):
            await services.subscriptions.add_traffic(sub.id, delta)
    assert (await services.subscriptions.get(sub.id)).traffic_used_bytes == 100
    with pytest.raises(SubscriptionNotFound):
        await services.subscriptions.add_traffic(sub.id + 1, 1)


async def test_concurrent_traffic_reports_are_all_counted(services: Services) -> None:
    sub = await services.subscriptions.create_from_plan(
        await _user(services), await _plan(services, traffic_gb=1)
    )
    chunk = GIB // 8
    results = await asyncio.gather(
        *(services.subscriptions.add_traffic(sub.id, chunk) for _ in range(10))
    )
    assert (await services.subscriptions.get(sub.id)).traffic_used_bytes == 10 * chunk
    assert sorted(r.used_bytes for r in results) == [chunk * i for i in range(1, 11)]
    assert sum(r.suspended_now for r in results) == 1


# --- renew_from_plan ----------------------------------------------------------------------


async def test_renew_from_plan_resets_traffic_and_lifts_traffic_suspension(
    services: Services, clock: FakeClock
) -> None:
    user_id = await _user(services)
    small = await _plan(services, days=30, traffic_gb=1, devices=1, name="small")
    big = await _plan(services, days=60, traffic_gb=100, devices=5, name="big")
    sub = await services.subscriptions.create_from_plan(user_id, small)
    await services.subscriptions.add_traffic(sub.id, 2 * GIB)
    assert (await services.subscriptions.get(sub.id)).status is SubscriptionStatus.SUSPENDED

    clock.advance(days=10)
    renewed = await services.subscriptions.renew_from_plan(sub.id, big)
    assert renewed.status is SubscriptionStatus.ACTIVE
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.ACTIVE
    assert stored.suspend_reason is None and stored.suspended_at is None
    assert stored.plan_id == big
    assert stored.traffic_used_bytes == 0
    assert stored.traffic_limit_bytes == 100 * GIB
    assert stored.device_limit == 5
    assert stored.expires_at == sub.expires_at + timedelta(days=60)

    # Renewing onto an unlimited plan clears the byte limit.
    unlimited = await _plan(services, days=7, traffic_gb=None, name="unlimited")
    await services.subscriptions.renew_from_plan(sub.id, unlimited)
    assert (await services.subscriptions.get(sub.id)).traffic_limit_bytes is None


async def test_renew_keeps_admin_suspension_and_refuses_inactive_plan(
    services: Services,
) -> None:
    user_id = await _user(services)
    plan_id = await _plan(services, days=30, traffic_gb=1)
    sub = await services.subscriptions.create_from_plan(user_id, plan_id)
    await services.subscriptions.suspend(ADMIN, sub.id)
    await services.subscriptions.renew_from_plan(sub.id, plan_id)
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.SUSPENDED
    assert stored.suspend_reason is SuspendReason.ADMIN
    assert stored.expires_at == sub.expires_at + timedelta(days=30)

    retired = await _plan(services, days=90, name="retired")
    await services.plans.set_active(ADMIN, retired, False)
    with pytest.raises(PlanInactive):
        await services.subscriptions.renew_from_plan(sub.id, retired)
    with pytest.raises(PlanNotFound):
        await services.subscriptions.renew_from_plan(sub.id, retired + 100)
    after = await services.subscriptions.get(sub.id)
    assert after.plan_id == plan_id
    assert after.expires_at == stored.expires_at


async def test_renew_expired_subscription_starts_from_now(
    services: Services, clock: FakeClock
) -> None:
    plan_id = await _plan(services, days=30)
    sub = await services.subscriptions.create_from_plan(await _user(services), plan_id)
    clock.advance(days=45)
    await services.subscriptions.expire_due()
    await services.subscriptions.renew_from_plan(sub.id, plan_id)
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is SubscriptionStatus.ACTIVE
    assert stored.expires_at == clock.now + timedelta(days=30)


# --- auto renew ---------------------------------------------------------------------------


async def test_set_auto_renew_checks_ownership(services: Services) -> None:
    owner = await _user(services, 1)
    stranger = await _user(services, 2)
    sub = await services.subscriptions.create_from_plan(owner, await _plan(services))
    with pytest.raises(SubscriptionNotFound):
        await services.subscriptions.set_auto_renew(stranger, sub.id, True)
    assert (await services.subscriptions.get(sub.id)).auto_renew is False

    result = await services.subscriptions.set_auto_renew(owner, sub.id, True)
    assert result.auto_renew is True
    assert (await services.subscriptions.get(sub.id)).auto_renew is True
    await services.subscriptions.set_auto_renew(owner, sub.id, False)
    assert (await services.subscriptions.get(sub.id)).auto_renew is False
    with pytest.raises(SubscriptionNotFound):
        await services.subscriptions.set_auto_renew(owner, sub.id + 5, True)


async def test_list_for_user_newest_first(services: Services) -> None:
    user_id = await _user(services, 1)
    other = await _user(services, 2)
    plan_id = await _plan(services)
    ids = [(await services.subscriptions.create_from_plan(user_id, plan_id)).id for _ in range(3)]
    await services.subscriptions.create_from_plan(other, plan_id)
    listed = await services.subscriptions.list_for_user(user_id)
    assert [s.id for s in listed] == sorted(ids, reverse=True)


# --- a banned user's subscriptions stay off -----------------------------------------------


async def test_extend_does_not_activate_a_banned_users_subscription(
    services: Services, clock: FakeClock
) -> None:
    user_id = await _user(services, 5)
    plan_id = await _plan(services, days=5)
    sub = await services.subscriptions.create_from_plan(user_id, plan_id)
    clock.advance(days=6)
    assert await services.subscriptions.expire_due() == [sub.id]
    await services.users.ban(ADMIN, 5)
    with contextlib.suppress(UserBanned):
        await services.subscriptions.extend(sub.id, 30, actor=ADMIN)
    assert (await services.subscriptions.get(sub.id)).status is not SubscriptionStatus.ACTIVE


async def test_renew_does_not_activate_a_banned_users_subscription(services: Services) -> None:
    user_id = await _user(services, 5)
    plan_id = await _plan(services, days=30, traffic_gb=1)
    sub = await services.subscriptions.create_from_plan(user_id, plan_id)
    assert (await services.subscriptions.add_traffic(sub.id, GIB)).suspended_now
    await services.users.ban(ADMIN, 5)
    with contextlib.suppress(UserBanned):
        await services.subscriptions.renew_from_plan(sub.id, plan_id)
    assert (await services.subscriptions.get(sub.id)).status is not SubscriptionStatus.ACTIVE
