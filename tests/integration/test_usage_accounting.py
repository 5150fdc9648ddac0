"""Counting a node's usage ledger: HubStore.account_usage against a real database (SQLite and
PostgreSQL), without an agent. Entries carry cumulative totals; only growth over the stored
baseline is counted."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.crypto import SecretBox
from controller.db.models import UsageCounter, VpnConfig
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import SubscriptionStatus, SuspendReason
from controller.nodes.store import HubStore
from controller.services import build_services
from proto.nodeapi.v1 import node_agent_pb2 as pb
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN, GIB, make_plan
from tests.integration.test_provisioning import World

LEDGER = "ledger-1"


@pytest.fixture
def world(uow_factory: UnitOfWorkFactory, clock: FakeClock, tmp_path: Path) -> World:
    box = SecretBox(os.urandom(32))
    return World(
        build_services(uow_factory, clock, secrets=box),
        HubStore(uow_factory, box, clock),
        uow_factory,
        clock,
        tmp_path,
    )


_cursor = itertools.count(1)


def entry(client_id: str, rx: int, tx: int, *, backend: str = "wg") -> pb.UsageEntry:
    return pb.UsageEntry(
        cursor=next(_cursor), backend=backend, client_id=client_id, rx_bytes=rx, tx_bytes=tx
    )


async def _totals(world: World, config: VpnConfig) -> tuple[int, int]:
    """(the config's total, its subscription's used traffic)"""
    fresh = await world.config(config.id)
    subscription = await world.svc.subscriptions.get(config.subscription_id)
    return fresh.total_traffic_bytes, subscription.traffic_used_bytes


async def _baselines(world: World, server_id: int) -> dict[tuple[str, str], tuple[str, int, int]]:
    async with world.uow() as uow:
        rows = await uow.session.execute(
            sa.select(UsageCounter).where(UsageCounter.server_id == server_id)
        )
        return {
            (c.backend, c.client_id): (c.ledger_id, c.rx_total, c.tx_total)
            for c in rows.scalars().all()
        }


async def _placed(world: World, telegram_id: int, *, plan_id: int | None = None) -> VpnConfig:
    if plan_id is None:
        await world.grant(telegram_id)
    else:
        await world.svc.subscriptions.grant(ADMIN, telegram_id, plan_id=plan_id)
    return await world.svc.configs.provision(telegram_id)


async def test_growth_over_the_baseline_is_counted_once(world: World) -> None:
    node = await world.node("nl-1")
    config = await _placed(world, 1)
    client = config.client_id
    world.clock.advance(hours=1)

    assert await world.store.account_usage(node, LEDGER, [entry(client, 100, 50)]) == []
    assert await _totals(world, config) == (150, 150)
    assert (await world.config(config.id)).last_used == world.clock.now
    assert await _baselines(world, node) == {("wg", client): (LEDGER, 100, 50)}

    # The same page read again (its acknowledgement was lost): nothing more.
    page = [entry(client, 100, 50)]
    await world.store.account_usage(node, LEDGER, page)
    await world.store.account_usage(node, LEDGER, page)
    assert await _totals(world, config) == (150, 150)

    # A newer entry adds only the difference.
    await world.store.account_usage(node, LEDGER, [entry(client, 300, 80)])
    assert await _totals(world, config) == (380, 380)

    # Several entries of one client in a page: the newest total wins.
    await world.store.account_usage(
        node, LEDGER, [entry(client, 400, 100), entry(client, 500, 120)]
    )
    assert await _totals(world, config) == (620, 620)
    assert await _baselines(world, node) == {("wg", client): (LEDGER, 500, 120)}

    # Totals never go back on one ledger: a lower one adds nothing and moves no baseline.
    await world.store.account_usage(node, LEDGER, [entry(client, 10, 10)])
    assert await _totals(world, config) == (620, 620)
    await world.store.account_usage(node, LEDGER, [entry(client, 510, 120)])
    assert await _totals(world, config) == (630, 630)


async def test_rx_and_tx_both_count(world: World) -> None:
    node = await world.node("nl-1")
    config = await _placed(world, 1)
    client = config.client_id
    await world.store.account_usage(node, LEDGER, [entry(client, 0, 70)])
    assert await _totals(world, config) == (70, 70)
    await world.store.account_usage(node, LEDGER, [entry(client, 30, 70)])
    assert await _totals(world, config) == (100, 100)
    await world.store.account_usage(node, LEDGER, [entry(client, 30, 100)])
    assert await _totals(world, config) == (130, 130)


async def test_a_new_ledger_restarts_the_baseline(world: World) -> None:
    node = await world.node("nl-1")
    config = await _placed(world, 1)
    client = config.client_id
    await world.store.account_usage(node, LEDGER, [entry(client, 1000, 500)])
    assert await _totals(world, config) == (1500, 1500)

    # The node's ledger was recreated: its totals start from zero and count in full,
    # even though they are below the old baseline.
    await world.store.account_usage(node, "ledger-2", [entry(client, 10, 5)])
    assert await _totals(world, config) == (1515, 1515)
    assert await _baselines(world, node) == {("wg", client): ("ledger-2", 10, 5)}
    await world.store.account_usage(node, "ledger-2", [entry(client, 20, 5)])
    assert await _totals(world, config) == (1525, 1525)
    await world.store.account_usage(node, "ledger-2", [entry(client, 20, 5)])
    assert await _totals(world, config) == (1525, 1525)


async def test_unknown_clients_only_update_baselines(world: World) -> None:
    node = await world.node("nl-1")
    config = await _placed(world, 1)
    revisions = await world.revisions()
    page = [
        entry("not-a-config-of-ours", 500, 500),
        entry(config.client_id, 700, 700, backend="openvpn"),  # no such backend here
    ]

    assert await world.store.account_usage(node, LEDGER, page) == []

    assert await _totals(world, config) == (0, 0)
    assert await _baselines(world, node) == {
        ("wg", "not-a-config-of-ours"): (LEDGER, 500, 500),
        ("openvpn", config.client_id): (LEDGER, 700, 700),
    }
    assert await world.revisions() == revisions
    # The real client's first report counts in full: its baseline is its own.
    await world.store.account_usage(node, LEDGER, [entry(config.client_id, 40, 2)])
    assert await _totals(world, config) == (42, 42)


async def test_a_node_cannot_report_another_nodes_clients(world: World) -> None:
    here = await world.node("nl-1")
    config = await _placed(world, 1)
    there = await world.node("de-1")
    assert config.server_id == here

    await world.store.account_usage(there, LEDGER, [entry(config.client_id, 999, 999)])

    assert await _totals(world, config) == (0, 0)
    assert await _baselines(world, here) == {}


async def test_devices_of_one_subscription_add_up(world: World) -> None:
    node = await world.node("nl-1")
    await world.grant(1, devices=2)
    phone = await world.svc.configs.provision(1)
    laptop = await world.svc.configs.provision(1)
    other = await _placed(world, 2)

    await world.store.account_usage(
        node,
        LEDGER,
        [
            entry(phone.client_id, 10, 1),
            entry(laptop.client_id, 20, 2),
            entry(other.client_id, 5, 0),
        ],
    )

    assert (await world.config(phone.id)).total_traffic_bytes == 11
    assert (await world.config(laptop.id)).total_traffic_bytes == 22
    subscription = await world.svc.subscriptions.get(phone.subscription_id)
    assert subscription.traffic_used_bytes == 33
    assert await _totals(world, other) == (5, 5)


async def test_reaching_the_limit_suspends_and_takes_the_peers_off(world: World) -> None:
    here = await world.node("nl-1")
    there = await world.node("de-1")
    plan_id = await make_plan(world.svc, traffic_gb=1, devices=2)
    await world.svc.subscriptions.grant(ADMIN, 1, plan_id=plan_id)
    first = await world.svc.configs.provision(1)
    second = await world.svc.configs.provision(1)
    assert (first.server_id, second.server_id) == (here, there)
    bystander = await _placed(world, 2)  # unlimited; nodes tied, so nl-1
    assert bystander.server_id == here
    client = first.client_id

    # One byte short: nothing happens.
    revisions = await world.revisions()
    assert await world.store.account_usage(here, LEDGER, [entry(client, GIB - 2, 1)]) == []
    assert (await world.svc.subscriptions.get(first.subscription_id)).status is (
        SubscriptionStatus.ACTIVE
    )
    assert await world.revisions() == revisions

    # The last byte: suspended in the same transaction, both of its nodes bumped.
    world.clock.advance(minutes=5)
    suspended = await world.store.account_usage(here, LEDGER, [entry(client, GIB - 1, 1)])

    assert suspended == [first.subscription_id]
    subscription = await world.svc.subscriptions.get(first.subscription_id)
    assert subscription.status is SubscriptionStatus.SUSPENDED
    assert subscription.suspend_reason is SuspendReason.TRAFFIC_LIMIT
    assert subscription.suspended_at == world.clock.now
    assert subscription.traffic_used_bytes == GIB
    after = await world.revisions()
    assert {sid for sid in after if after[sid] != revisions[sid]} == {here, there}
    assert all(after[sid] == revisions[sid] + 1 for sid in (here, there))
    assert client not in await world.peers(here)
    assert second.client_id not in await world.peers(there)
    assert bystander.client_id in await world.peers(here)

    # Usage that arrives later still counts, but suspends (and bumps) nothing again.
    assert await world.store.account_usage(here, LEDGER, [entry(client, GIB + 99, 1)]) == []
    assert await _totals(world, first) == (GIB + 100, GIB + 100)
    assert await world.revisions() == after


async def test_the_limit_is_reached_by_the_sum_of_devices(world: World) -> None:
    node = await world.node("nl-1")
    plan_id = await make_plan(world.svc, traffic_gb=1, devices=2)
    await world.svc.subscriptions.grant(ADMIN, 1, plan_id=plan_id)
    a = await world.svc.configs.provision(1)
    b = await world.svc.configs.provision(1)
    half = GIB // 2
    suspended = await world.store.account_usage(
        node, LEDGER, [entry(a.client_id, half, 0), entry(b.client_id, 0, half)]
    )
    assert suspended == [a.subscription_id]
    assert await world.peers(node) == {}


async def test_empty_pages_and_unknown_nodes_do_nothing(world: World) -> None:
    node = await world.node("nl-1")
    config = await _placed(world, 1)
    assert await world.store.account_usage(node, LEDGER, []) == []
    assert await world.store.account_usage(999_999, LEDGER, [entry(config.client_id, 5, 5)]) == []
    assert await _totals(world, config) == (0, 0)


async def test_one_page_accounted_twice_at_once_counts_once(world: World) -> None:
    """Two controller processes (a lost advisory lock) reading the same page: the baselines
    are locked, so the growth is counted by one of them."""
    node = await world.node("nl-1")
    config = await _placed(world, 1)
    client = config.client_id
    await world.store.account_usage(node, LEDGER, [entry(client, 10, 10)])
    page = [entry(client, 1010, 10)]

    await asyncio.gather(*(world.store.account_usage(node, LEDGER, page) for _ in range(4)))

    assert await _totals(world, config) == (1020, 1020)


async def test_racing_first_reports_never_count_twice(world: World) -> None:
    """Without a baseline yet, racing readers may fail (a unique baseline per client); the
    hub then re-reads the unacknowledged page. Whatever happens, the growth counts once."""
    node = await world.node("nl-1")
    config = await _placed(world, 1)
    page = [entry(config.client_id, 1000, 10)]

    results = await asyncio.gather(
        *(world.store.account_usage(node, LEDGER, page) for _ in range(4)), return_exceptions=True
    )
    assert any(r == [] for r in results), results
    await world.store.account_usage(node, LEDGER, page)  # the retry of a failed reader

    assert await _totals(world, config) == (1010, 1010)


async def test_the_last_sample_of_a_reissued_or_deleted_device_still_counts(world: World) -> None:
    """The agent samples a client one last time when it removes it; by then the config has
    a new key (re-issue) or is gone (delete). Those bytes still belong to the subscription."""
    node = await world.node("nl-1")
    config = await _placed(world, 7)
    old_client = config.client_id
    await world.store.account_usage(node, LEDGER, [entry(old_client, 1000, 0)])
    assert await _totals(world, config) == (1000, 1000)

    await world.svc.configs.reissue(config.id)
    # The old key's final sample, reported after the re-issue: counted to the same device.
    await world.store.account_usage(node, LEDGER, [entry(old_client, 1500, 0)])
    assert await _totals(world, config) == (1500, 1500)
    fresh = await world.config(config.id)
    assert fresh.client_id != old_client
    await world.store.account_usage(node, LEDGER, [entry(fresh.client_id, 0, 200)])
    assert await _totals(world, config) == (1700, 1700)

    subscription_id = config.subscription_id
    await world.svc.configs.delete(config.id)
    await world.store.account_usage(node, LEDGER, [entry(fresh.client_id, 0, 260)])
    used = (await world.svc.subscriptions.get(subscription_id)).traffic_used_bytes
    assert used == 1760
