"""From granting access to the peer being live on the node, through the hub.

    python benchmarks/hub_latency.py [--grants 200] [--peers 0] [--url postgresql://...]

One controller in this process (services + hub over one database, the hub woken in-process
after each commit, production hub settings) drives one enrolled node agent, also in this
process, over mTLS on loopback; the agent's backend is the fake one, reporting WireGuard
parameters (and checking a delta against what it holds, as the real WireGuard backend
does). For each of N new users it times, from the call to

    services.subscriptions.grant(Actor.cli(), telegram_id, days=30)
    services.configs.export(telegram_id)            # places the WireGuard config on the node

to the moment the agent's backend holds the new peer. Prints median, p95, p99 and max, the
time the two calls themselves took, and the target verdict. With --peers P the node already
carries P peers (bulk-inserted configs of other users) before the first grant: every change
rebuilds the node's whole desired state, so this shows how the latency grows with node size.

Without --url it creates a fresh PostgreSQL database on the local test server
(VPNBOT_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres) and drops it
afterwards; if that server is unreachable it uses a throw-away SQLite file.

Target (issue 4): p99 <= 300 ms over 200 grants on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from operator import contains
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.expiry_sweep import describe, scratch_database  # noqa: E402
from common.logging import configure_logging  # noqa: E402
from controller.db import migrate  # noqa: E402
from controller.db.base import utcnow  # noqa: E402
from controller.db.engine import create_engine  # noqa: E402
from controller.db.models import AddressAllocation, Subscription, User, VpnConfig  # noqa: E402
from controller.domain.enums import SubscriptionStatus, VpnProtocol  # noqa: E402
from controller.services import Actor  # noqa: E402
from controller.services.config_render import secret_context  # noqa: E402
from controller.settings import HubSettings  # noqa: E402
from controller.vpn import wireguard  # noqa: E402
from node_agent.backends.base import ApplyReport, WireGuardPublicParams  # noqa: E402
from node_agent.backends.fake import FakeBackend  # noqa: E402
from node_agent.backends.wireguard.peers import PeerIndex  # noqa: E402
from node_agent.model import Client  # noqa: E402
from tests.hub_support import ControllerHarness, Node  # noqa: E402

TARGET_P99_MS = 300.0
FIRST_TELEGRAM_ID = 7_000_000_000
FIRST_PRELOADED_TELEGRAM_ID = 8_000_000_000


class TimedBackend(FakeBackend):
    """The fake backend, noting when each client arrived on it and when it left.

    It checks and applies a delta the way the real WireGuard backend does, against an index
    of what it holds (cost of the change), where the plain fake re-validates every peer
    (about 1 s per delta at 10k peers, which would dwarf the hub's own cost).
    """

    def __init__(self, name: str, subnet: str) -> None:
        super().__init__(
            name,
            WireGuardPublicParams(
                public_key="x" * 43 + "=", listen_port=51820, addresses=(subnet,), interface=name
            ),
        )
        self.index = PeerIndex(name)
        self.arrived: dict[str, float] = {}
        self.left: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def apply(self, clients: Sequence[Client]) -> ApplyReport:
        index = PeerIndex.build(self.name, clients)
        before = set(self.clients)
        report = await super().apply(clients)
        self.index = index
        now = time.perf_counter()
        for client_id in self.clients.keys() - before:
            self.arrived[client_id] = now
        for client_id in before - self.clients.keys():
            self.left[client_id] = now
        self.changed.set()
        return report

    def validate_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        self.index.check_changes(upserts, removals)

    async def apply_changes(
        self, upserts: Sequence[Client], removals: Sequence[str]
    ) -> ApplyReport:
        self.apply_calls += 1
        now = time.perf_counter()
        upsert_ids = {c.id for c in upserts}
        added, updated, removed = set(), set(), set()
        for client_id in removals:
            if client_id in self.clients and client_id not in upsert_ids:
                del self.clients[client_id]
                self.counters.pop(client_id, None)
                self.online.discard(client_id)
                self.left[client_id] = now
                removed.add(client_id)
        for client in upserts:
            old = self.clients.get(client.id)
            if old is None:
                self.arrived[client.id] = now
                added.add(client.id)
            elif old != client:
                updated.add(client.id)
            self.clients[client.id] = client
            self.counters.setdefault(client.id, [0, 0])
        self.index.apply_changes(upserts, removals)
        self.changed.set()
        return ApplyReport(
            added=len(added),
            updated=len(updated),
            removed=len(removed),
            reset_clients=frozenset(added | removed),
        )

    async def wait_until(self, done: Callable[[], bool], *, within: float = 30.0) -> None:
        """Until ``done()`` is true (checked after every apply)."""
        deadline = time.monotonic() + within
        while not done():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the node did not converge in time")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def figures(samples_ms: Sequence[float]) -> str:
    return (
        f"median {statistics.median(samples_ms):7.1f}   p95 {percentile(samples_ms, 0.95):7.1f}"
        f"   p99 {percentile(samples_ms, 0.99):7.1f}   max {max(samples_ms):7.1f} ms"
    )


async def start_node(controller: ControllerHarness, name: str, subnet: str) -> Node:
    """Add and enroll a node with a timed backend; the caller serves it (``node.agent()``)."""
    node = await controller.add_node(name, subnet=subnet, max_users=100_000)
    node.backend = TimedBackend("wg", subnet)
    return node


async def wait_ready(controller: ControllerHarness, node: Node) -> None:
    """Until the hub reached the agent, recorded its WireGuard parameters and synced it."""
    server = await controller.wait_converged(node, within=30.0)
    if server.wireguard_config is None:
        raise RuntimeError(f"node {node.name} reported no WireGuard parameters")


async def preload(controller: ControllerHarness, node: Node, count: int) -> None:
    """Put ``count`` peers on the node the way provisioning would have left them (users with
    an active subscription and one WireGuard config each), written in bulk, and wait until
    the agent has them."""
    if count <= 0:
        return
    now = utcnow()
    subnet = ipaddress.ip_interface(node.subnet)
    hosts = (str(h) for h in subnet.network.hosts() if h != subnet.ip)
    addresses = list(itertools.islice(hosts, count))
    if len(addresses) < count:
        raise ValueError(f"{node.subnet} holds fewer than {count} peers")
    async with controller.engine.begin() as connection:
        await connection.execute(
            sa.insert(User),
            [
                {
                    "telegram_id": FIRST_PRELOADED_TELEGRAM_ID + i,
                    "language_code": "en",
                    "referral_code": f"p{i}",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(count)
            ],
        )
        user_ids = (
            await connection.execute(
                sa.select(User.id)
                .where(User.telegram_id >= FIRST_PRELOADED_TELEGRAM_ID)
                .order_by(User.telegram_id)
            )
        ).scalars()
        subscription_ids = (
            await connection.execute(
                sa.insert(Subscription).returning(Subscription.id, sort_by_parameter_order=True),
                [
                    {
                        "user_id": user_id,
                        "status": SubscriptionStatus.ACTIVE,
                        "started_at": now,
                        "expires_at": now + timedelta(days=30),
                        "traffic_used_bytes": 0,
                        "device_limit": 1,
                        "server_id": node.server_id,
                        "active_protocol": VpnProtocol.WIREGUARD,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for user_id in user_ids
                ],
            )
        ).scalars()
        keys = [wireguard.generate_keypair() for _ in range(count)]
        config_ids = (
            (
                await connection.execute(
                    sa.insert(VpnConfig).returning(VpnConfig.id, sort_by_parameter_order=True),
                    [
                        {
                            "subscription_id": subscription_id,
                            "server_id": node.server_id,
                            "protocol": VpnProtocol.WIREGUARD,
                            "client_id": key.public_key,
                            "device_name": "wireguard-1",
                            "config_data": {"public_key": key.public_key, "address": address},
                            "is_active": True,
                            "total_traffic_bytes": 0,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for subscription_id, key, address in zip(
                            subscription_ids, keys, addresses, strict=True
                        )
                    ],
                )
            )
            .scalars()
            .all()
        )
        await connection.execute(
            sa.update(VpnConfig)
            .where(VpnConfig.id == sa.bindparam("config_id"))
            .values(secret_encrypted=sa.bindparam("secret")),
            [
                {
                    "config_id": config_id,
                    "secret": controller.box.encrypt(
                        json.dumps(
                            {
                                "private_key": key.private_key,
                                "preshared_key": wireguard.generate_preshared_key(),
                            }
                        ).encode(),
                        secret_context(config_id),
                    ),
                }
                for config_id, key in zip(config_ids, keys, strict=True)
            ],
        )
        await connection.execute(
            sa.insert(AddressAllocation),
            [
                {
                    "server_id": node.server_id,
                    "vpn_config_id": config_id,
                    "address": address,
                    "allocated_at": now,
                }
                for config_id, address in zip(config_ids, addresses, strict=True)
            ],
        )
    async with controller.uow_factory() as uow:
        await uow.touch_nodes([node.server_id])
        await uow.commit()
    backend = node.backend
    assert isinstance(backend, TimedBackend)
    await backend.wait_until(lambda: len(backend.clients) >= count, within=300.0)
    await controller.wait_converged(node, within=60.0)


async def bench(url: str, grants: int, peers: int) -> None:
    engine = create_engine(url)
    await migrate.upgrade(engine)
    try:
        with tempfile.TemporaryDirectory(prefix="hub-latency") as tmp:
            async with ControllerHarness.open(
                engine, Path(tmp), clock=utcnow, settings=HubSettings()
            ) as controller:
                node = await start_node(controller, "bench-1", "10.64.0.1/16")
                backend = node.backend
                assert isinstance(backend, TimedBackend)
                async with node.agent():
                    await wait_ready(controller, node)
                    await preload(controller, node, peers)
                    totals, calls = [], []
                    for i in range(grants):
                        telegram_id = FIRST_TELEGRAM_ID + i
                        started = time.perf_counter()
                        await controller.services.subscriptions.grant(
                            Actor.cli(), telegram_id, days=30
                        )
                        rendered = await controller.services.configs.export(telegram_id)
                        calls.append(time.perf_counter() - started)
                        async with controller.uow_factory() as uow:
                            config = await uow.configs.get(rendered.config_id)
                            assert config is not None
                            client_id = config.client_id
                        await backend.wait_until(
                            functools.partial(contains, backend.arrived, client_id)
                        )
                        totals.append(backend.arrived[client_id] - started)
                    await controller.wait_converged(node)  # the last reply reached the hub
                    hub = controller.hub
                    assert hub is not None
                    worker = hub.workers[node.server_id]
                    applies = (worker.delta_applies, worker.full_applies)
                    end_peers = len(backend.clients)
    finally:
        await engine.dispose()
    totals_ms = [t * 1000 for t in totals]
    calls_ms = [t * 1000 for t in calls]
    p99 = percentile(totals_ms, 0.99)
    print(f"database                   {describe(url)}")
    print(f"peers on the node before   {peers}")
    print(f"grants                     {grants} (peers on the node at the end: {end_peers})")
    print(f"hub applies                {applies[0]} delta, {applies[1]} full")
    print(f"grant + export calls       {figures(calls_ms)}")
    print(f"grant call -> peer live    {figures(totals_ms)}")
    verdict = "met" if p99 <= TARGET_P99_MS else "NOT met"
    print(f"target (p99 <= {TARGET_P99_MS:g} ms):      {verdict}")


async def run(url: str | None, grants: int, peers: int) -> None:
    configure_logging("WARNING", "console")
    async with scratch_database(url) as resolved:
        await bench(resolved, grants, peers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=200)
    parser.add_argument(
        "--peers", type=int, default=0, help="peers already on the node before the grants"
    )
    parser.add_argument(
        "--url", default=None, help="database URL (default: a scratch PostgreSQL database)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.url, args.grants, args.peers))
