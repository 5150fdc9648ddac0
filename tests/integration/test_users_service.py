"""UserService against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from controller.db.models import Subscription, User, UserActivity
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import SubscriptionStatus, SuspendReason, UserRole
from controller.domain.errors import InvalidInput, UserNotFound
from controller.services import Actor, Services
from controller.services.plans import PlanDraft
from controller.services.users import TelegramProfile
from tests.conftest import FakeClock


async def _user_count(uow_factory: UnitOfWorkFactory) -> int:
    async with uow_factory() as uow:
        return await uow.users.count()


async def _audit(uow_factory: UnitOfWorkFactory) -> list:
    async with uow_factory() as uow:
        return list(await uow.audit.list())


def _assert_utc(moment: datetime | None) -> None:
    assert moment is not None
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)


# --- register -----------------------------------------------------------------------------


async def test_register_creates_once_and_refreshes_profile(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    first = await services.users.register(
        TelegramProfile(
            telegram_id=1001,
            username="old",
            first_name="Ann",
            last_name="Lee",
            language_code="en",
            is_premium=False,
        )
    )
    assert first.created
    assert first.user.role is UserRole.CLIENT
    assert first.user.language_code == "en"
    assert first.user.last_activity == clock.now

    clock.advance(hours=3)
    second = await services.users.register(
        TelegramProfile(
            telegram_id=1001,
            username="new",
            first_name="Anna",
            last_name=None,
            language_code="ru",
            is_premium=True,
        )
    )
    assert not second.created
    assert second.user.id == first.user.id

    stored = await services.users.get(1001)
    assert stored.username == "new"
    assert stored.first_name == "Anna"
    assert stored.last_name is None
    assert stored.is_premium is True
    assert stored.last_activity == clock.now
    # The language of an existing user is not taken from the Telegram profile again.
    assert stored.language_code == "en"
    assert stored.referral_code == first.user.referral_code
    assert await _user_count(uow_factory) == 1

    # Only the first contact is recorded as a registration.
    async with uow_factory() as uow:
        actions = (
            (
                await uow.session.execute(
                    sa.select(UserActivity.action).where(UserActivity.user_id == first.user.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["registered"]


async def test_register_never_overwrites_chosen_language(services: Services) -> None:
    await services.users.register(TelegramProfile(telegram_id=77, language_code="ru"))
    chosen = await services.users.set_language(77, "EN ")
    assert chosen.language_code == "en"
    await services.users.register(TelegramProfile(telegram_id=77, language_code="ru-RU"))
    assert (await services.users.get(77)).language_code == "en"


LANGUAGE_CASES = [
    ("en-US", "en"),
    ("EN_gb", "en"),
    ("en", "en"),
    (" ru-RU ", "ru"),
    ("de", "ru"),
    ("uk", "ru"),
    ("", "ru"),
    (None, "ru"),
]


async def test_register_normalises_language(services: Services) -> None:
    for telegram_id, (language_code, expected) in enumerate(LANGUAGE_CASES, start=500):
        registration = await services.users.register(
            TelegramProfile(telegram_id=telegram_id, language_code=language_code)
        )
        assert registration.user.language_code == expected, language_code
        assert (await services.users.get(telegram_id)).language_code == expected, language_code


async def test_register_refuses_invalid_telegram_id(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    for telegram_id in (0, -7, 2**52, True):
        with pytest.raises(InvalidInput):
            await services.users.register(TelegramProfile(telegram_id=telegram_id))
    assert await _user_count(uow_factory) == 0
    # The largest valid id is accepted.
    assert (await services.users.register(TelegramProfile(telegram_id=2**52 - 1))).created


async def test_register_clips_long_profile_fields(services: Services) -> None:
    registration = await services.users.register(
        TelegramProfile(telegram_id=8, username="u" * 300, first_name="f" * 256)
    )
    assert registration.user.username == "u" * 255
    stored = await services.users.get(8)
    assert stored.username == "u" * 255
    assert stored.first_name == "f" * 255


async def test_returned_datetimes_are_aware_utc(
    services: Services, clock: FakeClock, backend: str
) -> None:
    registration = await services.users.register(TelegramProfile(telegram_id=31))
    for moment in (
        registration.user.created_at,
        registration.user.updated_at,
        registration.user.last_activity,
    ):
        _assert_utc(moment)
    stored = await services.users.get(31)
    _assert_utc(stored.created_at)
    _assert_utc(stored.updated_at)
    _assert_utc(stored.last_activity)
    assert stored.created_at == clock.now

    banned = await services.users.ban(Actor.cli(), 31)
    _assert_utc(banned.banned_at)
    _assert_utc((await services.users.get(31)).banned_at)
    assert (await services.users.get(31)).banned_at == clock.now


async def test_get_unknown_user(services: Services) -> None:
    with pytest.raises(UserNotFound):
        await services.users.get(123456)


# --- set_role and audit -------------------------------------------------------------------


async def test_set_role_on_unseen_telegram_id_creates_user_and_audits(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user = await services.users.set_role(Actor.cli(), 5555, UserRole.ADMIN)
    assert user.role is UserRole.ADMIN
    assert user.telegram_id == 5555

    stored = await services.users.get(5555)
    assert stored.id == user.id
    assert stored.role is UserRole.ADMIN
    assert stored.language_code == "ru"
    assert stored.is_staff

    entries = await _audit(uow_factory)
    assert len(entries) == 1
    entry = entries[0]
    assert entry.actor == "cli"
    assert entry.actor_user_id is None
    assert entry.action == "user.set_role"
    assert entry.target_type == "user"
    assert entry.target_id == str(user.id)
    assert entry.details["telegram_id"] == 5555
    assert entry.details["to"] == "admin"
    _assert_utc(entry.created_at)

    # A later /start by that person does not create a second record nor demote them.
    registration = await services.users.register(TelegramProfile(telegram_id=5555))
    assert not registration.created
    assert (await services.users.get(5555)).role is UserRole.ADMIN


async def test_set_role_changes_existing_user_and_records_from_to(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    admin = await services.users.set_role(Actor.cli(), 1, UserRole.ADMIN)
    await services.users.register(TelegramProfile(telegram_id=2))
    actor = Actor.telegram(1, admin.id)
    user = await services.users.set_role(actor, 2, UserRole.SUPPORT)
    assert user.role is UserRole.SUPPORT
    assert (await services.users.get(2)).role is UserRole.SUPPORT

    latest = (await _audit(uow_factory))[0]
    assert latest.actor == "tg:1"
    assert latest.actor_user_id == admin.id
    assert latest.details == {"telegram_id": 2, "from": "client", "to": "support"}
    assert await _user_count(uow_factory) == 2


async def test_set_role_refuses_invalid_telegram_id(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    with pytest.raises(InvalidInput):
        await services.users.set_role(Actor.cli(), -1, UserRole.ADMIN)
    assert await _user_count(uow_factory) == 0
    assert await _audit(uow_factory) == []


# --- ban / unban --------------------------------------------------------------------------


async def _make_plan(services: Services, days: int) -> int:
    plan = await services.plans.create(
        Actor.cli(), PlanDraft(name=f"{days}d", duration_days=days, price_minor=100)
    )
    return plan.id


async def test_ban_suspends_active_subscriptions_and_unban_restores(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user = (await services.users.register(TelegramProfile(telegram_id=42))).user
    other = (await services.users.register(TelegramProfile(telegram_id=43))).user
    long_plan = await _make_plan(services, 30)
    short_plan = await _make_plan(services, 5)

    long_sub = await services.subscriptions.create_from_plan(user.id, long_plan)
    short_sub = await services.subscriptions.create_from_plan(user.id, short_plan)
    admin_sub = await services.subscriptions.create_from_plan(user.id, long_plan)
    await services.subscriptions.suspend(Actor.cli(), admin_sub.id)
    expired_sub = await services.subscriptions.create_from_plan(user.id, short_plan)
    others_sub = await services.subscriptions.create_from_plan(other.id, long_plan)
    clock.advance(days=1)
    # Nothing is due yet except the one we expire by hand below.
    async with uow_factory() as uow:
        row = await uow.subscriptions.get(expired_sub.id, for_update=True)
        assert row is not None
        row.status = SubscriptionStatus.EXPIRED
        await uow.commit()
    ban_time = clock.now

    banned = await services.users.ban(Actor.cli(), 42, reason="fraud")
    assert banned.is_banned
    assert banned.ban_reason == "fraud"
    assert banned.banned_at == ban_time

    for sub_id in (long_sub.id, short_sub.id):
        sub = await services.subscriptions.get(sub_id)
        assert sub.status is SubscriptionStatus.SUSPENDED
        assert sub.suspend_reason is SuspendReason.BANNED
        assert sub.suspended_at == ban_time
    admin_row = await services.subscriptions.get(admin_sub.id)
    assert admin_row.suspend_reason is SuspendReason.ADMIN
    assert (await services.subscriptions.get(expired_sub.id)).status is SubscriptionStatus.EXPIRED
    assert (await services.subscriptions.get(others_sub.id)).status is SubscriptionStatus.ACTIVE

    entry = (await _audit(uow_factory))[0]
    assert entry.action == "user.ban"
    assert entry.target_id == str(user.id)
    assert entry.details == {
        "reason": "fraud",
        "suspended_subscriptions": sorted([long_sub.id, short_sub.id]),
    }
    stored = await services.users.get(42)
    assert stored.is_banned and stored.ban_reason == "fraud"

    # The short subscription runs out while the user is banned.
    clock.advance(days=10)
    unbanned = await services.users.unban(Actor.cli(), 42)
    assert not unbanned.is_banned
    assert unbanned.banned_at is None and unbanned.ban_reason is None

    restored = await services.subscriptions.get(long_sub.id)
    assert restored.status is SubscriptionStatus.ACTIVE
    assert restored.suspend_reason is None and restored.suspended_at is None
    ran_out = await services.subscriptions.get(short_sub.id)
    assert ran_out.status is SubscriptionStatus.EXPIRED
    assert ran_out.suspend_reason is None and ran_out.suspended_at is None
    still_admin = await services.subscriptions.get(admin_sub.id)
    assert still_admin.status is SubscriptionStatus.SUSPENDED
    assert still_admin.suspend_reason is SuspendReason.ADMIN
    assert (await services.subscriptions.get(expired_sub.id)).status is SubscriptionStatus.EXPIRED

    stored = await services.users.get(42)
    assert not stored.is_banned and stored.banned_at is None
    assert (await _audit(uow_factory))[0].action == "user.unban"


async def test_ban_clips_reason_and_unknown_user_writes_nothing(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    with pytest.raises(UserNotFound):
        await services.users.ban(Actor.cli(), 404)
    with pytest.raises(UserNotFound):
        await services.users.unban(Actor.cli(), 404)
    assert await _audit(uow_factory) == []

    await services.users.register(TelegramProfile(telegram_id=9))
    await services.users.ban(Actor.cli(), 9, reason="x" * 600)
    assert (await services.users.get(9)).ban_reason == "x" * 500


# --- language, touch, list ----------------------------------------------------------------


async def test_set_language_unsupported_changes_nothing(services: Services) -> None:
    await services.users.register(TelegramProfile(telegram_id=11, language_code="en"))
    with pytest.raises(InvalidInput):
        await services.users.set_language(11, "de")
    assert (await services.users.get(11)).language_code == "en"
    with pytest.raises(UserNotFound):
        await services.users.set_language(12, "ru")
    updated = await services.users.set_language(11, "ru")
    assert updated.language_code == "ru"
    assert (await services.users.get(11)).language_code == "ru"


async def test_touch_records_clock_time(services: Services, clock: FakeClock) -> None:
    await services.users.register(TelegramProfile(telegram_id=21))
    await services.users.register(TelegramProfile(telegram_id=22))
    registered_at = clock.now
    clock.advance(hours=5, minutes=7)
    await services.users.touch(21)
    touched = await services.users.get(21)
    assert touched.last_activity == clock.now
    _assert_utc(touched.last_activity)
    assert (await services.users.get(22)).last_activity == registered_at
    # Touching an unknown user is a no-op, not an error.
    await services.users.touch(999)


async def test_list_filters_and_paginates(services: Services) -> None:
    ids = []
    for telegram_id in range(100, 106):
        ids.append(
            (await services.users.register(TelegramProfile(telegram_id=telegram_id))).user.id
        )
    await services.users.set_role(Actor.cli(), 101, UserRole.ADMIN)
    await services.users.set_role(Actor.cli(), 103, UserRole.ADMIN)
    await services.users.set_role(Actor.cli(), 104, UserRole.SUPPORT)
    await services.users.ban(Actor.cli(), 102)
    await services.users.ban(Actor.cli(), 103)

    everyone = await services.users.list()
    assert [u.id for u in everyone] == sorted(ids)

    admins = await services.users.list(role=UserRole.ADMIN)
    assert [u.telegram_id for u in admins] == [101, 103]
    banned = await services.users.list(banned=True)
    assert [u.telegram_id for u in banned] == [102, 103]
    not_banned = await services.users.list(banned=False)
    assert [u.telegram_id for u in not_banned] == [100, 101, 104, 105]
    banned_admins = await services.users.list(role=UserRole.ADMIN, banned=True)
    assert [u.telegram_id for u in banned_admins] == [103]
    clients = await services.users.list(role=UserRole.CLIENT)
    assert [u.telegram_id for u in clients] == [100, 102, 105]

    page = await services.users.list(limit=2, offset=2)
    assert [u.telegram_id for u in page] == [102, 103]
    assert [u.telegram_id for u in await services.users.list(limit=2, offset=5)] == [105]
    assert await services.users.list(offset=10) == []


async def test_list_refuses_bad_paging(services: Services) -> None:
    for limit, offset in ((0, 0), (1001, 0), (10, -1)):
        with pytest.raises(InvalidInput):
            await services.users.list(limit=limit, offset=offset)
    assert await services.users.list(limit=1000) == []


async def test_ban_only_touches_rows_of_that_user(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    """The set-based UPDATE in ban() is scoped by user id (checked at the row level)."""
    plan_id = await _make_plan(services, 30)
    users = [
        (await services.users.register(TelegramProfile(telegram_id=t))).user for t in (1, 2, 3)
    ]
    for user in users:
        await services.subscriptions.create_from_plan(user.id, plan_id)
    await services.users.ban(Actor.cli(), 2)
    async with uow_factory() as uow:
        rows = (
            await uow.session.execute(
                sa.select(User.telegram_id, Subscription.status)
                .join(Subscription, Subscription.user_id == User.id)
                .order_by(User.telegram_id)
            )
        ).all()
    assert [(t, s) for t, s in rows] == [
        (1, SubscriptionStatus.ACTIVE),
        (2, SubscriptionStatus.SUSPENDED),
        (3, SubscriptionStatus.ACTIVE),
    ]


async def test_unban_keeps_traffic_exhausted_subscription_off(services: Services) -> None:
    user = (await services.users.register(TelegramProfile(telegram_id=42))).user
    plan = await services.plans.create(
        Actor.cli(),
        PlanDraft(name="1GB", duration_days=30, price_minor=100, traffic_limit_gb=1),
    )
    sub = await services.subscriptions.create_from_plan(user.id, plan.id)
    await services.users.ban(Actor.cli(), 42)
    # A late traffic report from the node pushes it over the limit while it is suspended.
    late = await services.subscriptions.add_traffic(sub.id, 2 * 1024**3)
    assert late.limit_reached and not late.suspended_now
    await services.users.unban(Actor.cli(), 42)
    stored = await services.subscriptions.get(sub.id)
    assert stored.status is not SubscriptionStatus.ACTIVE
