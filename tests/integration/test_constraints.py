"""Database constraints of the migrated schema, on SQLite and PostgreSQL.

These go below the services: they write ORM rows (or raw SQL) and check that the database
itself refuses what must never be stored, and that ON DELETE rules do what the models say.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from controller.db.base import Base
from controller.db.models import (
    AddressAllocation,
    AdminAuditLog,
    Payment,
    PromoCode,
    PromoRedemption,
    Referral,
    Server,
    ServerStats,
    Subscription,
    SubscriptionPlan,
    SupportMessage,
    SupportTicket,
    User,
    UserActivity,
    VpnConfig,
)
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import (
    PromoKind,
    SubscriptionStatus,
    UserRole,
    VpnProtocol,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
MSK = timezone(timedelta(hours=3))


async def _add(uow_factory: UnitOfWorkFactory, *rows: Base) -> None:
    """Insert rows in one committed transaction (their ids are readable afterwards)."""
    async with uow_factory() as uow:
        uow.session.add_all(rows)
        await uow.commit()


async def _refused(uow_factory: UnitOfWorkFactory, *rows: Base) -> IntegrityError:
    async with uow_factory() as uow:
        uow.session.add_all(rows)
        with pytest.raises(IntegrityError) as caught:
            await uow.session.flush()
    return caught.value


async def _delete(uow_factory: UnitOfWorkFactory, model: Any, row_id: int) -> None:
    async with uow_factory() as uow:
        await uow.session.execute(sa.delete(model).where(model.id == row_id))
        await uow.commit()


async def _delete_refused(uow_factory: UnitOfWorkFactory, model: Any, row_id: int) -> None:
    async with uow_factory() as uow:
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            await uow.session.execute(sa.delete(model).where(model.id == row_id))


async def _count(uow_factory: UnitOfWorkFactory, model: type[Base], **where: Any) -> int:
    stmt = sa.select(sa.func.count()).select_from(model)
    for column, value in where.items():
        stmt = stmt.where(getattr(model, column) == value)
    async with uow_factory() as uow:
        return int((await uow.session.execute(stmt)).scalar_one())


def _user(telegram_id: int, role: UserRole = UserRole.CLIENT) -> User:
    return User(telegram_id=telegram_id, role=role)


def _plan(**values: Any) -> SubscriptionPlan:
    return SubscriptionPlan(**{"name": "Month", "duration_days": 30, "price_minor": 100, **values})


def _server(name: str) -> Server:
    return Server(name=name, ip_address=f"{name}.example.net")


def _subscription(user: User, **values: Any) -> Subscription:
    return Subscription(
        user=user,
        status=SubscriptionStatus.ACTIVE,
        started_at=NOW,
        expires_at=NOW + timedelta(days=30),
        **values,
    )


def _config(subscription: Subscription, server: Server, client_id: str) -> VpnConfig:
    return VpnConfig(
        subscription=subscription,
        server=server,
        protocol=VpnProtocol.WIREGUARD,
        client_id=client_id,
    )


def _payment(
    user_id: int, external_id: str | None, provider: str = "yookassa", **values: Any
) -> Payment:
    return Payment(
        user_id=user_id,
        amount_minor=19900,
        currency="RUB",
        provider=provider,
        external_payment_id=external_id,
        **values,
    )


# --- unique constraints -------------------------------------------------------------------


async def test_telegram_id_and_referral_code_are_unique(uow_factory: UnitOfWorkFactory) -> None:
    first = _user(1)
    await _add(uow_factory, first)
    assert "telegram_id" in str((await _refused(uow_factory, _user(1))).orig)
    clash = User(telegram_id=2, referral_code=first.referral_code)
    assert "referral_code" in str((await _refused(uow_factory, clash)).orig)
    await _add(uow_factory, _user(2))
    assert await _count(uow_factory, User) == 2


async def test_payment_external_id_unique_per_provider_nulls_allowed(
    uow_factory: UnitOfWorkFactory,
) -> None:
    user = _user(1)
    await _add(uow_factory, user)
    await _add(uow_factory, _payment(user.id, "ext-1"))
    # The same provider notification stored twice is refused...
    refused = await _refused(uow_factory, _payment(user.id, "ext-1"))
    assert "external_payment_id" in str(refused.orig)
    # ...but payments that have no external id yet are fine, as is another provider.
    await _add(
        uow_factory,
        _payment(user.id, None),
        _payment(user.id, None),
        _payment(user.id, "ext-1", provider="stars"),
    )
    await _add(uow_factory, _payment(user.id, None))
    assert await _count(uow_factory, Payment) == 5
    assert await _count(uow_factory, Payment, provider="yookassa") == 4


async def test_address_unique_per_server(uow_factory: UnitOfWorkFactory) -> None:
    user = _user(1)
    sub = _subscription(user)
    server_a, server_b = _server("a"), _server("b")
    c1, c2, c3 = (_config(sub, server_a, f"key-{i}") for i in range(3))
    await _add(uow_factory, user, sub, server_a, server_b, c1, c2, c3)
    await _add(
        uow_factory,
        AddressAllocation(server_id=server_a.id, vpn_config_id=c1.id, address="10.8.0.2"),
    )
    # The same address on the same server twice is refused.
    refused = await _refused(
        uow_factory,
        AddressAllocation(server_id=server_a.id, vpn_config_id=c2.id, address="10.8.0.2"),
    )
    assert "address" in str(refused.orig) and "vpn_config_id" not in str(refused.orig)
    # One config gets one address.
    refused = await _refused(
        uow_factory,
        AddressAllocation(server_id=server_a.id, vpn_config_id=c1.id, address="10.8.0.3"),
    )
    assert "vpn_config_id" in str(refused.orig)
    # The same address on another server is fine.
    await _add(
        uow_factory,
        AddressAllocation(server_id=server_b.id, vpn_config_id=c2.id, address="10.8.0.2"),
        AddressAllocation(server_id=server_a.id, vpn_config_id=c3.id, address="10.8.0.3"),
    )
    assert await _count(uow_factory, AddressAllocation) == 3


async def test_vpn_client_id_unique_per_server_and_protocol(uow_factory: UnitOfWorkFactory) -> None:
    user = _user(1)
    sub = _subscription(user)
    server = _server("a")
    await _add(uow_factory, user, sub, server, _config(sub, server, "same"))
    await _refused(
        uow_factory,
        VpnConfig(
            subscription_id=sub.id,
            server_id=server.id,
            protocol=VpnProtocol.WIREGUARD,
            client_id="same",
        ),
    )
    await _add(
        uow_factory,
        VpnConfig(
            subscription_id=sub.id,
            server_id=server.id,
            protocol=VpnProtocol.VLESS,
            client_id="same",
        ),
    )


# --- CHECK constraints --------------------------------------------------------------------


async def test_check_constraints_refuse_impossible_values(
    uow_factory: UnitOfWorkFactory,
) -> None:
    user = _user(1)
    await _add(uow_factory, user)
    # constraint name -> rows that break it
    cases: dict[str, Callable[[], list[Base]]] = {
        "ck_subscription_plans_price_non_negative": lambda: [_plan(price_minor=-1)],
        "ck_subscription_plans_duration_positive": lambda: [_plan(duration_days=0)],
        "ck_subscription_plans_device_limit_positive": lambda: [_plan(device_limit=0)],
        "ck_subscription_plans_traffic_limit_positive": lambda: [_plan(traffic_limit_gb=0)],
        "ck_payments_amount_non_negative": lambda: [
            Payment(user_id=user.id, amount_minor=-1, currency="RUB", provider="p")
        ],
        "ck_subscriptions_traffic_used_non_negative": lambda: [
            Subscription(user_id=user.id, traffic_used_bytes=-1)
        ],
        "ck_subscriptions_device_limit_positive": lambda: [
            Subscription(user_id=user.id, device_limit=0)
        ],
        "ck_promo_codes_within_max_uses": lambda: [
            PromoCode(code="OVER", kind=PromoKind.DAYS, value=5, max_uses=1, uses_count=2)
        ],
        "ck_promo_codes_value_positive": lambda: [
            PromoCode(code="ZERO", kind=PromoKind.DAYS, value=0)
        ],
        "ck_servers_grpc_port_range": lambda: [Server(name="s", ip_address="h", grpc_port=70000)],
    }
    wrong: dict[str, str] = {}
    for constraint, make in cases.items():
        async with uow_factory() as uow:
            uow.session.add_all(make())
            try:
                await uow.session.flush()
            except IntegrityError as exc:
                if constraint not in str(exc.orig):
                    wrong[constraint] = str(exc.orig)
                continue
            wrong[constraint] = "accepted"
    assert wrong == {}
    for model in (SubscriptionPlan, Payment, Subscription, PromoCode, Server):
        assert await _count(uow_factory, model) == 0

    # The boundaries themselves are fine.
    await _add(
        uow_factory,
        _plan(price_minor=0),
        Payment(user_id=user.id, amount_minor=0, currency="RUB", provider="p"),
        PromoCode(code="FULL", kind=PromoKind.DAYS, value=1, max_uses=1, uses_count=1),
    )


async def test_referral_to_self_refused(uow_factory: UnitOfWorkFactory) -> None:
    user = _user(1)
    await _add(uow_factory, user)
    await _refused(uow_factory, Referral(referrer_id=user.id, referred_id=user.id))


async def test_a_referral_outlives_its_referrer(uow_factory: UnitOfWorkFactory) -> None:
    referrer, referred, other = _user(1), _user(2), _user(3)
    await _add(uow_factory, referrer, referred, other)
    await _add(uow_factory, Referral(referrer_id=referrer.id, referred_id=referred.id))
    await _delete(uow_factory, User, referrer.id)
    async with uow_factory() as uow:
        rows = (await uow.session.execute(sa.select(Referral))).scalars().all()
    assert [(r.referrer_id, r.referred_id) for r in rows] == [(None, referred.id)]
    # Still referred once: nobody can refer them (again) for a second reward.
    await _refused(uow_factory, Referral(referrer_id=other.id, referred_id=referred.id))


async def test_dangling_references_refused(uow_factory: UnitOfWorkFactory) -> None:
    await _refused(uow_factory, Subscription(user_id=12345))
    await _refused(uow_factory, SupportTicket(user_id=12345, subject="s", description="d"))
    assert await _count(uow_factory, Subscription) == 0


async def test_enum_check_refuses_unknown_value_from_raw_sql(
    uow_factory: UnitOfWorkFactory,
) -> None:
    user = _user(1)
    sub = _subscription(user)
    await _add(uow_factory, user, sub)
    async with uow_factory() as uow:
        with pytest.raises(IntegrityError):
            await uow.session.execute(
                sa.text("UPDATE subscriptions SET status = 'bogus' WHERE id = :id"),
                {"id": sub.id},
            )
    async with uow_factory() as uow:
        with pytest.raises(IntegrityError):
            await uow.session.execute(
                sa.text("UPDATE users SET role = 'superuser' WHERE id = :id"), {"id": user.id}
            )
    async with uow_factory() as uow:
        # A known value written the same way is accepted.
        await uow.session.execute(
            sa.text("UPDATE subscriptions SET status = 'expired' WHERE id = :id"), {"id": sub.id}
        )
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.subscriptions.get(sub.id)
        assert stored is not None and stored.status is SubscriptionStatus.EXPIRED
        stored_user = await uow.users.get(user.id)
        assert stored_user is not None and stored_user.role is UserRole.CLIENT


async def test_naive_datetime_is_refused(uow_factory: UnitOfWorkFactory) -> None:
    user = _user(1)
    await _add(uow_factory, user)
    naive = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 - naive on purpose
    async with uow_factory() as uow:
        uow.session.add(Subscription(user_id=user.id, expires_at=naive))
        with pytest.raises(StatementError, match="naive datetime") as caught:
            await uow.session.flush()
    assert isinstance(caught.value.orig, ValueError)
    async with uow_factory() as uow:
        with pytest.raises(StatementError, match="naive datetime"):
            await uow.session.execute(
                sa.select(Subscription).where(Subscription.expires_at < naive)
            )
    assert await _count(uow_factory, Subscription) == 0

    # An aware time in another zone is stored as the same instant and read back in UTC.
    instant = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    sub = Subscription(user_id=user.id, expires_at=instant.astimezone(MSK))
    await _add(uow_factory, sub)
    async with uow_factory() as uow:
        stored = await uow.subscriptions.get(sub.id)
        assert stored is not None
        assert stored.expires_at == instant
        assert stored.expires_at.utcoffset() == timedelta(0)
        assert stored.expires_at.hour == 12


# --- ON DELETE rules ----------------------------------------------------------------------


async def test_deleting_user_cascades_to_their_data(uow_factory: UnitOfWorkFactory) -> None:
    user = _user(1)
    keeper = _user(2)
    staff = _user(3, UserRole.SUPPORT)
    server = _server("a")
    plan = _plan()
    sub = _subscription(user, plan=plan)
    config = _config(sub, server, "key-1")
    ticket = SupportTicket(user=user, subject="help", description="it broke")
    promo = PromoCode(code="GIFT", kind=PromoKind.DAYS, value=3)
    others_sub = _subscription(keeper)
    others_config = _config(others_sub, server, "key-2")
    await _add(
        uow_factory,
        user,
        keeper,
        staff,
        server,
        plan,
        sub,
        config,
        ticket,
        promo,
        others_sub,
        others_config,
    )
    await _add(
        uow_factory,
        SupportMessage(ticket_id=ticket.id, sender_id=user.id, message="hello"),
        SupportMessage(ticket_id=ticket.id, sender_id=staff.id, message="hi", is_from_staff=True),
        AddressAllocation(server_id=server.id, vpn_config_id=config.id, address="10.0.0.2"),
        AddressAllocation(server_id=server.id, vpn_config_id=others_config.id, address="10.0.0.3"),
        UserActivity(user_id=user.id, action="registered"),
        PromoRedemption(promo_code_id=promo.id, user_id=user.id, subscription_id=sub.id),
    )

    await _delete(uow_factory, User, user.id)

    assert await _count(uow_factory, User) == 2
    assert await _count(uow_factory, Subscription, user_id=user.id) == 0
    assert await _count(uow_factory, VpnConfig, subscription_id=sub.id) == 0
    assert await _count(uow_factory, AddressAllocation, vpn_config_id=config.id) == 0
    assert await _count(uow_factory, SupportTicket) == 0
    assert await _count(uow_factory, SupportMessage) == 0
    assert await _count(uow_factory, UserActivity) == 0
    assert await _count(uow_factory, PromoRedemption) == 0
    # Shared and other people's rows stay.
    assert await _count(uow_factory, Subscription) == 1
    assert await _count(uow_factory, VpnConfig) == 1
    assert await _count(uow_factory, AddressAllocation) == 1
    assert await _count(uow_factory, PromoCode) == 1
    assert await _count(uow_factory, SubscriptionPlan) == 1
    assert await _count(uow_factory, Server) == 1


async def test_deleting_user_with_payments_is_restricted(uow_factory: UnitOfWorkFactory) -> None:
    user = _user(1)
    sub = _subscription(user)
    await _add(uow_factory, user, sub)
    await _add(uow_factory, _payment(user.id, "ext-1", subscription_id=sub.id))
    await _delete_refused(uow_factory, User, user.id)
    assert await _count(uow_factory, User) == 1
    assert await _count(uow_factory, Subscription) == 1
    assert await _count(uow_factory, Payment) == 1

    # Deleting the subscription keeps the payment and forgets the link.
    await _delete(uow_factory, Subscription, sub.id)
    async with uow_factory() as uow:
        payment = (await uow.session.execute(sa.select(Payment))).scalar_one()
        assert payment.subscription_id is None


async def test_plans_in_use_or_with_promo_codes_cannot_be_deleted(
    uow_factory: UnitOfWorkFactory,
) -> None:
    user = _user(1)
    used, unused = _plan(name="used"), _plan(name="unused")
    await _add(uow_factory, user, used, unused, _subscription(user, plan=used))
    await _add(
        uow_factory,
        PromoCode(code="FORUNUSED", kind=PromoKind.PERCENT, value=10, plan_id=unused.id),
        PromoCode(code="GENERAL", kind=PromoKind.PERCENT, value=10),
    )
    spare = _plan(name="spare")
    await _add(uow_factory, spare)
    await _delete_refused(uow_factory, SubscriptionPlan, used.id)
    await _delete_refused(uow_factory, SubscriptionPlan, unused.id)  # a promo code is for it
    await _delete(uow_factory, SubscriptionPlan, spare.id)
    assert await _count(uow_factory, SubscriptionPlan) == 2
    async with uow_factory() as uow:
        codes = (await uow.session.execute(sa.select(PromoCode.code))).scalars().all()
    assert sorted(codes) == ["FORUNUSED", "GENERAL"]


async def test_server_with_configs_cannot_be_deleted(uow_factory: UnitOfWorkFactory) -> None:
    user = _user(1)
    sub = _subscription(user)
    busy, spare = _server("busy"), _server("spare")
    config = _config(sub, busy, "key")
    await _add(uow_factory, user, sub, busy, spare, config)
    await _add(
        uow_factory,
        ServerStats(server_id=busy.id, cpu_usage=1.0, memory_usage=2.0, disk_usage=3.0),
        ServerStats(server_id=spare.id, cpu_usage=1.0, memory_usage=2.0, disk_usage=3.0),
        ServerStats(server_id=spare.id, cpu_usage=4.0, memory_usage=5.0, disk_usage=6.0),
        # An allocation recorded on the spare server for a config that lives elsewhere.
        AddressAllocation(server_id=spare.id, vpn_config_id=config.id, address="10.1.0.2"),
    )
    async with uow_factory() as uow:
        stored_user = await uow.users.get(user.id, for_update=True)
        stored_sub = await uow.subscriptions.get(sub.id, for_update=True)
        assert stored_user is not None and stored_sub is not None
        stored_user.preferred_server_id = spare.id
        stored_sub.server_id = spare.id
        await uow.commit()

    await _delete_refused(uow_factory, Server, busy.id)
    assert await _count(uow_factory, Server) == 2
    assert await _count(uow_factory, ServerStats, server_id=busy.id) == 1

    await _delete(uow_factory, Server, spare.id)
    assert await _count(uow_factory, Server) == 1
    assert await _count(uow_factory, ServerStats) == 1
    assert await _count(uow_factory, AddressAllocation) == 0
    assert await _count(uow_factory, VpnConfig) == 1
    async with uow_factory() as uow:
        stored_user = await uow.users.get(user.id)
        stored_sub = await uow.subscriptions.get(sub.id)
        assert stored_user is not None and stored_user.preferred_server_id is None
        assert stored_sub is not None and stored_sub.server_id is None


async def test_deleting_staff_keeps_tickets_and_messages(uow_factory: UnitOfWorkFactory) -> None:
    client = _user(1)
    staff = _user(2, UserRole.SUPPORT)
    await _add(uow_factory, client, staff)
    ticket = SupportTicket(
        user_id=client.id, assigned_admin_id=staff.id, subject="s", description="d"
    )
    await _add(uow_factory, ticket)
    await _add(
        uow_factory,
        SupportMessage(ticket_id=ticket.id, sender_id=client.id, message="question"),
        SupportMessage(
            ticket_id=ticket.id, sender_id=staff.id, message="answer", is_from_staff=True
        ),
        AdminAuditLog(actor_user_id=staff.id, actor="tg:2", action="ticket.assign"),
        PromoCode(code="BYSTAFF", kind=PromoKind.DAYS, value=1, created_by_id=staff.id),
    )

    await _delete(uow_factory, User, staff.id)

    async with uow_factory() as uow:
        stored_ticket = (await uow.session.execute(sa.select(SupportTicket))).scalar_one()
        assert stored_ticket.id == ticket.id
        assert stored_ticket.assigned_admin_id is None
        assert stored_ticket.user_id == client.id
        messages = (
            await uow.session.execute(
                sa.select(SupportMessage.message, SupportMessage.sender_id).order_by(
                    SupportMessage.id
                )
            )
        ).all()
        assert [tuple(m) for m in messages] == [("question", client.id), ("answer", None)]
        entry = (await uow.audit.list())[0]
        assert entry.actor_user_id is None and entry.actor == "tg:2"
        promo = await uow.promo.get_by_code("BYSTAFF")
        assert promo is not None and promo.created_by_id is None
