"""End to end with real WireGuard: the agent (wireguard-go through our UAPI driver) in one
network namespace, a real WireGuard client (wg-quick, falling back to wireguard-go) in
another, the controller's mTLS client in the test process talking to the agent over a unix
socket (unix sockets cross namespaces; the VPN traffic does not)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.nodes.client import NodeClient, NodeRpcError
from proto.nodeapi.v1 import node_agent_pb2 as pb
from tests.agent_support import Cluster
from tests.e2e.controller_lab import AgentProcess
from tests.e2e.netns import Lab, require_lab, run

NODE_ID = "node-e2e"
SERVER_TUNNEL, CLIENT_TUNNEL = "10.77.0.1", "10.77.0.2"


async def wait_for_agent(client: NodeClient, within: float = 20) -> pb.AgentInfo:
    deadline = time.monotonic() + within
    while True:
        try:
            return await client.info()
        except NodeRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def peer_state(public_key: str, client_id: str = "client-1") -> pb.DesiredState:
    return pb.DesiredState(
        backends=[
            pb.BackendState(
                name="wireguard",
                clients=[
                    pb.Client(
                        id=client_id,
                        wireguard=pb.WireGuardPeer(
                            public_key=public_key, allowed_ips=[f"{CLIENT_TUNNEL}/32"]
                        ),
                    )
                ],
            )
        ]
    )


async def usage_of(client: NodeClient, client_id: str) -> tuple[int, int]:
    """The cumulative counters the agent reports for a client (read, never acknowledged)."""
    page = await client.read_usage()
    totals = [(e.rx_bytes, e.tx_bytes) for e in page.entries if e.client_id == client_id]
    return totals[-1] if totals else (0, 0)


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_lab()
    with Lab() as lab:
        yield lab


async def test_wireguard_end_to_end(lab: Lab, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    cluster = Cluster.create()
    cluster.enroll(state_dir, NODE_ID)
    socket = tmp_path / "agent.sock"
    server_iface = lab.iface("wg")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{state_dir}"\n'
        f'listen = "unix:{socket}"\n'
        "usage_interval = 1\n"
        "[backends.wireguard]\n"
        f'interface = "{server_iface}"\n'
        "listen_port = 51820\n"
        f'addresses = ["{SERVER_TUNNEL}/24"]\n'
    )
    agent = AgentProcess(lab.server, config, tmp_path / "agent.log")
    client_iface = lab.iface("c")
    conf = tmp_path / f"{client_iface}.conf"
    private = run(["wg", "genkey"]).stdout.strip()
    public = subprocess.run(
        ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        agent.start()
        async with cluster.client(f"unix:{socket}", NODE_ID) as controller:
            info = await wait_for_agent(controller)
            (backend,) = info.backends
            assert backend.kind == pb.BACKEND_KIND_WIREGUARD
            assert backend.status.health == pb.BACKEND_HEALTH_OK
            params = backend.wireguard
            assert params.addresses == [f"{SERVER_TUNNEL}/24"]

            # The client, configured only from what the agent reported.
            conf.write_text(
                "[Interface]\n"
                f"PrivateKey = {private}\n"
                f"Address = {CLIENT_TUNNEL}/32\n\n"
                "[Peer]\n"
                f"PublicKey = {params.public_key}\n"
                f"Endpoint = {lab.server.address}:{params.listen_port}\n"
                "AllowedIPs = 10.77.0.0/24\n"
            )
            lab.client.exec("wg-quick", "up", str(conf))
            assert not lab.client.ping(SERVER_TUNNEL), "no peer yet: the tunnel must not answer"

            result = await controller.apply_state(1, peer_state(public))
            assert result.applied_revision == 1
            assert result.backends[0].added == 1
            lab.client.ping_until(SERVER_TUNNEL, within=10)

            # Traffic shows up as cumulative usage.
            assert lab.client.ping(SERVER_TUNNEL, count=10, size=1000)
            rx1, tx1 = await usage_of(controller, "client-1")
            assert rx1 > 10_000 and tx1 > 10_000

            # A desired state without the peer stops it.
            await controller.apply_state(2, pb.DesiredState())
            assert not lab.client.ping(SERVER_TUNNEL, count=2)
            peers = lab.server.exec("wg", "show", server_iface, "peers").stdout.split()
            assert peers == []

            # Back again; then the agent goes away and the VPN keeps serving.
            # The re-added peer has no session on the server; the client finds out and
            # re-handshakes on its own (WireGuard's rekey timeout, ~15 s).
            await controller.apply_state(3, peer_state(public))
            lab.client.ping_until(SERVER_TUNNEL, within=40)
            rx2, tx2 = await usage_of(controller, "client-1")
            assert rx2 >= rx1 and tx2 >= tx1

        assert agent.stop() == 0
        assert lab.client.ping(SERVER_TUNNEL, count=3), (
            "the VPN must keep serving without its agent"
        )

        # The device is lost while the agent is down (a crash, a reboot)...
        lab.server.exec("ip", "link", "del", server_iface)
        assert not lab.client.ping(SERVER_TUNNEL)

        # ...and the agent restores it from its own state, with no controller involved.
        agent.start()
        took = lab.client.ping_until(SERVER_TUNNEL, within=45)
        print(f"tunnel answered again {took:.1f} s after the agent restarted")
        assert lab.client.ping(SERVER_TUNNEL, count=10, size=1000)

        async with cluster.client(f"unix:{socket}", NODE_ID) as controller:
            info = await wait_for_agent(controller)
            assert info.applied_revision == 3
            rx3, tx3 = await usage_of(controller, "client-1")
            # Counters survived the restart and the device re-creation, and kept growing.
            assert rx3 > rx2 + 10_000 and tx3 > tx2 + 10_000
        assert agent.stop() == 0
        log = (tmp_path / "agent.log").read_text()
        assert "Traceback" not in log
    finally:
        agent.kill()
        lab.client.exec("wg-quick", "down", str(conf), check=False)
