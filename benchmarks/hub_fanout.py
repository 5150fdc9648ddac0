"""How long one change takes to reach many nodes through the hub.

    python benchmarks/hub_fanout.py [--nodes 50] [--rounds 5] [--url postgresql://...]

One controller in this process (services + hub over one database, the hub woken in-process
after each commit, production hub settings) drives N enrolled node agents, also in this
process, each on its own loopback port over mTLS, each with a fake backend reporting
WireGuard parameters. One user's subscription (device limit N) has one WireGuard config on
every node, placed by ``services.configs.provision`` (least-loaded placement puts one on
each). Each round suspends the subscription, then resumes it: one transaction that bumps
all N nodes. It times, from the call, until the last agent removed (or re-added) the peer,
and prints every round, the median and the target verdict.

Without --url it creates a fresh PostgreSQL database on the local test server
(VPNBOT_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres) and drops it
afterwards; if that server is unreachable it uses a throw-away SQLite file.

Target (issue 4): one change fanned out to 50 agents in <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.expiry_sweep import describe, scratch_database  # noqa: E402
from benchmarks.hub_latency import TimedBackend, start_node, wait_ready  # noqa: E402
from common.logging import configure_logging  # noqa: E402
from controller.db import migrate  # noqa: E402
from controller.db.base import utcnow  # noqa: E402
from controller.db.engine import create_engine  # noqa: E402
from controller.services import Actor  # noqa: E402
from controller.settings import HubSettings  # noqa: E402
from tests.hub_support import ControllerHarness, Node  # noqa: E402

TARGET_SECONDS = 1.0
TELEGRAM_ID = 7_100_000_000


@dataclass(frozen=True)
class Timing:
    call: float
    first: float
    last: float

    def __str__(self) -> str:
        return f"{self.call * 1000:6.1f} / {self.first * 1000:6.1f} / {self.last * 1000:6.1f}"


def backend_of(node: Node) -> TimedBackend:
    assert isinstance(node.backend, TimedBackend)
    return node.backend


async def converge(
    nodes: list[Node], client_ids: dict[int, str], *, present: bool
) -> tuple[float, float]:
    """Wait until every node has (or has not) its peer; return when the first and the last
    one changed."""

    async def one(node: Node) -> float:
        backend, client_id = backend_of(node), client_ids[node.server_id]
        marks = backend.arrived if present else backend.left
        await backend.wait_until(lambda: (client_id in backend.clients) == present)
        return marks[client_id]

    marks = await asyncio.gather(*(one(n) for n in nodes))
    return min(marks), max(marks)


async def bench(url: str, count: int, rounds: int) -> None:
    engine = create_engine(url)
    await migrate.upgrade(engine)
    suspends: list[Timing] = []
    resumes: list[Timing] = []
    try:
        with tempfile.TemporaryDirectory(prefix="hub-fanout") as tmp:
            async with (
                ControllerHarness.open(
                    engine, Path(tmp), clock=utcnow, settings=HubSettings()
                ) as controller,
                contextlib.AsyncExitStack() as agents,
            ):
                nodes = []
                for n in range(1, count + 1):
                    # Serve each node at once: its port was free when the node was added,
                    # and an outgoing connection could take it if we waited.
                    node = await start_node(controller, f"bench-{n}", f"10.{n}.0.1/24")
                    await agents.enter_async_context(node.agent())
                    nodes.append(node)
                await asyncio.gather(*(wait_ready(controller, node) for node in nodes))
                services = controller.services
                subscription = await services.subscriptions.grant(
                    Actor.cli(), TELEGRAM_ID, days=30, devices=count
                )
                client_ids: dict[int, str] = {}
                for _ in nodes:
                    config = await services.configs.provision(TELEGRAM_ID)
                    client_ids[config.server_id] = config.client_id
                if len(client_ids) != count:
                    raise RuntimeError(f"placement used {len(client_ids)} of {count} nodes")
                await converge(nodes, client_ids, present=True)
                for _ in range(rounds):
                    for change, present, results in (
                        (services.subscriptions.suspend, False, suspends),
                        (services.subscriptions.resume, True, resumes),
                    ):
                        # Start from a quiet hub: the last change's acks are recorded.
                        await asyncio.gather(*(controller.wait_converged(n) for n in nodes))
                        started = time.perf_counter()
                        await change(Actor.cli(), subscription.id)
                        called = time.perf_counter()
                        first, last = await converge(nodes, client_ids, present=present)
                        results.append(Timing(called - started, first - started, last - started))
    finally:
        await engine.dispose()
    print(f"database                 {describe(url)}")
    print(f"nodes                    {count} (one peer of the subscription on each)")
    print("(ms from the call: the call returned / the first agent / the last agent changed)")
    for n, (suspend, resume) in enumerate(zip(suspends, resumes, strict=True), 1):
        print(f"round {n}: suspend {suspend}   resume {resume}")
    every = [t.last for t in suspends + resumes]
    print(f"median of {len(every)} changes (last agent) {statistics.median(every) * 1000:7.1f} ms")
    print(f"slowest change (last agent)      {max(every) * 1000:7.1f} ms")
    verdict = "met" if max(every) <= TARGET_SECONDS else "NOT met"
    print(f"target (every change on {count} agents <= {TARGET_SECONDS:g} s): {verdict}")


async def run(url: str | None, count: int, rounds: int) -> None:
    configure_logging("WARNING", "console")
    async with scratch_database(url) as resolved:
        await bench(resolved, count, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--url", default=None, help="database URL (default: a scratch PostgreSQL database)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.url, args.nodes, args.rounds))
