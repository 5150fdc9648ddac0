"""How fast the agent changes a real wireguard-go device, against the `wg syncconf` way.

    sudo .venv/bin/python benchmarks/wireguard_apply.py [--peers 10000] [--changes 50]

Runs as root (it makes a throw-away network namespace and a wireguard-go device in it). The
agent runs in-process with its real UAPI driver, state store and ledger; the controller's
mTLS client calls it over a unix socket, so every figure includes gRPC, TLS, validation,
persistence and the UAPI round trip. Prints:

* full sync of 1k and N peers onto an empty device (ApplyState);
* a single-peer add and remove on a device that already has N peers (ApplyDelta), from the
  call to the peer being live (the call returns after the device confirmed the change);
* the same single-peer change done the common way: render the whole config and run
  `wg syncconf` — and the ratio between the two.

Targets (issue 3): single-peer change median <= 5 ms; full sync of 10k <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proto.nodeapi.v1 import node_agent_pb2 as pb  # noqa: E402

NODE_ID = "bench-node"


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def address(i: int) -> str:
    # 10.64.0.0/10 holds ~4M /32s; .1 of the first /24 is the server.
    n = (10 << 24) | (64 << 16) | (i + 2)
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0)) + "/32"


def client(i: int, public_key: str | None = None) -> pb.Client:
    return pb.Client(
        id=f"c{i}",
        wireguard=pb.WireGuardPeer(
            public_key=public_key or key(), preshared_key=key(), allowed_ips=[address(i)]
        ),
    )


def state(clients: list[pb.Client]) -> pb.DesiredState:
    return pb.DesiredState(backends=[pb.BackendState(name="wireguard", clients=clients)])


def figures(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ms)})"


async def bench(peers: int, changes: int, workdir: Path, iface: str) -> None:
    from common.logging import configure_logging
    from node_agent.agent import Agent
    from node_agent.backends.wireguard.backend import WireGuardBackend
    from node_agent.backends.wireguard.uapi import UapiDriver
    from node_agent.ledger import UsageLedger
    from node_agent.server import AgentServer
    from node_agent.state import StateStore
    from node_agent.tls import load_credentials
    from tests.agent_support import Cluster

    configure_logging("WARNING", "console")
    cluster = Cluster.create()
    state_dir = workdir / "state"
    cluster.enroll(state_dir, NODE_ID)
    backend = WireGuardBackend(
        "wireguard",
        driver=UapiDriver(),
        interface=iface,
        listen_port=51820,
        addresses=["10.64.0.1/10"],
        private_key_path=state_dir / "wg.key",
    )
    agent = Agent(
        node_id=NODE_ID,
        version="bench",
        backends={"wireguard": backend},
        store=StateStore(state_dir / "state.db"),
        ledger=UsageLedger(state_dir / "usage.db"),
    )
    await agent.boot()
    socket = workdir / "agent.sock"
    server = AgentServer(
        agent,
        load_credentials(state_dir),
        f"unix:{socket}",
        usage_interval=3600,
        reconcile_interval=3600,
    )
    await server.start()
    revision = 0
    async with cluster.client(f"unix:{socket}", NODE_ID) as controller:
        await controller.info()  # connect and handshake outside the measurements

        async def full(count: int) -> float:
            nonlocal revision
            await controller.apply_state((revision := revision + 1), state([]))
            clients = [client(i) for i in range(count)]
            start = time.perf_counter()
            await controller.apply_state((revision := revision + 1), state(clients))
            took = time.perf_counter() - start
            device = await backend.driver.get(iface)
            assert len(device.peers) == count, (len(device.peers), count)
            return took

        print(f"full sync, 1k peers onto an empty device:   {await full(1000) * 1000:8.1f} ms")
        full_n = await full(peers)
        print(f"full sync, {peers // 1000}k peers onto an empty device:  {full_n * 1000:8.1f} ms")

        adds, removes = [], []
        for n in range(changes):
            extra = client(peers + n)
            delta = pb.BackendDelta(name="wireguard", upsert=[extra])
            start = time.perf_counter()
            await controller.apply_delta(revision, revision + 1, [delta])
            adds.append(time.perf_counter() - start)
            revision += 1
            delta = pb.BackendDelta(name="wireguard", remove=[extra.id])
            start = time.perf_counter()
            await controller.apply_delta(revision, revision + 1, [delta])
            removes.append(time.perf_counter() - start)
            revision += 1
        device = await backend.driver.get(iface)
        assert len(device.peers) == peers
        print(f"single-peer add on {peers} peers (ApplyDelta):    {figures(adds)}")
        print(f"single-peer remove on {peers} peers (ApplyDelta): {figures(removes)}")

    # The common way: render every peer into a config and let `wg syncconf` diff it.
    present = await backend.driver.get(iface)
    base = "".join(
        f"[Peer]\nPublicKey = {p.public_key}\nAllowedIPs = {', '.join(p.allowed_ips)}\n\n"
        for p in present.peers.values()
    )
    private = (state_dir / "wg.key").read_text().strip()
    conf = workdir / "wg.conf"
    syncconf = []
    for n in range(min(changes, 20)):
        extra_peer = f"[Peer]\nPublicKey = {key()}\nAllowedIPs = {address(peers + 100 + n)}\n\n"
        start = time.perf_counter()
        header = f"[Interface]\nPrivateKey = {private}\nListenPort = 51820\n\n"
        conf.write_text(header + base + extra_peer)
        subprocess.run(["wg", "syncconf", iface, str(conf)], check=True)  # noqa: ASYNC221
        syncconf.append(time.perf_counter() - start)
    print(f"single-peer add on {peers} peers (wg syncconf): {figures(syncconf)}")
    ratio = statistics.median(syncconf) / statistics.median(adds)
    print(f"ratio syncconf / ApplyDelta (median):         {ratio:8.1f}x")
    target_ok = statistics.median(adds) <= 0.005 and full_n <= 2.0
    verdict = "met" if target_ok else "NOT met"
    print(f"targets (median <= 5 ms, full {peers // 1000}k <= 2 s):       {verdict}")
    await server.stop(grace=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=10000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        with tempfile.TemporaryDirectory(prefix="wgbench") as tmp:
            asyncio.run(bench(args.peers, args.changes, Path(tmp), args.inside))
        return 0
    if os.geteuid() != 0:
        print("run as root: the benchmark makes a network namespace", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:6]
    ns, iface = f"wgb{tag}", f"wgb{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                __file__,
                "--inside",
                iface,
                "--peers",
                str(args.peers),
                "--changes",
                str(args.changes),
            ],
            check=False,
            cwd=ROOT,
        ).returncode
    finally:
        pids = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        Path(f"/var/run/wireguard/{iface}.sock").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
