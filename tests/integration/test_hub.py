"""The hub against in-process agents with fake backends, over real mTLS on loopback.

Each test drives the controller through its services (grants, exports, suspensions, the
expiry sweep) and checks what the agents' backends end up serving and what the hub wrote
back to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from controller.domain.enums import NodeStatus, SubscriptionStatus, SuspendReason
from controller.domain.errors import Conflict, NoServerAvailable
from controller.nodes.client import NodeClient, NodeRpcError
from controller.nodes.hub import Hub
from controller.nodes.store import HubStore
from controller.vpn import wireguard
from node_agent.model import Client, WireGuardPeer
from tests.agent_support import running_agent
from tests.hub_scenarios import (
    config_row,
    give_config,
    hub_settings,
    placed_on,
    quiet_services,
    running,
    stats_rows,
    stop,
    subscription_row,
    wait_peers,
)
from tests.hub_support import ControllerHarness
from tests.integration.factories import ADMIN, GIB, make_plan

WG_PARAMS = {
    "backend": "wg",
    "public_key": "x" * 43 + "=",
    "listen_port": 51820,
    "interface": "wg",
}


async def test_configs_land_on_the_nodes_they_are_placed_on(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        nodes = [await harness.add_node(f"node-{i}") for i in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            agents = [await stack.enter_async_context(node.agent()) for node in nodes]
            for node in nodes:
                await harness.wait_converged(node)
            configs = [await give_config(harness, 1000 + i) for i in range(6)]

            by_node = {node.server_id: set[str]() for node in nodes}
            for config in configs:
                by_node[config.server_id].add(config.client_id)
            assert all(by_node.values()), f"every node gets configs (least loaded): {by_node}"
            for node in nodes:
                assert await placed_on(harness, node) == by_node[node.server_id]
                await wait_peers(harness, node, by_node[node.server_id])

            for config in configs:
                node = next(n for n in nodes if n.server_id == config.server_id)
                peer = node.backend.clients[config.client_id].spec
                assert isinstance(peer, WireGuardPeer)
                assert peer.allowed_ips == (f"{config.config_data['address']}/32",)
                assert peer.preshared_key  # sealed in the DB, opened by the hub
            for node, running_ in zip(nodes, agents, strict=True):
                server = await harness.wait_converged(node)
                assert server.applied_revision == server.desired_revision > 0
                assert running_.agent.revision == server.applied_revision
                assert server.status is NodeStatus.ONLINE
                assert server.status_reason is None
                assert server.agent_boot_id == running_.agent.boot_id
                assert server.agent_version == "test"
                assert server.wireguard_config == {**WG_PARAMS, "addresses": [node.subnet]}
                assert server.last_seen_at is not None
                assert harness.hub is not None and harness.hub.workers[node.server_id].online


async def test_changes_after_the_first_full_state_go_as_deltas(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent() as agent:
            await harness.wait_converged(node)
            assert harness.hub is not None
            worker = harness.hub.workers[node.server_id]
            assert (worker.full_applies, worker.delta_applies) == (1, 0)

            first = await give_config(harness, 1)
            await wait_peers(harness, node, {first.client_id})
            second = await give_config(harness, 2)
            await wait_peers(harness, node, {first.client_id, second.client_id})

            server = await harness.wait_converged(node)
            assert worker.full_applies == 1
            assert worker.delta_applies >= 2
            assert agent.agent.revision == server.applied_revision == server.desired_revision


async def test_agent_restart_converges_without_extra_peers(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent() as first:
            await harness.wait_converged(node)
            configs = [await give_config(harness, 10 + i) for i in range(2)]
            expected = {c.client_id for c in configs}
            await wait_peers(harness, node, expected)
            await harness.wait_converged(node)
        assert harness.hub is not None
        worker = harness.hub.workers[node.server_id]
        full_before = worker.full_applies

        # A reboot: the device comes back without our peers but with a stray one; the agent
        # restores its persisted state, the hub sees a new boot id and re-sends everything.
        rebooted = node.new_backend()
        stray = wireguard.generate_keypair().public_key
        rebooted.clients[stray] = Client(stray, WireGuardPeer(stray, None, ("10.1.0.200/32",)))
        async with node.agent(rebooted) as second:
            assert second.agent.boot_id != first.agent.boot_id

            async def noticed() -> bool:
                server = await harness.server(node)
                return (
                    worker.boot_id == second.agent.boot_id
                    and server.agent_boot_id == second.agent.boot_id
                    and worker.full_applies > full_before
                    and server.applied_revision >= server.desired_revision
                )

            await harness.wait_for(noticed, what="the hub to re-send the state after a reboot")
            await wait_peers(harness, node, expected)
            assert set(rebooted.clients) == expected
            peers = [c.spec for c in rebooted.clients.values()]
            assert all(isinstance(p, WireGuardPeer) for p in peers)
            assert len({p.allowed_ips for p in peers if isinstance(p, WireGuardPeer)}) == 2

            # Known contents again: the next change is a delta on the new boot.
            deltas, full_after = worker.delta_applies, worker.full_applies
            third = await give_config(harness, 12)
            await wait_peers(harness, node, expected | {third.client_id})
            # (The counter moves when the reply arrives, just after the backend changed.)
            await harness.wait_for(lambda: worker.delta_applies > deltas, what="a delta")
            assert worker.full_applies == full_after


async def test_changes_while_the_agent_is_down_reach_it_when_it_returns(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent():
            await harness.wait_converged(node)
            kept, suspended, bounced = [await give_config(harness, 20 + i) for i in range(3)]
            await wait_peers(
                harness, node, {kept.client_id, suspended.client_id, bounced.client_id}
            )

        async def down() -> bool:
            server = await harness.server(node)
            return server.status is NodeStatus.DOWN and bool(server.status_reason)

        await harness.wait_for(down, what="the node to be marked down")
        assert "UNAVAILABLE" in ((await harness.server(node)).status_reason or "")

        subs = harness.services.subscriptions
        await subs.grant(ADMIN, 20, days=30)
        await subs.suspend(ADMIN, suspended.subscription_id)
        await subs.suspend(ADMIN, bounced.subscription_id)
        await subs.resume(ADMIN, bounced.subscription_id)
        reissued = await harness.services.configs.reissue(bounced.id)
        assert reissued.client_id != bounced.client_id
        # A new device needs a node that is up.
        await subs.grant(ADMIN, 29, days=30)
        with pytest.raises(NoServerAvailable):
            await harness.services.configs.export(29)

        server = await harness.server(node)
        assert server.status is NodeStatus.DOWN
        assert server.desired_revision > server.applied_revision
        assert node.peers() == {kept.client_id, suspended.client_id, bounced.client_id}

        async with node.agent():
            await wait_peers(harness, node, {kept.client_id, reissued.client_id})
            server = await harness.wait_converged(node)
            assert server.status is NodeStatus.ONLINE
            assert server.status_reason is None


async def test_a_hub_restarted_in_the_same_process_drives_its_nodes_again(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent():
            await harness.wait_converged(node)
            first = await give_config(harness, 25)
            await wait_peers(harness, node, {first.client_id})
            await harness.stop_hub()  # e.g. `vpnbot run` restarting its hub after a failure

            hub = harness.start_hub()
            second = await give_config(harness, 26)
            await wait_peers(harness, node, {first.client_id, second.client_id})
            assert hub.workers[node.server_id].online


async def test_an_agent_with_another_nodes_certificate_is_refused(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        other = await harness.add_node("nl-2")  # enrolled by the same CA, then removed
        await harness.services.nodes.remove(ADMIN, other.name)
        assert harness.hub is not None
        async with node.agent():
            await harness.wait_converged(node)
            config = await give_config(harness, 30)
            await wait_peers(harness, node, {config.client_id})
            await harness.wait_converged(node)
        worker = harness.hub.workers[node.server_id]
        syncs = worker.syncs

        # Another node's agent (a valid certificate of this cluster) answers at nl-1's address.
        impostor_backend = node.new_backend()
        with capture_logs() as logs:
            async with running_agent(
                other.state_dir, {"wg": impostor_backend}, listen=f"127.0.0.1:{node.port}"
            ) as impostor:
                # A change the hub would push at once to the right agent.
                await harness.services.subscriptions.suspend(ADMIN, config.subscription_id)

                async def refused() -> bool:
                    server = await harness.server(node)
                    return server.status is NodeStatus.DOWN and _tls_refusal(server.status_reason)

                await harness.wait_for(refused, what="the node marked down for its certificate")
                await asyncio.sleep(2 * harness.settings.max_backoff_seconds)  # more attempts
                assert not worker.online and worker.syncs == syncs
                assert impostor_backend.clients == {}
                assert impostor.agent.revision == 0
                assert (await harness.server(node)).status is NodeStatus.DOWN
        unreachable = [
            e for e in logs if e["event"] == "node_unreachable" and e.get("node_name") == node.name
        ]
        assert unreachable, logs
        assert any(_tls_refusal(str(e["reason"])) for e in unreachable), unreachable

        # The right agent gets the change the impostor never saw.
        async with node.agent():
            await wait_peers(harness, node, set())
            await harness.wait_for(lambda: worker.syncs > syncs, what="a sync")
            assert (await harness.wait_converged(node)).status is NodeStatus.ONLINE


def _tls_refusal(reason: str | None) -> bool:
    """An unreachable node's reason that names the TLS check of the agent's identity (the
    certificate's name did not match), not a refused connection."""
    text = (reason or "").lower()
    markers = ("hostname verification", "peer name", "certificate verify failed", "handshake")
    return text.startswith("unavailable") and any(m in text for m in markers)


async def test_an_expired_subscription_leaves_the_node_without_a_sweep(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent():
            await harness.wait_converged(node)
            short = await give_config(harness, 40, days=1)
            long = await give_config(harness, 41, days=30)
            await wait_peers(harness, node, {short.client_id, long.client_id})
            before = await harness.wait_converged(node)

            harness.clock.advance(days=2)
            await wait_peers(
                harness, node, {long.client_id}, within=harness.settings.resync_seconds + 3
            )

            # Nothing expired it in the database: the hub saw the time pass by itself and
            # labelled the new state with a newer revision.
            sub = await subscription_row(harness, short.subscription_id)
            assert sub.status is SubscriptionStatus.ACTIVE
            after = await harness.wait_converged(node)
            assert after.desired_revision > before.desired_revision
            assert after.applied_revision == after.desired_revision


async def test_the_expiry_sweep_removes_peers_at_once(engine: AsyncEngine, tmp_path: Path) -> None:
    settings = hub_settings(resync_seconds=60.0)  # no time-based resync during the test
    async with ControllerHarness.open(engine, tmp_path, settings=settings) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent():
            await harness.wait_converged(node)
            short = await give_config(harness, 50, days=1)
            long = await give_config(harness, 51, days=30)
            await wait_peers(harness, node, {short.client_id, long.client_id})
            await harness.wait_converged(node)

            harness.clock.advance(days=2)
            await asyncio.sleep(0.5)
            assert node.peers() == {short.client_id, long.client_id}, "nothing woke the hub yet"

            assert await harness.services.subscriptions.expire_due() == [short.subscription_id]
            await wait_peers(harness, node, {long.client_id}, within=3.0)
            server = await harness.wait_converged(node)
            assert server.applied_revision == server.desired_revision


async def test_reaching_the_traffic_limit_suspends_and_removes_the_peer(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = hub_settings(usage_seconds=0.2)
    async with ControllerHarness.open(engine, tmp_path, settings=settings) as harness:
        plan = await make_plan(harness.services, traffic_gb=1)
        node = await harness.add_node("nl-1")
        async with node.agent():
            await harness.wait_converged(node)
            limited = await give_config(harness, 60, plan_id=plan)
            free = await give_config(harness, 61)
            await wait_peers(harness, node, {limited.client_id, free.client_id})

            half = GIB // 2
            node.backend.add_traffic(limited.client_id, half, 0)
            node.backend.add_traffic(free.client_id, 3 * GIB, 0)

            async def used(expected: int) -> bool:
                sub = await subscription_row(harness, limited.subscription_id)
                return sub.traffic_used_bytes == expected

            await harness.wait_for(lambda: used(half), what="the first half counted")
            sub = await subscription_row(harness, limited.subscription_id)
            assert sub.status is SubscriptionStatus.ACTIVE
            assert node.peers() == {limited.client_id, free.client_id}

            node.backend.add_traffic(limited.client_id, 1, half)  # over 1 GiB in all
            await harness.wait_for(lambda: used(2 * half + 1), what="the rest counted")
            await wait_peers(harness, node, {free.client_id})
            sub = await subscription_row(harness, limited.subscription_id)
            assert sub.status is SubscriptionStatus.SUSPENDED
            assert sub.suspend_reason is SuspendReason.TRAFFIC_LIMIT
            unlimited = await subscription_row(harness, free.subscription_id)
            assert unlimited.status is SubscriptionStatus.ACTIVE
            assert unlimited.traffic_used_bytes == 3 * GIB


async def test_usage_is_exact_across_a_restart_and_a_lost_acknowledgement(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = hub_settings(usage_seconds=0.2)
    async with ControllerHarness.open(engine, tmp_path, settings=settings) as harness:
        node = await harness.add_node("nl-1")

        async def totals_are(expected: int) -> bool:
            config = await config_row(harness, cfg.id)
            sub = await subscription_row(harness, cfg.subscription_id)
            return config.total_traffic_bytes == sub.traffic_used_bytes == expected

        async with node.agent():
            await harness.wait_converged(node)
            cfg = await give_config(harness, 70)
            await wait_peers(harness, node, {cfg.client_id})
            node.backend.add_traffic(cfg.client_id, 1000, 2000)
            await harness.wait_for(lambda: totals_are(3000), what="3000 bytes counted")

        # The rebooted device's counters start from zero; the agent's ledger does not.
        async with node.agent(node.new_backend()) as agent:
            assert node.peers() == {cfg.client_id}  # restored before serving
            node.backend.add_traffic(cfg.client_id, 500, 700)
            await harness.wait_for(lambda: totals_are(4200), what="4200 bytes counted")
            await harness.wait_for(lambda: agent.agent.ledger.pending() == 0, what="acked")

            original = NodeClient.ack_usage
            dropped: list[int] = []

            async def ack_lost_once(self: NodeClient, cursor: int, ledger_id: str) -> object:
                if not dropped:
                    dropped.append(cursor)
                    raise NodeRpcError(grpc.StatusCode.UNAVAILABLE, "acknowledgement lost")
                return await original(self, cursor, ledger_id)

            monkeypatch.setattr(NodeClient, "ack_usage", ack_lost_once)
            node.backend.add_traffic(cfg.client_id, 100, 0)
            await harness.wait_for(lambda: bool(dropped), what="the acknowledgement to be lost")
            await harness.wait_for(lambda: agent.agent.ledger.pending() == 0, what="re-acked")
            assert await totals_are(4300)

            node.backend.add_traffic(cfg.client_id, 10, 0)
            await harness.wait_for(lambda: totals_are(4310), what="4310 bytes counted")
            await asyncio.sleep(5 * settings.usage_seconds)  # further reads add nothing
            assert await totals_are(4310)


async def test_metrics_are_recorded_and_old_samples_pruned(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = hub_settings(metrics_seconds=0.2)
    async with ControllerHarness.open(engine, tmp_path, settings=settings) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent():

            async def sampled_twice() -> bool:
                return len(await stats_rows(harness, node)) >= 2

            await harness.wait_for(sampled_twice, what="two metrics samples")
            old_time = harness.clock()
            new_time = harness.clock.advance(days=31)

            async def sampled_now() -> bool:
                return any(r.recorded_at >= new_time for r in await stats_rows(harness, node))

            await harness.wait_for(sampled_now, what="a sample at the new time")
            await harness.stop_hub()

        rows = await stats_rows(harness, node)
        old = [r for r in rows if r.recorded_at <= old_time]
        assert len(old) >= 2 and len(rows) > len(old)
        latest = rows[-1]
        server = await harness.server(node)
        assert (server.cpu_usage, server.memory_usage, server.disk_usage) == (
            latest.cpu_usage,
            latest.memory_usage,
            latest.disk_usage,
        )
        assert 0 < server.memory_usage <= 100 and 0 < server.disk_usage <= 100
        assert server.last_check == new_time

        store = HubStore(harness.uow_factory, harness.box, harness.clock)
        assert await store.prune_stats(30) == len(old)
        remaining = await stats_rows(harness, node)
        assert [r.id for r in remaining] == [r.id for r in rows if r.recorded_at > old_time]
        assert await store.prune_stats(30) == 0


async def test_two_hubs_never_drive_one_node_at_once(
    engine: AsyncEngine, tmp_path: Path, pg_only: None
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as harness:
        nodes = [await harness.add_node(f"node-{i}") for i in range(3)]
        first, second = harness.new_hub(), harness.new_hub()
        hubs = (first, second)
        overlaps: list[tuple[int, float]] = []

        def online_in(server_id: int) -> int:
            return sum(1 for h in hubs if (w := h.workers.get(server_id)) is not None and w.online)

        async def watch() -> None:
            while True:
                for node in nodes:
                    if online_in(node.server_id) > 1:
                        overlaps.append((node.server_id, time.monotonic()))
                await asyncio.sleep(0.005)

        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(stop, asyncio.create_task(watch()))
            for node in nodes:
                await stack.enter_async_context(node.agent())
            first_task = await stack.enter_async_context(running(first))
            for node in nodes:
                await harness.wait_converged(node)
            await stack.enter_async_context(running(second))
            await harness.wait_for(
                lambda: all(n.server_id in second.workers for n in nodes), what="second's workers"
            )
            await asyncio.sleep(1.0)  # several lock attempts by the second hub
            assert all(first.workers[n.server_id].online for n in nodes)
            assert all(second.workers[n.server_id].syncs == 0 for n in nodes)

            config = await give_config(harness, 80)
            target = next(n for n in nodes if n.server_id == config.server_id)
            await wait_peers(harness, target, {config.client_id})
            assert second.workers[target.server_id].syncs == 0

            await stop(first_task)  # its connection closes: its locks go with it
            await harness.wait_for(
                lambda: all(online_in(n.server_id) == 1 for n in nodes), what="takeover"
            )
            assert all(second.workers[n.server_id].online for n in nodes)
            later = await give_config(harness, 81)
            moved = next(n for n in nodes if n.server_id == later.server_id)
            await wait_peers(harness, moved, await placed_on(harness, moved))
            await harness.wait_converged(moved)
            assert second.workers[moved.server_id].syncs >= 1
        assert overlaps == [], "a node was driven by both hubs at once"


async def test_a_commit_in_another_process_wakes_the_hub_by_notify(
    engine: AsyncEngine, tmp_path: Path, pg_only: None
) -> None:
    settings = hub_settings(resync_seconds=60.0, poll_seconds=30.0)
    async with ControllerHarness.open(
        engine, tmp_path, settings=settings, start_hub=False
    ) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent():
            harness.start_hub()
            await harness.wait_converged(node)
            other = quiet_services(harness)
            await other.subscriptions.grant(ADMIN, 90, days=30)

            started = time.monotonic()
            rendered = await other.configs.export(90)
            config = await config_row(harness, rendered.config_id)
            await wait_peers(harness, node, {config.client_id}, within=5.0)
            assert time.monotonic() - started < 5.0  # far below the poll and resync periods
            await harness.wait_converged(node, within=2.0)


async def test_the_revision_poll_picks_up_another_process_s_change(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # No in-process events and no LISTEN connection: only the revision poll can notice.
    settings = hub_settings(resync_seconds=60.0, poll_seconds=0.1)
    async with ControllerHarness.open(
        engine, tmp_path, settings=settings, start_hub=False
    ) as harness:
        node = await harness.add_node("nl-1")
        hub = Hub(harness.uow_factory, harness.box, settings, harness.clock)
        async with node.agent(), running(hub):
            await harness.wait_converged(node)
            other = quiet_services(harness)
            await other.subscriptions.grant(ADMIN, 95, days=30)

            started = time.monotonic()
            rendered = await other.configs.export(95)
            config = await config_row(harness, rendered.config_id)
            await wait_peers(harness, node, {config.client_id}, within=5.0)
            assert time.monotonic() - started < 5.0
            worker = hub.workers[node.server_id]
            await harness.wait_for(lambda: worker.delta_applies >= 1, what="a delta")
            assert worker.full_applies == 1


async def test_one_change_fans_out_to_ten_nodes(engine: AsyncEngine, tmp_path: Path) -> None:
    settings = hub_settings(resync_seconds=60.0)
    async with ControllerHarness.open(engine, tmp_path, settings=settings) as harness:
        nodes = [await harness.add_node(f"node-{i}") for i in range(10)]
        async with contextlib.AsyncExitStack() as stack:
            for node in nodes:
                await stack.enter_async_context(node.agent())
            for node in nodes:
                await harness.wait_converged(node)
            configs = [await give_config(harness, 2000 + i) for i in range(10)]
            assert {c.server_id for c in configs} == {n.server_id for n in nodes}
            for node in nodes:
                await wait_peers(harness, node, await placed_on(harness, node))

            async with harness.uow_factory() as uow:
                bumped = await uow.touch_nodes([n.server_id for n in nodes])
                await uow.commit()
            assert sorted(bumped) == sorted(n.server_id for n in nodes)
            wanted = {s.id: s.desired_revision for s in [await harness.server(n) for n in nodes]}

            async def all_applied() -> bool:
                servers = [await harness.server(n) for n in nodes]
                return all(s.applied_revision >= wanted[s.id] for s in servers)

            await harness.wait_for(all_applied, within=5.0, what="all ten nodes to apply")

            harness.clock.advance(days=31)
            expired = await harness.services.subscriptions.expire_due()
            assert sorted(expired) == sorted(c.subscription_id for c in configs)
            for node in nodes:
                await wait_peers(harness, node, set(), within=5.0)
            for node in nodes:
                server = await harness.wait_converged(node)
                assert server.applied_revision == server.desired_revision


async def test_hub_writes_cut_short_by_cancellation_leave_the_database_writable(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The hub cancels a worker wherever it is (its node removed or moved, the hub
    stopping), also inside a HubStore transaction. That must end the transaction: a write
    lock left behind (SQLite) would make every other writer of the controller wait."""
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as harness:
        node = await harness.add_node("nl-1")
        store = HubStore(harness.uow_factory, harness.box, harness.clock)

        async def worker_writes() -> None:
            while True:
                await store.record_down(node.server_id, "unreachable")
                await store.raise_revision(node.server_id, 0)

        rng = random.Random(7)
        started: list[asyncio.Task[None]] = []
        try:
            for round_ in range(150):
                writers = [asyncio.create_task(worker_writes()) for _ in range(3)]
                started += writers
                await asyncio.sleep(rng.random() * 0.02)
                for task in writers:
                    task.cancel()
                _, pending = await asyncio.wait(writers, timeout=3.0)
                assert not pending, f"round {round_}: cancelled writers still busy after 3 s"
                # Another writer gets through at once (not after SQLite's 30 s busy timeout).
                probe = asyncio.create_task(store.record_down(node.server_id, "probe"))
                _, pending = await asyncio.wait([probe], timeout=3.0)
                started.append(probe)
                assert not pending, f"round {round_}: the database stayed locked for writers"
        finally:
            gc.collect()  # a failed round leaves connections for the collector to close
            await asyncio.gather(*started, return_exceptions=True)
            # The shielded writes of cancelled callers run on: finish them here, or a late
            # record_down lands on the next test's node (SQLite reuses the emptied ids).
            await store.drain()


async def test_removing_a_node_with_force_empties_its_agent_first(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """`node remove --force` must not leave clients on the node: their configs go, the hub
    pushes the empty state, and only then can the node row be deleted without --force."""
    async with ControllerHarness.open(engine, tmp_path) as harness:
        node = await harness.add_node("nl-1")
        async with node.agent():
            await harness.wait_converged(node)
            config = await give_config(harness, 41)
            await wait_peers(harness, node, {config.client_id})
            with pytest.raises(Conflict, match="carries 1 client config"):
                await harness.services.nodes.remove(ADMIN, "nl-1")
            drained = await harness.services.nodes.remove(ADMIN, "nl-1", force=True)
            assert (drained.configs_deleted, drained.removed) == (1, False)
            await wait_peers(harness, node, set())
            await harness.wait_converged(node)
            removed = await harness.services.nodes.remove(ADMIN, "nl-1")
            assert removed.removed
        assert [s.name for s in await harness.services.nodes.list()] == []
