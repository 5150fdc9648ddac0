"""Access on nodes: `grant`, placing WireGuard configs, addresses, secrets, the desired
revision every change bumps, and the desired state the hub sends (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.crypto import SecretBox
from controller.db.models import Server, Subscription, VpnConfig
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import NodeStatus, SubscriptionStatus, SuspendReason, VpnProtocol
from controller.domain.errors import (
    ConfigNotFound,
    InvalidInput,
    LimitReached,
    NoActiveSubscription,
    NoServerAvailable,
    PlanNotFound,
    UserBanned,
    UserNotFound,
)
from controller.nodes.store import HubStore
from controller.services import Services, build_services
from controller.services.nodes import NodeDraft
from controller.services.users import TelegramProfile
from node_agent.tls import create_key_and_csr
from proto.nodeapi.v1 import node_agent_pb2 as pb
from proto.nodeapi.v1.enrollment import EnrollmentToken
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN, GIB, make_plan

SERVER_WG_KEY = base64.b64encode(b"s" * 32).decode()


def agent_info(
    subnet: str = "10.8.0.1/24",
    *,
    backend: str = "wg",
    health: pb.BackendHealth.ValueType = pb.BACKEND_HEALTH_OK,
    wireguard: bool = True,
) -> pb.AgentInfo:
    backends = []
    if wireguard:
        backends.append(
            pb.BackendInfo(
                name=backend,
                kind=pb.BACKEND_KIND_WIREGUARD,
                status=pb.BackendStatus(
                    health=health, reason="" if health == pb.BACKEND_HEALTH_OK else "sick"
                ),
                wireguard=pb.WireGuardParams(
                    public_key=SERVER_WG_KEY,
                    listen_port=51820,
                    addresses=[subnet],
                    interface="wg0",
                ),
            )
        )
    return pb.AgentInfo(agent_version="test", boot_id="boot-1", backends=backends)


@dataclass
class World:
    """Services, the hub's store and the database of one test."""

    svc: Services
    store: HubStore
    uow: UnitOfWorkFactory
    clock: FakeClock
    tmp_path: Path

    async def node(
        self,
        name: str,
        *,
        subnet: str = "10.8.0.1/24",
        max_users: int = 100,
        protocols: tuple[VpnProtocol, ...] = (VpnProtocol.WIREGUARD,),
        enroll: bool = True,
        info: pb.AgentInfo | None = None,
        report: bool = True,
    ) -> int:
        """A node as the hub leaves it once its agent answered: enrolled, WireGuard
        parameters recorded (unless told otherwise)."""
        server, token_text = await self.svc.nodes.add(
            ADMIN,
            NodeDraft(
                name=name,
                address=f"{name}.example.net",
                protocols=protocols,
                max_users=max_users,
            ),
        )
        if enroll:
            token = EnrollmentToken.decode(token_text)
            state_dir = self.tmp_path / f"agent-{name}"
            state_dir.mkdir()
            await self.svc.nodes.enroll(token.secret, create_key_and_csr(state_dir, token.node_id))
        if report:
            await self.store.record_info(server.id, info or agent_info(subnet))
        return server.id

    async def set_node(self, server_id: int, **values: Any) -> None:
        async with self.uow() as uow:
            await uow.nodes.update_fields(server_id, **values)
            await uow.commit()

    async def server(self, server_id: int) -> Server:
        async with self.uow() as uow:
            found = await uow.nodes.get(server_id)
            assert found is not None
            return found

    async def revisions(self) -> dict[int, int]:
        async with self.uow() as uow:
            return {s.id: s.desired_revision for s in await uow.nodes.list_all()}

    async def bumped_by(self, action: Callable[[], Awaitable[object]]) -> set[int]:
        """The nodes whose desired revision ``action`` raised (each by exactly one)."""
        before = await self.revisions()
        await action()
        after = await self.revisions()
        changed = {sid for sid in after if after[sid] != before.get(sid)}
        for sid in changed:
            assert after[sid] == before[sid] + 1, (sid, before[sid], after[sid])
        return changed

    async def grant(self, telegram_id: int, days: int = 30, devices: int = 1) -> Subscription:
        return await self.svc.subscriptions.grant(ADMIN, telegram_id, days=days, devices=devices)

    async def config(self, config_id: int) -> VpnConfig:
        async with self.uow() as uow:
            found = await uow.configs.get(config_id)
            assert found is not None
            return found

    async def config_count(self) -> int:
        async with self.uow() as uow:
            return sum((await uow.configs.counts_by_server()).values())

    async def allocations(self) -> list[tuple[int, int, str]]:
        async with self.uow() as uow:
            rows = await uow.session.execute(
                sa.text("SELECT server_id, vpn_config_id, address FROM address_allocations")
            )
            return sorted((r[0], r[1], r[2]) for r in rows.all())

    async def peers(self, server_id: int) -> dict[str, pb.Client]:
        desired = await self.store.desired(server_id)
        assert desired is not None and desired.state is not None
        assert list(desired.state) == ["wg"]
        return desired.state["wg"]


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(os.urandom(32))


@pytest.fixture
def world(
    uow_factory: UnitOfWorkFactory, clock: FakeClock, box: SecretBox, tmp_path: Path
) -> World:
    return World(
        build_services(uow_factory, clock, secrets=box),
        HubStore(uow_factory, box, clock),
        uow_factory,
        clock,
        tmp_path,
    )


def _conf(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _public_of(private_b64: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


async def _audit(world: World) -> list[tuple[str, dict[str, Any] | None]]:
    async with world.uow() as uow:
        return [(e.action, e.details) for e in reversed(await uow.audit.list())]


# --- grant -------------------------------------------------------------------------------


async def test_grant_creates_an_unknown_user_and_audits(world: World) -> None:
    with pytest.raises(UserNotFound):
        await world.svc.users.get(9001)

    subscription = await world.svc.subscriptions.grant(ADMIN, 9001, days=30, devices=3)

    user = await world.svc.users.get(9001)
    assert subscription.user_id == user.id
    assert subscription.status is SubscriptionStatus.ACTIVE
    assert subscription.started_at == world.clock.now
    assert subscription.expires_at == world.clock.now + timedelta(days=30)
    assert subscription.device_limit == 3
    assert subscription.plan_id is None
    assert subscription.traffic_limit_bytes is None
    assert await _audit(world) == [
        ("subscription.grant", {"telegram_id": 9001, "plan_id": None, "days": 30})
    ]
    # The default device limit is one.
    assert (await world.grant(9002)).device_limit == 1


async def test_grant_days_extends_the_current_subscription(world: World) -> None:
    first = await world.grant(42, days=30)
    assert first.expires_at is not None
    world.clock.advance(days=10)

    again = await world.grant(42, days=5)

    assert again.id == first.id
    assert again.expires_at == first.expires_at + timedelta(days=5)
    assert again.device_limit == 1
    assert len(await world.svc.subscriptions.list_for_user(first.user_id)) == 1

    # Once it expired (and the sweep ran), a grant counts from now and reactivates it.
    world.clock.advance(days=40)
    assert await world.svc.subscriptions.expire_due() == [first.id]
    revived = await world.grant(42, days=7, devices=2)
    assert revived.id == first.id
    assert revived.status is SubscriptionStatus.ACTIVE
    assert revived.expires_at == world.clock.now + timedelta(days=7)
    assert revived.device_limit == 2
    actions = [a for a, _ in await _audit(world)]
    assert actions == ["subscription.grant"] * 3


async def test_grant_plan_renews_on_the_plans_terms(world: World) -> None:
    plan_id = await make_plan(world.svc, days=90, traffic_gb=50, devices=3)
    first = await world.grant(42, days=10)
    await world.svc.subscriptions.add_traffic(first.id, 5 * GIB)
    assert first.expires_at is not None

    renewed = await world.svc.subscriptions.grant(ADMIN, 42, plan_id=plan_id)

    assert renewed.id == first.id
    assert renewed.plan_id == plan_id
    assert renewed.expires_at == first.expires_at + timedelta(days=90)
    assert renewed.device_limit == 3
    assert renewed.traffic_limit_bytes == 50 * GIB
    assert renewed.traffic_used_bytes == 0  # a fresh traffic period
    assert ("subscription.grant", {"telegram_id": 42, "plan_id": plan_id, "days": None}) in (
        await _audit(world)
    )

    # Someone without a subscription starts one from the plan (devices may be overridden).
    fresh = await world.svc.subscriptions.grant(ADMIN, 77, plan_id=plan_id, devices=5)
    assert fresh.plan_id == plan_id and fresh.id != first.id
    assert fresh.expires_at == world.clock.now + timedelta(days=90)
    assert (fresh.device_limit, fresh.traffic_limit_bytes) == (5, 50 * GIB)

    with pytest.raises(PlanNotFound):
        await world.svc.subscriptions.grant(ADMIN, 78, plan_id=999)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"plan_id": 1, "days": 5},
        {"days": 0},
        {"days": 5, "devices": 0},
    ],
)
async def test_grant_refuses_bad_terms_and_creates_nothing(
    world: World, kwargs: dict[str, Any]
) -> None:
    await make_plan(world.svc)
    with pytest.raises(InvalidInput):
        await world.svc.subscriptions.grant(ADMIN, 4242, **kwargs)
    with pytest.raises(UserNotFound):
        await world.svc.users.get(4242)
    assert [a for a, _ in await _audit(world)] == ["plan.create"]


async def test_grant_refuses_a_banned_user(world: World) -> None:
    plan_id = await make_plan(world.svc)
    await world.svc.users.register(TelegramProfile(telegram_id=13))
    await world.svc.users.ban(ADMIN, 13)

    with pytest.raises(UserBanned):
        await world.grant(13, days=30)
    with pytest.raises(UserBanned):
        await world.svc.subscriptions.grant(ADMIN, 13, plan_id=plan_id)
    user = await world.svc.users.get(13)
    assert list(await world.svc.subscriptions.list_for_user(user.id)) == []
    assert "subscription.grant" not in [a for a, _ in await _audit(world)]


async def test_grant_does_not_revive_a_banned_users_subscription(world: World) -> None:
    subscription = await world.grant(14, days=10)
    await world.svc.users.ban(ADMIN, 14)
    # A ban-suspended subscription is not "renewable": a grant starts nothing active.
    with pytest.raises(UserBanned):
        await world.grant(14, days=5)
    held = await world.svc.subscriptions.get(subscription.id)
    assert held.status is SubscriptionStatus.SUSPENDED
    assert held.suspend_reason is SuspendReason.BANNED


# --- provisioning: refusals -------------------------------------------------------------


async def test_export_needs_an_active_subscription(world: World) -> None:
    await world.node("nl-1")
    with pytest.raises(UserNotFound):
        await world.svc.configs.export(1)

    await world.svc.users.register(TelegramProfile(telegram_id=1))
    with pytest.raises(NoActiveSubscription):
        await world.svc.configs.export(1)
    with pytest.raises(NoActiveSubscription):
        await world.svc.configs.provision(1)

    # Expired by the clock, before the sweep marked it.
    await world.grant(1, days=1)
    world.clock.advance(days=1)
    with pytest.raises(NoActiveSubscription):
        await world.svc.configs.provision(1)

    subscription = await world.grant(2, days=30)
    await world.svc.subscriptions.suspend(ADMIN, subscription.id)
    with pytest.raises(NoActiveSubscription):
        await world.svc.configs.export(2)

    await world.grant(3, days=30)
    await world.svc.users.ban(ADMIN, 3)
    with pytest.raises(UserBanned):
        await world.svc.configs.export(3)

    assert await world.config_count() == 0
    assert await world.allocations() == []


NO_NODE_SCENARIOS = [
    "no node",
    "not enrolled",
    "not reported",
    "reported no wireguard",
    "wireguard not among its protocols",
    "down",
    "maintenance",
    "disabled",
    "full",
]


@pytest.mark.parametrize("scenario", NO_NODE_SCENARIOS)
async def test_no_server_available_without_a_serving_node(world: World, scenario: str) -> None:
    await world.grant(1, days=30)
    if scenario == "not enrolled":
        await world.node("nl-1", enroll=False, report=False)
    elif scenario == "not reported":
        await world.node("nl-1", report=False)
    elif scenario == "reported no wireguard":
        await world.node("nl-1", info=agent_info(wireguard=False))
    elif scenario == "wireguard not among its protocols":
        await world.node("nl-1", protocols=(VpnProtocol.VLESS,))
    elif scenario == "down":
        await world.store.record_down(await world.node("nl-1"), "unreachable")
    elif scenario == "maintenance":
        await world.set_node(await world.node("nl-1"), is_maintenance=True)
    elif scenario == "disabled":
        await world.set_node(await world.node("nl-1"), is_active=False)
    elif scenario == "full":
        await world.node("nl-1", max_users=1)
        await world.grant(2, days=30)
        await world.svc.configs.provision(2)
    configs, allocations = await world.config_count(), await world.allocations()
    revisions = await world.revisions()

    with pytest.raises(NoServerAvailable):
        await world.svc.configs.export(1)
    with pytest.raises(NoServerAvailable):
        await world.svc.configs.provision(1, VpnProtocol.WIREGUARD)

    assert await world.config_count() == configs
    assert await world.allocations() == allocations
    assert await world.revisions() == revisions


async def test_a_supported_protocol_the_agent_does_not_report_is_not_placed(
    world: World,
) -> None:
    """The admin allows VLESS, but the agent runs no Reality backend: no VLESS there."""
    await world.node("nl-1", protocols=(VpnProtocol.WIREGUARD, VpnProtocol.VLESS))
    await world.grant(1)
    with pytest.raises(NoServerAvailable, match="serves vless"):
        await world.svc.configs.provision(1, VpnProtocol.VLESS)
    assert await world.config_count() == 0
    config = await world.svc.configs.provision(1)
    assert config.protocol is VpnProtocol.WIREGUARD


# --- provisioning: placement, limits, addresses ---------------------------------------------


async def test_placement_prefers_healthy_then_least_loaded(world: World) -> None:
    small = await world.node("small", max_users=10)
    big = await world.node("big", max_users=100)
    for telegram_id in range(1, 8):
        await world.grant(telegram_id)

    placed = [(await world.svc.configs.provision(t)).server_id for t in (1, 2, 3)]
    # Equal load: the lower id; then by load relative to capacity.
    assert placed == [small, big, big]

    # Degraded loses to online even when less loaded...
    await world.store.record_info(big, agent_info(health=pb.BACKEND_HEALTH_DEGRADED))
    assert (await world.server(big)).status is NodeStatus.DEGRADED
    assert (await world.svc.configs.provision(4)).server_id == small
    # ...but still serves when it is the only healthy one.
    await world.store.record_down(small, "gone")
    assert (await world.svc.configs.provision(5)).server_id == big
    # The subscription remembers where it was first placed.
    subscription = await world.svc.subscriptions.get(
        (await world.svc.configs.list_for_user(5))[0].subscription_id
    )
    assert subscription.server_id == big
    assert subscription.active_protocol is VpnProtocol.WIREGUARD


async def test_device_limit_and_export_reuse(world: World) -> None:
    await world.node("nl-1")
    await world.grant(1, devices=2)

    exported = await world.svc.configs.export(1)
    assert (await world.svc.configs.export(1)).config_id == exported.config_id
    second = await world.svc.configs.provision(1, device_name=" laptop ")
    assert second.device_name == "laptop"
    revisions = await world.revisions()

    with pytest.raises(LimitReached, match="2 device"):
        await world.svc.configs.provision(1)
    assert await world.config_count() == 2
    assert await world.revisions() == revisions

    with pytest.raises(InvalidInput):
        await world.svc.configs.provision(1, device_name="   ")
    # Freeing a device makes room again.
    await world.svc.configs.delete(second.id)
    await world.svc.configs.provision(1)
    assert len(await world.svc.configs.list_for_user(1)) == 2


async def test_addresses_lowest_first_unique_skipping_the_server(world: World) -> None:
    # 10.9.0.0/29: hosts .1-.6; the server is .3.
    node = await world.node("nl-1", subnet="10.9.0.3/29")
    for telegram_id in range(1, 8):
        await world.grant(telegram_id)
    configs = [await world.svc.configs.provision(t) for t in range(1, 6)]
    addresses = [c.config_data["address"] for c in configs]
    assert addresses == ["10.9.0.1", "10.9.0.2", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    assert await world.allocations() == sorted(
        (node, c.id, c.config_data["address"]) for c in configs
    )

    # A full subnet takes the node out of placement (not chosen, then found full).
    with pytest.raises(NoServerAvailable, match="free capacity"):
        await world.svc.configs.provision(6)
    assert await world.config_count() == 5  # the refused attempt left no config behind

    # A deleted config's address is the next one handed out.
    await world.svc.configs.delete(configs[1].id)
    assert all(c[1] != configs[1].id for c in await world.allocations())
    reused = await world.svc.configs.provision(6)
    assert reused.config_data["address"] == "10.9.0.2"
    rendered = await world.svc.configs.render(reused.id)
    assert _conf(rendered.text)["Address"] == "10.9.0.2/32"


async def test_each_node_has_its_own_address_space(world: World) -> None:
    first = await world.node("a", subnet="10.1.0.1/24")
    second = await world.node("b", subnet="10.2.0.1/24")
    for telegram_id in (1, 2, 3, 4):
        await world.grant(telegram_id)
    placed = [await world.svc.configs.provision(t) for t in (1, 2, 3, 4)]
    assert [(c.server_id, c.config_data["address"]) for c in placed] == [
        (first, "10.1.0.2"),
        (second, "10.2.0.2"),
        (first, "10.1.0.3"),
        (second, "10.2.0.3"),
    ]


# --- secrets, rendering, reissue, delete ---------------------------------------------------


async def test_secrets_are_sealed_and_the_conf_carries_the_private_key(
    world: World, engine: AsyncEngine
) -> None:
    node = await world.node("nl-1")
    await world.grant(1)

    rendered = await world.svc.configs.export(1)

    config = await world.config(rendered.config_id)
    values = _conf(rendered.text)
    private = values["PrivateKey"]
    assert _public_of(private) == config.client_id
    assert config.config_data == {"public_key": config.client_id, "address": "10.8.0.2"}
    assert values["Address"] == "10.8.0.2/32"
    assert values["PublicKey"] == SERVER_WG_KEY
    assert values["Endpoint"] == "nl-1.example.net:51820"
    assert values["DNS"] == "1.1.1.1, 1.0.0.1"
    assert values["AllowedIPs"] == "0.0.0.0/0, ::/0"
    assert values["PersistentKeepalive"] == "25"
    assert rendered.filename == f"nl-1-{config.id}.conf"
    assert (rendered.server_name, rendered.protocol) == ("nl-1", VpnProtocol.WIREGUARD)

    async with engine.connect() as connection:
        stored = (
            await connection.execute(
                sa.text("SELECT secret_encrypted, config_data FROM vpn_configs WHERE id = :id"),
                {"id": config.id},
            )
        ).one()
    blob = bytes(stored[0])
    psk = values["PresharedKey"]
    for secret in (private, psk):
        assert secret.encode() not in blob
        assert base64.b64decode(secret) not in blob
        assert secret not in str(stored[1])
    # The node gets the same PSK, and only the public key.
    peer = (await world.peers(node))[config.client_id]
    assert peer.wireguard.preshared_key == psk
    assert peer.wireguard.public_key == config.client_id
    assert list(peer.wireguard.allowed_ips) == ["10.8.0.2/32"]


async def test_reissue_changes_the_keys_and_keeps_the_address(world: World) -> None:
    node = await world.node("nl-1")
    await world.grant(1)
    await world.grant(2)
    before = await world.svc.configs.export(1)
    old = await world.config(before.config_id)
    other = await world.svc.users.get(2)

    with pytest.raises(ConfigNotFound):
        await world.svc.configs.reissue(old.id, owner_user_id=other.id)
    assert (await world.config(old.id)).client_id == old.client_id

    owner = await world.svc.users.get(1)
    bumped = await world.bumped_by(
        lambda: world.svc.configs.reissue(old.id, owner_user_id=owner.id)
    )
    assert bumped == {node}
    new = await world.config(old.id)
    after = await world.svc.configs.render(old.id)
    old_values, new_values = _conf(before.text), _conf(after.text)
    assert new.client_id != old.client_id
    assert _public_of(new_values["PrivateKey"]) == new.client_id
    assert new_values["PresharedKey"] != old_values["PresharedKey"]
    assert new_values["Address"] == old_values["Address"]
    assert set(await world.peers(node)) == {new.client_id}


async def test_delete_checks_the_owner(world: World) -> None:
    await world.node("nl-1")
    await world.grant(1)
    await world.grant(2)
    config = await world.svc.configs.provision(1)
    other = await world.svc.users.get(2)
    with pytest.raises(ConfigNotFound):
        await world.svc.configs.delete(config.id, owner_user_id=other.id)
    assert await world.config_count() == 1
    await world.svc.configs.delete(config.id, owner_user_id=(await world.svc.users.get(1)).id)
    assert await world.config_count() == 0
    assert await world.allocations() == []
    with pytest.raises(ConfigNotFound):
        await world.svc.configs.delete(config.id)
    with pytest.raises(ConfigNotFound):
        await world.svc.configs.render(config.id)


# --- desired revisions ------------------------------------------------------------------


async def test_every_change_bumps_exactly_the_nodes_carrying_the_configs(world: World) -> None:
    a = await world.node("a")
    b = await world.node("b")
    c = await world.node("c")
    x = await world.grant(1, days=10, devices=2)  # configs on a and b
    y = await world.grant(2, days=120)  # a config on c
    z = await world.grant(3, days=120)  # no configs
    plan_id = await make_plan(world.svc, days=30, traffic_gb=1, devices=2)

    assert await world.bumped_by(lambda: world.svc.configs.provision(1)) == {a}
    assert await world.bumped_by(lambda: world.svc.configs.provision(1)) == {b}
    assert await world.bumped_by(lambda: world.svc.configs.provision(2)) == {c}
    first = (await world.svc.configs.list_for_user(1))[0]

    x_changes: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("extend", lambda: world.svc.subscriptions.extend(x.id, 5)),
        ("grant", lambda: world.grant(1, days=2, devices=2)),
        ("suspend", lambda: world.svc.subscriptions.suspend(ADMIN, x.id)),
        ("resume", lambda: world.svc.subscriptions.resume(ADMIN, x.id)),
        ("ban", lambda: world.svc.users.ban(ADMIN, 1)),
        ("unban", lambda: world.svc.users.unban(ADMIN, 1)),
        ("renew", lambda: world.svc.subscriptions.renew_from_plan(x.id, plan_id)),
        ("traffic limit", lambda: world.svc.subscriptions.add_traffic(x.id, GIB)),
        ("renew lifts it", lambda: world.svc.subscriptions.renew_from_plan(x.id, plan_id)),
    ]
    for what, change in x_changes:
        assert await world.bumped_by(change) == {a, b}, what
    x_now = await world.svc.subscriptions.get(x.id)
    assert x_now.status is SubscriptionStatus.ACTIVE
    # Traffic below the limit changes no access: no bump.
    assert await world.bumped_by(lambda: world.svc.subscriptions.add_traffic(x.id, 1)) == set()
    # A config's own change bumps only its node.
    assert await world.bumped_by(lambda: world.svc.configs.reissue(first.id)) == {a}

    assert await world.bumped_by(lambda: world.svc.subscriptions.suspend(ADMIN, y.id)) == {c}
    assert await world.bumped_by(lambda: world.svc.subscriptions.resume(ADMIN, y.id)) == {c}

    z_changes: list[Callable[[], Awaitable[object]]] = [
        lambda: world.svc.subscriptions.extend(z.id, 5),
        lambda: world.grant(3, days=1),
        lambda: world.svc.subscriptions.suspend(ADMIN, z.id),
        lambda: world.svc.subscriptions.resume(ADMIN, z.id),
        lambda: world.svc.users.ban(ADMIN, 3),
        lambda: world.svc.users.unban(ADMIN, 3),
    ]
    for change in z_changes:
        assert await world.bumped_by(change) == set()

    # The sweep: x ends first (10 + 5 + 2 + 30 + 30 days); y and z still have time.
    assert x_now.expires_at == world.clock.now + timedelta(days=77)
    world.clock.advance(days=78)
    expired: list[int] = []

    async def sweep() -> None:
        expired.extend(await world.svc.subscriptions.expire_due())

    assert await world.bumped_by(sweep) == {a, b}
    assert expired == [x.id]
    assert await world.bumped_by(world.svc.subscriptions.expire_due) == set()

    # Deleting bumps only the node the config was on.
    assert await world.bumped_by(lambda: world.svc.configs.delete(first.id)) == {first.server_id}


# --- simultaneous provisioning -------------------------------------------------------------


async def test_simultaneous_provisioning_allocates_distinct_addresses(world: World) -> None:
    """PostgreSQL is the bar (the transactions really interleave); SQLite queues them."""
    node = await world.node("nl-1", subnet="10.20.0.1/27")
    users = range(100, 120)
    for telegram_id in users:
        await world.grant(telegram_id)

    configs = await asyncio.gather(*(world.svc.configs.provision(t) for t in users))

    addresses = [c.config_data["address"] for c in configs]
    assert len(set(addresses)) == 20
    network = ipaddress.ip_network("10.20.0.0/27")
    assert all(ipaddress.ip_address(a) in network for a in addresses)
    assert "10.20.0.1" not in addresses
    # Lowest first even under contention: exactly .2-.21.
    assert sorted(addresses, key=ipaddress.ip_address) == [f"10.20.0.{i}" for i in range(2, 22)]
    assert len(await world.allocations()) == 20
    assert (await world.server(node)).desired_revision == 20  # one bump per config
    assert len(await world.peers(node)) == 20


async def test_simultaneous_provisioning_into_a_nearly_full_subnet(world: World) -> None:
    await world.node("nl-1", subnet="10.30.0.1/28")  # 13 client addresses
    users = range(200, 216)
    for telegram_id in users:
        await world.grant(telegram_id)

    results = await asyncio.gather(
        *(world.svc.configs.provision(t) for t in users), return_exceptions=True
    )

    placed = [r for r in results if isinstance(r, VpnConfig)]
    refused = [r for r in results if not isinstance(r, VpnConfig)]
    assert len(placed) == 13, results
    assert all(isinstance(r, NoServerAvailable) for r in refused), refused
    assert len({c.config_data["address"] for c in placed}) == 13
    assert await world.config_count() == 13
    assert len(await world.allocations()) == 13


# --- the desired state ---------------------------------------------------------------------


async def test_the_desired_state_holds_exactly_the_entitled_peers(world: World) -> None:
    node = await world.node("nl-1")
    elsewhere = await world.node("de-1", max_users=1)
    unreported = await world.node("fi-1", report=False)
    await world.grant(1, days=30, devices=2)  # active: both devices
    await world.grant(2, days=1)  # expired by the clock (no sweep)
    suspended = await world.grant(3, days=30)
    await world.grant(4, days=30)  # banned
    await world.grant(5, days=30)  # its config is switched off
    await world.grant(6, days=30)  # active, on the other node
    # de-1 is full after one config; user 6 goes first so it lands there.
    await world.set_node(node, is_maintenance=True)
    on_other = await world.svc.configs.provision(6)
    await world.set_node(node, is_maintenance=False)
    assert on_other.server_id == elsewhere
    configs = {t: [await world.svc.configs.provision(t)] for t in (1, 2, 3, 4, 5)}
    configs[1].append(await world.svc.configs.provision(1))
    assert all(c.server_id == node for cs in configs.values() for c in cs)

    world.clock.advance(days=2)
    await world.svc.subscriptions.suspend(ADMIN, suspended.id)
    await world.svc.users.ban(ADMIN, 4)
    async with world.uow() as uow:
        row = await uow.configs.get(configs[5][0].id, for_update=True)
        assert row is not None
        row.is_active = False
        await uow.commit()

    desired = await world.store.desired(node)
    assert desired is not None and desired.state is not None
    assert desired.revision == (await world.server(node)).desired_revision
    assert set(desired.state["wg"]) == {c.client_id for c in configs[1]}
    assert set(await world.peers(elsewhere)) == {on_other.client_id}
    nothing = await world.store.desired(unreported)
    assert nothing is not None and nothing.state is None
    assert await world.store.desired(999_999) is None

    # Back in: the ban lifted, the suspension lifted.
    await world.svc.users.unban(ADMIN, 4)
    await world.svc.subscriptions.resume(ADMIN, suspended.id)
    assert set(await world.peers(node)) == {c.client_id for t in (1, 3, 4) for c in configs[t]}
    # The sweep changes nothing the clock had not already decided.
    await world.svc.subscriptions.expire_due()
    assert set(await world.peers(node)) == {c.client_id for t in (1, 3, 4) for c in configs[t]}

    # A banned owner is off even if a subscription of theirs is still active (the ban is
    # checked on its own, not only through the suspension it causes).
    async with world.uow() as uow:
        owner = await uow.users.get_by_telegram_id(3, for_update=True)
        assert owner is not None
        owner.is_banned = True
        await uow.commit()
    assert (await world.svc.subscriptions.get(suspended.id)).status is SubscriptionStatus.ACTIVE
    assert set(await world.peers(node)) == {c.client_id for t in (1, 4) for c in configs[t]}


async def test_the_desired_state_uses_the_reported_backend_name(world: World) -> None:
    node = await world.node("nl-1", info=agent_info(backend="wg-main"))
    await world.grant(1)
    config = await world.svc.configs.provision(1)
    desired = await world.store.desired(node)
    assert desired is not None and desired.state is not None
    assert set(desired.state) == {"wg-main"}
    assert set(desired.state["wg-main"]) == {config.client_id}
