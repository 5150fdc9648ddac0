"""The use cases the client bot calls (SQLite and PostgreSQL): referrals at registration,
the trial, the subscription overview, preferences, locations, devices and support tickets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from controller.db.models import Referral, Server, SupportMessage, UserActivity
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import (
    NodeStatus,
    SubscriptionStatus,
    TicketPriority,
    TicketStatus,
    VpnProtocol,
)
from controller.domain.errors import (
    ConfigNotFound,
    InvalidInput,
    LimitReached,
    NodeNotFound,
    SubscriptionNotFound,
    TicketNotFound,
    TrialAlreadyUsed,
    TrialUnavailable,
    UserBanned,
    UserNotFound,
)
from controller.services import Services
from controller.services.plans import PlanDraft
from controller.services.users import TelegramProfile
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN, GIB

ALICE, BOB, CAROL = 2001, 2002, 2003
WG_KEY = "c" * 43 + "="


async def _register(services: Services, telegram_id: int, referral_code: str | None = None) -> int:
    profile = TelegramProfile(telegram_id=telegram_id)
    return (await services.users.register(profile, referral_code=referral_code)).user.id


async def _plan(
    services: Services,
    *,
    name: str = "Month",
    days: int = 30,
    devices: int = 2,
    trial: bool = False,
    sort_order: int = 0,
    traffic_gb: int | None = None,
) -> int:
    plan = await services.plans.create(
        ADMIN,
        PlanDraft(
            name=name,
            duration_days=days,
            price_minor=0 if trial else 19900,
            device_limit=devices,
            is_trial=trial,
            sort_order=sort_order,
            traffic_limit_gb=traffic_gb,
        ),
    )
    return plan.id


async def _node(
    uow_factory: UnitOfWorkFactory,
    name: str,
    *,
    country_code: str = "NL",
    city: str = "Amsterdam",
    status: NodeStatus = NodeStatus.ONLINE,
    enrolled: bool = True,
    active: bool = True,
    maintenance: bool = False,
    max_users: int = 100,
    protocols: tuple[VpnProtocol, ...] = (VpnProtocol.WIREGUARD,),
    reported: tuple[VpnProtocol, ...] | None = None,
) -> int:
    """A node as the hub leaves it once its agent reported its parameters."""
    reported = protocols if reported is None else reported
    params: dict[VpnProtocol, dict[str, Any]] = {
        VpnProtocol.WIREGUARD: {
            "public_key": WG_KEY,
            "listen_port": 51820,
            "addresses": ["10.8.0.1/24"],
        },
        VpnProtocol.VLESS: {
            "public_key": "reality-public-key",
            "server_names": ["www.example.com"],
            "short_ids": ["ab"],
            "port": 443,
        },
        VpnProtocol.OPENVPN: {"backend": "ovpn", "port": 1194},
    }
    async with uow_factory() as uow:
        server = await uow.nodes.add(
            Server(
                name=name,
                ip_address=f"{name}.example.net",
                country=f"Country {country_code}",
                country_code=country_code,
                city=city,
                supported_protocols=[p.value for p in protocols],
                primary_protocol=protocols[0],
                wireguard_config=params[VpnProtocol.WIREGUARD]
                if VpnProtocol.WIREGUARD in reported
                else None,
                vless_config=params[VpnProtocol.VLESS] if VpnProtocol.VLESS in reported else None,
                openvpn_config=params[VpnProtocol.OPENVPN]
                if VpnProtocol.OPENVPN in reported
                else None,
                max_users=max_users,
                is_active=active,
                is_maintenance=maintenance,
                status=status,
                enrolled_at=datetime(2026, 1, 1, tzinfo=UTC) if enrolled else None,
            )
        )
        await uow.commit()
        return server.id


async def _count(uow_factory: UnitOfWorkFactory, entity: Any) -> int:
    async with uow_factory() as uow:
        stmt = sa.select(sa.func.count()).select_from(entity)
        return int((await uow.session.execute(stmt)).scalar_one())


async def _actions(uow_factory: UnitOfWorkFactory, user_id: int) -> list[str]:
    async with uow_factory() as uow:
        stmt = (
            sa.select(UserActivity.action)
            .where(UserActivity.user_id == user_id)
            .order_by(UserActivity.id)
        )
        return list((await uow.session.execute(stmt)).scalars().all())


# --- referrals at registration --------------------------------------------------------------


async def test_registration_through_a_referral_link_is_recorded(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    alice_id = await _register(services, ALICE)
    code = (await services.users.get(ALICE)).referral_code
    registration = await services.users.register(
        TelegramProfile(telegram_id=BOB), referral_code=code
    )
    assert registration.created and registration.referred_by == alice_id
    async with uow_factory() as uow:
        [referral] = (await uow.session.execute(sa.select(Referral))).scalars().all()
    assert (referral.referrer_id, referral.referred_id) == (alice_id, registration.user.id)
    assert referral.rewarded_at is None
    # Known users are never re-referred, not even by another link.
    carol_id = await _register(services, CAROL)
    again = await services.users.register(TelegramProfile(telegram_id=BOB), referral_code=code)
    assert not again.created and again.referred_by is None
    carol_code = (await services.users.get(CAROL)).referral_code
    await services.users.register(TelegramProfile(telegram_id=BOB), referral_code=carol_code)
    await services.users.register(TelegramProfile(telegram_id=ALICE), referral_code=carol_code)
    assert await _count(uow_factory, Referral) == 1
    stats = await services.users.referral_stats(ALICE)
    assert (stats.code, stats.invited, stats.paid, stats.reward_days) == (code, 1, 0, 0)
    assert (await services.users.referral_stats(CAROL)).invited == 0
    assert carol_id != alice_id


@pytest.mark.parametrize(
    "code", ["unknown-code", "", "has space", "x" * 17, "../../etc", "ünïcode", "a\nb"]
)
async def test_unknown_or_malformed_referral_codes_are_ignored(
    services: Services, uow_factory: UnitOfWorkFactory, code: str
) -> None:
    await _register(services, ALICE)
    registration = await services.users.register(
        TelegramProfile(telegram_id=BOB), referral_code=code
    )
    assert registration.created and registration.referred_by is None
    assert await _count(uow_factory, Referral) == 0


async def test_referral_stats_of_an_unknown_user(services: Services) -> None:
    with pytest.raises(UserNotFound):
        await services.users.referral_stats(ALICE)


# --- the trial ------------------------------------------------------------------------------


async def test_trial_once_per_user(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    user_id = await _register(services, ALICE)
    with pytest.raises(TrialUnavailable) as unavailable:
        await services.subscriptions.start_trial(ALICE)
    assert unavailable.value.code == "trial_unavailable"
    assert (await services.users.get(ALICE)).trial_used_at is None
    await _plan(services, name="Trial later", days=7, trial=True, sort_order=5)
    first_trial = await _plan(services, name="Trial", days=3, devices=1, trial=True, sort_order=1)
    inactive = await _plan(services, name="Old trial", days=30, trial=True, sort_order=0)
    await services.plans.set_active(ADMIN, inactive, False)

    trial = await services.subscriptions.start_trial(ALICE)
    assert trial.plan_id == first_trial
    assert trial.status is SubscriptionStatus.ACTIVE
    assert trial.expires_at == clock.now + timedelta(days=3)
    assert (await services.users.get(ALICE)).trial_used_at == clock.now
    assert "trial_started" in await _actions(uow_factory, user_id)

    with pytest.raises(TrialAlreadyUsed) as raised:
        await services.subscriptions.start_trial(ALICE)
    assert raised.value.code == "trial_used"
    # Even once the trial ran out: once per user, ever.
    clock.advance(days=10)
    await services.subscriptions.expire_due()
    with pytest.raises(TrialAlreadyUsed):
        await services.subscriptions.start_trial(ALICE)
    assert len(await services.subscriptions.overview(ALICE)) == 1


async def test_trial_refusals_change_nothing(services: Services) -> None:
    bob_id = await _register(services, BOB)
    await _register(services, CAROL)
    await _plan(services, name="Trial", days=3, trial=True)
    paid = await _plan(services)
    await services.subscriptions.create_from_plan(bob_id, paid)
    with pytest.raises(TrialAlreadyUsed, match="newcomers"):
        await services.subscriptions.start_trial(BOB)
    assert (await services.users.get(BOB)).trial_used_at is None
    await services.users.ban(ADMIN, CAROL)
    with pytest.raises(UserBanned):
        await services.subscriptions.start_trial(CAROL)
    assert (await services.users.get(CAROL)).trial_used_at is None
    with pytest.raises(UserNotFound):
        await services.subscriptions.start_trial(ALICE)
    assert len(await services.subscriptions.overview(CAROL)) == 0
    assert len(await services.subscriptions.overview(BOB)) == 1


async def test_simultaneous_trial_requests_give_one_trial(
    pg_only: None, services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    user_id = await _register(services, ALICE)
    await _plan(services, name="Trial", days=3, trial=True)
    results = await asyncio.gather(
        *(services.subscriptions.start_trial(ALICE) for _ in range(8)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(e, TrialAlreadyUsed) for e in losers), losers
    assert len(await services.subscriptions.overview(ALICE)) == 1
    assert (await _actions(uow_factory, user_id)).count("trial_started") == 1


# --- the subscription overview --------------------------------------------------------------


async def test_overview_view_and_auto_renew(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    alice_id = await _register(services, ALICE)
    bob_id = await _register(services, BOB)
    month = await _plan(services, name="Month", devices=3, traffic_gb=50)
    older = await services.subscriptions.create_from_plan(alice_id, month)
    newer = await services.subscriptions.grant(ADMIN, CAROL, days=5)  # another user's
    bobs = await services.subscriptions.create_from_plan(bob_id, month)
    await _node(uow_factory, "nl-1")
    await services.configs.provision(ALICE, device_name="phone")
    clock.advance(days=1)
    second = await services.subscriptions.grant(ADMIN, ALICE, days=7)  # extends `older`
    assert second.id == older.id

    overview = await services.subscriptions.overview(ALICE)
    assert [v.id for v in overview] == [older.id]
    [view] = overview
    assert (view.plan_id, view.plan_name, view.status) == (
        month,
        "Month",
        SubscriptionStatus.ACTIVE,
    )
    assert (view.device_limit, view.devices_used) == (3, 1)
    assert view.traffic_limit_bytes == 50 * GIB and view.traffic_used_bytes == 0
    assert older.expires_at is not None
    assert view.expires_at == older.expires_at + timedelta(days=7)
    assert view.auto_renew is False and view.suspend_reason is None

    # Newest first, plain (plan-less) subscriptions have no plan name.
    plain = await services.subscriptions.grant(ADMIN, BOB, days=3)
    assert plain.id == bobs.id  # extended, not new
    async with uow_factory() as uow:
        row = await uow.subscriptions.get(bobs.id, for_update=True)
        assert row is not None
        row.status = SubscriptionStatus.SUSPENDED
        await uow.commit()
    third = await services.subscriptions.grant(ADMIN, BOB, days=3)
    assert [v.id for v in await services.subscriptions.overview(BOB)] == [third.id, bobs.id]
    assert (await services.subscriptions.view(BOB, third.id)).plan_name is None

    toggled = await services.subscriptions.set_auto_renew_for(ALICE, older.id, True)
    assert toggled.auto_renew is True and toggled.devices_used == 1
    assert (await services.subscriptions.view(ALICE, older.id)).auto_renew is True

    for foreign in (bobs.id, newer.id, older.id + 1000):
        with pytest.raises(SubscriptionNotFound):
            await services.subscriptions.view(ALICE, foreign)
        with pytest.raises(SubscriptionNotFound):
            await services.subscriptions.set_auto_renew_for(ALICE, foreign, True)
    assert (await services.subscriptions.view(BOB, bobs.id)).auto_renew is False
    with pytest.raises(UserNotFound):
        await services.subscriptions.overview(999)
    with pytest.raises(UserNotFound):
        await services.subscriptions.view(999, bobs.id)
    assert await services.subscriptions.overview(CAROL) != []


# --- preferences ----------------------------------------------------------------------------


async def test_protocol_and_auto_select_preferences(services: Services) -> None:
    await _register(services, ALICE)
    user = await services.users.set_preferred_protocol(ALICE, VpnProtocol.VLESS)
    assert user.preferred_protocol is VpnProtocol.VLESS
    assert (await services.users.get(ALICE)).preferred_protocol is VpnProtocol.VLESS
    with pytest.raises(InvalidInput):
        await services.users.set_preferred_protocol(ALICE, VpnProtocol.IKEV2)
    assert (await services.users.get(ALICE)).preferred_protocol is VpnProtocol.VLESS
    await services.users.set_preferred_protocol(ALICE, None)
    assert (await services.users.get(ALICE)).preferred_protocol is None

    assert (await services.users.set_auto_select(ALICE, False)).auto_select_protocol is False
    assert (await services.users.get(ALICE)).auto_select_protocol is False
    await services.users.set_auto_select(ALICE, True)
    assert (await services.users.get(ALICE)).auto_select_protocol is True
    with pytest.raises(UserNotFound):
        await services.users.set_auto_select(BOB, True)


async def test_preferred_server_must_be_an_active_enrolled_node(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    await _register(services, ALICE)
    good = await _node(uow_factory, "nl-1")
    pending = await _node(uow_factory, "nl-2", enrolled=False)
    retired = await _node(uow_factory, "nl-3", active=False)
    assert (await services.users.set_preferred_server(ALICE, good)).preferred_server_id == good
    for bad in (pending, retired, good + 1000):
        with pytest.raises(NodeNotFound):
            await services.users.set_preferred_server(ALICE, bad)
    assert (await services.users.get(ALICE)).preferred_server_id == good
    await services.users.set_preferred_server(ALICE, None)
    assert (await services.users.get(ALICE)).preferred_server_id is None


# --- locations ------------------------------------------------------------------------------


async def test_locations(services: Services, uow_factory: UnitOfWorkFactory) -> None:
    nl = await _node(uow_factory, "nl-1", max_users=4)
    de_b = await _node(uow_factory, "de-b", country_code="DE", city="Berlin", max_users=10)
    de_a = await _node(
        uow_factory,
        "de-a",
        country_code="DE",
        city="Berlin",
        protocols=(VpnProtocol.VLESS, VpnProtocol.WIREGUARD),
    )
    fra = await _node(uow_factory, "de-f", country_code="DE", city="Frankfurt", maintenance=True)
    down = await _node(uow_factory, "fi-1", country_code="FI", status=NodeStatus.DOWN)
    degraded = await _node(uow_factory, "fi-2", country_code="FI", status=NodeStatus.DEGRADED)
    silent = await _node(uow_factory, "fi-3", country_code="FI", reported=())
    await _node(uow_factory, "xx-pending", enrolled=False)
    await _node(uow_factory, "xx-retired", active=False)

    user_id = await _register(services, ALICE)
    await services.subscriptions.create_from_plan(user_id, await _plan(services, devices=10))
    await services.users.set_preferred_server(ALICE, nl)
    for _ in range(3):
        await services.configs.provision(ALICE, VpnProtocol.WIREGUARD)

    locations = await services.nodes.locations()
    assert [v.server_id for v in locations] == [de_a, de_b, fra, down, degraded, silent, nl]
    by_id = {v.server_id: v for v in locations}
    assert by_id[nl].load_percent == 75  # 3 of 4
    assert by_id[nl].available is True
    assert by_id[de_a].protocols == frozenset({VpnProtocol.VLESS, VpnProtocol.WIREGUARD})
    assert (by_id[de_a].country_code, by_id[de_a].city, by_id[de_a].country) == (
        "DE",
        "Berlin",
        "Country DE",
    )
    assert by_id[de_b].load_percent == 0 and by_id[de_b].available
    assert by_id[fra].available is False  # maintenance
    assert by_id[down].available is False and by_id[down].status is NodeStatus.DOWN
    assert by_id[degraded].available is True
    assert by_id[silent].available is False and by_id[silent].protocols == frozenset()

    await services.configs.provision(ALICE, VpnProtocol.WIREGUARD)
    full = {v.server_id: v for v in await services.nodes.locations()}[nl]
    assert (full.load_percent, full.available) == (100, False)


# --- devices --------------------------------------------------------------------------------


async def test_devices_and_available_protocols(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    assert await services.configs.available_protocols() == []
    await _node(uow_factory, "nl-1", protocols=(VpnProtocol.WIREGUARD,))
    await _node(uow_factory, "de-1", country_code="DE", protocols=(VpnProtocol.VLESS,))
    await _node(
        uow_factory, "fi-1", country_code="FI", protocols=(VpnProtocol.OPENVPN,), maintenance=True
    )
    assert await services.configs.available_protocols() == [
        VpnProtocol.VLESS,
        VpnProtocol.WIREGUARD,
    ]

    alice_id = await _register(services, ALICE)
    await _register(services, BOB)
    empty = await services.configs.devices(ALICE)
    assert (empty.subscription_id, empty.device_limit, empty.devices) == (None, 0, [])

    sub = await services.subscriptions.create_from_plan(alice_id, await _plan(services, devices=3))
    phone = await services.configs.provision(ALICE, VpnProtocol.WIREGUARD, device_name="phone")
    laptop = await services.configs.provision(ALICE, VpnProtocol.VLESS, device_name="laptop")
    overview = await services.configs.devices(ALICE)
    assert (overview.subscription_id, overview.device_limit) == (sub.id, 3)
    assert [
        (d.config_id, d.protocol, d.device_name, d.server_name, d.country_code, d.is_active)
        for d in overview.devices
    ] == [
        (phone.id, VpnProtocol.WIREGUARD, "phone", "nl-1", "NL", True),
        (laptop.id, VpnProtocol.VLESS, "laptop", "de-1", "DE", True),
    ]
    assert all(d.created_at.tzinfo is not None for d in overview.devices)

    # Another user's device is "not found", and stays as it was.
    before = phone.client_id
    for call in (services.configs.reissue_for, services.configs.delete_for):
        with pytest.raises(ConfigNotFound):
            await call(BOB, phone.id)
        with pytest.raises(ConfigNotFound):
            await call(999, phone.id)  # nobody
        with pytest.raises(ConfigNotFound):
            await call(ALICE, laptop.id + 1000)
    assert [d.config_id for d in (await services.configs.devices(ALICE)).devices] == [
        phone.id,
        laptop.id,
    ]
    reissued = await services.configs.reissue_for(ALICE, phone.id)
    assert reissued.id == phone.id and reissued.client_id != before
    await services.configs.delete_for(ALICE, laptop.id)
    assert [d.config_id for d in (await services.configs.devices(ALICE)).devices] == [phone.id]

    # Without an active subscription the list is empty (the devices are not shown).
    clock.advance(days=31)
    assert (await services.configs.devices(ALICE)).devices == []
    with pytest.raises(UserNotFound):
        await services.configs.devices(999)


# --- support tickets ------------------------------------------------------------------------


async def test_support_tickets(
    services: Services, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    alice_id = await _register(services, ALICE)
    await _register(services, BOB)
    text = "  VPN does not connect\nSince yesterday the phone says handshake failed.  "
    ticket = await services.support.open_ticket(ALICE, text)
    assert ticket.subject == "VPN does not connect"
    assert ticket.description == text.strip()
    assert (ticket.status, ticket.priority) == (TicketStatus.OPEN, TicketPriority.MEDIUM)
    assert ticket.last_message_at == clock.now
    assert ticket.user_id == alice_id
    async with uow_factory() as uow:
        [message] = (await uow.session.execute(sa.select(SupportMessage))).scalars().all()
    assert (message.ticket_id, message.message, message.is_from_staff) == (
        ticket.id,
        text.strip(),
        False,
    )
    assert message.sender_id == alice_id

    titled = await services.support.open_ticket(ALICE, "x" * 4000, subject="  Billing  ")
    assert titled.subject == "Billing"
    long_line = await services.support.open_ticket(ALICE, "y" * 300)
    assert long_line.subject == "y" * 100

    for bad in ("", "   \n ", "z" * 4001):
        with pytest.raises(InvalidInput):
            await services.support.open_ticket(ALICE, bad)
    with pytest.raises(UserNotFound):
        await services.support.open_ticket(999, "hello")

    listed = await services.support.list_for_user(ALICE)
    assert [t.id for t in listed] == [long_line.id, titled.id, ticket.id]
    assert [t.id for t in await services.support.list_for_user(ALICE, limit=1)] == [long_line.id]
    assert await services.support.list_for_user(BOB) == []
    assert (await services.support.get_for(ALICE, ticket.id)).subject == ticket.subject
    for foreign in (ticket.id, ticket.id + 1000):
        with pytest.raises(TicketNotFound) as raised:
            await services.support.get_for(BOB, foreign)
        assert raised.value.code == "ticket_not_found"


async def test_at_most_five_open_tickets(
    services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    await _register(services, ALICE)
    tickets = [await services.support.open_ticket(ALICE, f"problem {i}") for i in range(5)]
    with pytest.raises(LimitReached):
        await services.support.open_ticket(ALICE, "one more")
    assert len(await services.support.list_for_user(ALICE)) == 5
    async with uow_factory() as uow:
        closed = await uow.support.get(tickets[0].id)
        assert closed is not None
        await uow.session.execute(
            sa.text("UPDATE support_tickets SET status = 'closed' WHERE id = :id"),
            {"id": closed.id},
        )
        await uow.commit()
    await services.support.open_ticket(ALICE, "now there is room")
    assert len(await services.support.list_for_user(ALICE)) == 6


async def test_simultaneous_tickets_respect_the_limit(
    pg_only: None, services: Services, uow_factory: UnitOfWorkFactory
) -> None:
    await _register(services, ALICE)
    results = await asyncio.gather(
        *(services.support.open_ticket(ALICE, f"problem {i}") for i in range(8)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 5
    assert all(isinstance(r, LimitReached) for r in results if isinstance(r, BaseException))
    assert len(await services.support.list_for_user(ALICE)) == 5
