"""End to end with real OpenVPN: the backend runs in the test process and starts a real
``openvpn`` server in the server namespace (``command_prefix = ip netns exec``); a real
``openvpn`` client in the client namespace connects with the profile ``issue_client``
returned, plus the ``remote`` line the controller would put in front.

The management socket and the state directory are plain files, shared across namespaces, so
the backend reaches the server's management interface from the root namespace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from node_agent.backends.base import Counters, Health
from node_agent.backends.openvpn.backend import OpenVpnBackend
from node_agent.config import OpenVpnConfig
from node_agent.ledger import UsageLedger
from node_agent.model import Client, OpenVpnClient
from proto.nodeapi.v1 import node_agent_pb2 as pb
from tests.agent_support import Cluster, running_agent
from tests.conftest import need
from tests.e2e.netns import Host, Lab, require_lab

SERVER_TUNNEL = "10.93.0.1"
BACKEND = "ovpn"
NODE_ID = "node-ovpn-e2e"


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_lab()
    need(shutil.which("openvpn") is not None, "openvpn is not installed (apt-get install openvpn)")
    with Lab() as lab:
        yield lab


def spec_for(lab: Lab, port: int, **changes: object) -> OpenVpnConfig:
    return OpenVpnConfig.model_validate(
        {
            "type": "openvpn",
            "port": port,
            "interface": lab.iface("ov"),
            "subnet": "10.93.0.0/24",
            "push_redirect_gateway": False,
            "command_prefix": ["ip", "netns", "exec", lab.server.name],
            **changes,
        }
    )


class VpnClient:
    """A real openvpn client in a namespace, with its own log."""

    def __init__(self, host: Host, profile: Path, log: Path) -> None:
        self.host, self.profile, self.log = host, profile, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.host.argv(
                "openvpn", "--config", str(self.profile), "--log", str(self.log), "--verb", "3"
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.1)


async def ping(host: Host, address: str, *, within: float, count: int = 3) -> None:
    """Wait until a ping through the tunnel answers, then send ``count`` more."""
    await asyncio.to_thread(host.ping_until, address, within=within)
    assert await asyncio.to_thread(host.ping, address, count=count, size=1000)


def write_profile(path: Path, profile: str, port: int, transport: str = "udp") -> Path:
    # What the controller does with the profile: the node's address in front.
    path.write_text(f"remote 10.99.0.1 {port} {transport}\n{profile}")
    return path


async def test_issue_connect_count_revoke_and_readd(lab: Lab, tmp_path: Path) -> None:
    port = random.randint(20000, 29999)
    # A space in the state directory: every path openvpn reads (and the hook it runs) must
    # survive its config parser.
    backend = OpenVpnBackend(BACKEND, spec_for(lab, port), tmp_path / "s d")
    ledger = UsageLedger(tmp_path / "ledger.db")
    client = VpnClient(lab.client, tmp_path / "alice.ovpn", tmp_path / "client.log")

    def record(sample_counters: dict[str, Counters], epoch: str) -> None:
        ledger.record(BACKEND, epoch, sample_counters, dt.datetime.now(dt.UTC))

    try:
        await backend.start()
        report = await backend.apply([Client("client-1", OpenVpnClient("alice"))])
        assert (report.added, report.removed) == (1, 0)

        issued = await backend.issue_client("alice", 30)
        assert "remote " not in issued.profile
        write_profile(client.profile, issued.profile, port)
        client.start()
        await ping(lab.client, SERVER_TUNNEL, within=20)

        status = await backend.status()
        assert (status.health, status.clients, status.clients_online) == (Health.OK, 1, 1)
        first = await backend.usage()
        used = first.counters["client-1"]
        assert used.rx_bytes > 3000 and used.tx_bytes > 3000  # three 1000-byte pings each way
        record(dict(first.counters), first.epoch)

        # A reconnect (the server tells the client to restart): a new session whose counters
        # start from zero, yet the client's total goes on from where it was.
        sessions = await backend.management.sessions()
        async with backend.management.connect() as conn:
            await conn.command(f"client-kill {sessions[0].client_id}")

        async def reconnected() -> bool:
            now = await backend.management.sessions()
            return bool(now) and now[0].connected_since != sessions[0].connected_since

        await eventually(reconnected, within=20, what="the client to reconnect")
        await ping(lab.client, SERVER_TUNNEL, within=20)
        live = (await backend.management.sessions())[0]
        # The old session's final counts, left by the disconnect hook openvpn ran.
        [hook_file] = backend.spool.glob("*.session")
        assert hook_file.read_text().startswith(f"alice\t{sessions[0].connected_since}\t")
        second = await backend.usage()
        assert not list(backend.spool.glob("*.session"))  # counted, then removed
        assert second.epoch == first.epoch
        total = second.counters["client-1"]
        # The old session's bytes plus the new session's, each counted once (the slack is
        # the old session's last keepalive and the restart message, counted by the hook).
        assert used.rx_bytes + live.bytes_received <= total.rx_bytes
        assert total.rx_bytes <= used.rx_bytes + live.bytes_received + 1500
        assert used.tx_bytes + live.bytes_sent <= total.tx_bytes
        assert total.tx_bytes <= used.tx_bytes + live.bytes_sent + 1500
        record(dict(second.counters), second.epoch)

        # Disable: the CRL revokes the certificate and the live session goes at once.
        report = await backend.apply([])
        assert (report.removed, report.reset_clients) == (1, frozenset({"client-1"}))
        ledger.reset_baseline(BACKEND, report.reset_clients)
        assert not [s for s in await backend.management.sessions() if s.common_name == "alice"]

        # The client reconnects by itself and is refused: the server says why.
        async def refused() -> bool:
            return "certificate revoked" in backend.paths.log.read_text(errors="replace")

        await eventually(refused, within=20, what="the server to refuse the revoked client")
        assert not [s for s in await backend.management.sessions() if s.common_name == "alice"]
        assert (await backend.status()).clients_online == 0
        assert "client-1" not in (await backend.usage()).counters
        before_removal = ledger.totals(BACKEND)["client-1"]

        # Enable again: the same profile connects again (a fresh client process: the old
        # one waits out its handshake window before retrying).
        report = await backend.apply([Client("client-1", OpenVpnClient("alice"))])
        assert report.added == 1
        client.stop()
        client.start()
        await ping(lab.client, SERVER_TUNNEL, within=20)
        third = await backend.usage()
        assert third.counters["client-1"].rx_bytes > 0
        record(dict(third.counters), third.epoch)
        after = ledger.totals(BACKEND)["client-1"]
        assert after.rx_bytes > before_removal.rx_bytes
        assert after.tx_bytes > before_removal.tx_bytes
    finally:
        client.stop()
        ledger.close()
        await backend.process.stop()


async def test_tcp_transport(lab: Lab, tmp_path: Path) -> None:
    port = random.randint(50000, 59999)
    backend = OpenVpnBackend(BACKEND, spec_for(lab, port, transport="tcp"), tmp_path / "s")
    client = VpnClient(lab.client, tmp_path / "bob.ovpn", tmp_path / "client.log")
    try:
        await backend.start()
        await backend.apply([Client("client-2", OpenVpnClient("bob"))])
        issued = await backend.issue_client("bob", 1)
        assert "proto tcp" in issued.profile.splitlines()
        write_profile(client.profile, issued.profile, port, "tcp")
        client.start()
        await ping(lab.client, SERVER_TUNNEL, within=20)
        assert (await backend.usage()).counters["client-2"].rx_bytes > 3000
    finally:
        client.stop()
        await backend.process.stop()


async def test_supervision_adopt_restart_and_recover(lab: Lab, tmp_path: Path) -> None:
    port = random.randint(30000, 39999)
    state_dir = tmp_path / "s"
    backend = OpenVpnBackend(BACKEND, spec_for(lab, port), state_dir)
    try:
        await backend.start()
        await backend.apply([])
        pid = backend.process.pid()
        assert pid is not None
        assert (await backend.status()).health is Health.OK

        # An agent restart: a new backend adopts the running server instead of restarting it.
        adopted = OpenVpnBackend(BACKEND, spec_for(lab, port), state_dir)
        await adopted.start()
        assert adopted.process.pid() == pid
        assert adopted.public_params() == backend.public_params()
        assert adopted.book.epoch == backend.book.epoch

        # A changed configuration restarts it.
        changed = OpenVpnBackend(BACKEND, spec_for(lab, port, keepalive=[5, 30]), state_dir)
        await changed.start()
        new_pid = changed.process.pid()
        assert new_pid is not None and new_pid != pid
        assert "keepalive 5 30" in changed.config_path.read_text()

        # Killed: DOWN with the reason, and start() brings it back.
        os.kill(new_pid, signal.SIGKILL)

        async def down() -> bool:
            return (await changed.status()).health is Health.DOWN

        await eventually(down, within=10, what="status DOWN")
        status = await changed.status()
        assert "not running" in status.reason
        await changed.start()
        status = await changed.status()
        assert status.health is Health.OK, status.reason
        assert changed.process.pid() not in (None, new_pid)
    finally:
        await backend.process.stop()


def enabled(*clients: tuple[str, str]) -> pb.DesiredState:
    return pb.DesiredState(
        backends=[
            pb.BackendState(
                name=BACKEND,
                clients=[
                    pb.Client(id=cid, openvpn=pb.OpenVpnClient(common_name=cn))
                    for cid, cn in clients
                ],
            )
        ]
    )


async def test_through_the_agent_and_its_grpc_api(lab: Lab, tmp_path: Path) -> None:
    """What the controller does: issue over gRPC, enable by desired state, read usage from
    the ledger, suspend by a delta; and the agent's reconcile restarts a dead server."""
    port = random.randint(40000, 49999)
    state_dir = tmp_path / "s"
    cluster = Cluster.create()
    cluster.enroll(state_dir, NODE_ID)
    backend = OpenVpnBackend(BACKEND, spec_for(lab, port), state_dir)
    client = VpnClient(lab.client, tmp_path / "alice.ovpn", tmp_path / "client.log")
    try:
        async with (
            running_agent(state_dir, {BACKEND: backend}) as running,
            cluster.client(running.target, NODE_ID) as node,
        ):
            [info] = (await node.info()).backends
            assert info.kind == pb.BACKEND_KIND_OPENVPN
            assert info.status.health == pb.BACKEND_HEALTH_OK
            assert (info.openvpn.port, info.openvpn.transport) == (port, "udp")
            assert info.openvpn.ca_certificate_pem == backend.pki.ca_certificate_pem

            issued = await node.issue_openvpn_client(BACKEND, "alice", 30)
            assert issued.common_name == "alice"
            await node.apply_state(1, enabled(("client-1", "alice")))
            write_profile(client.profile, issued.profile, port)
            client.start()
            await ping(lab.client, SERVER_TUNNEL, within=20)

            await running.agent.sample_usage()
            page = await node.read_usage()
            [entry] = [e for e in page.entries if e.client_id == "client-1"]
            assert entry.backend == BACKEND
            assert entry.rx_bytes > 3000 and entry.tx_bytes > 3000

            # Suspended: the session is gone as soon as the delta is answered.
            await node.apply_delta(1, 2, [pb.BackendDelta(name=BACKEND, remove=["client-1"])])
            assert await backend.management.sessions() == []

            async def refused() -> bool:
                return "certificate revoked" in backend.paths.log.read_text(errors="replace")

            await eventually(refused, within=20, what="the server to refuse the revoked client")
            client.stop()

            # The server dies: the agent reports it DOWN, and its reconcile brings it back.
            pid = backend.process.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            async def down() -> bool:
                [now] = (await node.info()).backends
                return now.status.health == pb.BACKEND_HEALTH_DOWN

            await eventually(down, within=10, what="the agent to report openvpn DOWN")
            await running.agent.reconcile()
            [info] = (await node.info()).backends
            assert info.status.health == pb.BACKEND_HEALTH_OK, info.status.reason
    finally:
        client.stop()
        await backend.process.stop()
