"""OpenVPN through the whole system: the controller (services + hub in the test process, on
SQLite) drives a real ``vpn-node-agent run`` with the OpenVPN backend in the server namespace;
the profile the controller exports (issued by the node's own CA) connects a real ``openvpn``
client in the client namespace, and suspending the subscription kills the live session and
refuses the reconnect — asserted on the server's management state and log, not on the
client's exit code (which says nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db import migrate
from controller.db.engine import create_engine
from controller.db.models import Server
from controller.domain.enums import VpnProtocol
from controller.services import Actor
from node_agent.backends.openvpn.management import ManagementClient, ManagementError
from tests.conftest import need
from tests.e2e.controller_lab import AgentProcess, RootLink, enroll_node
from tests.e2e.netns import Lab, require_lab
from tests.hub_support import ControllerHarness

TELEGRAM_ID = 730_000_001
SUBNET = "10.79.0.0/24"
SERVER_TUNNEL = "10.79.0.1"


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_lab()
    need(
        subprocess.run(["which", "openvpn"], capture_output=True).returncode == 0,
        "openvpn is missing (apt-get install --no-install-recommends openvpn)",
    )
    with Lab() as lab:
        yield lab


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tails(*logs: Path, lines: int = 40) -> str:
    """The last lines of these logs (management chatter left out), for a failure message."""
    parts = []
    for log in logs:
        try:
            # openvpn logs every management command: those lines would hide the rest.
            text = [
                line
                for line in log.read_text(errors="replace").splitlines()
                if "MANAGEMENT: " not in line
            ][-lines:]
        except OSError as exc:
            text = [f"(unreadable: {exc})"]
        parts.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(parts)


async def _server(harness: ControllerHarness, server_id: int) -> Server:
    async with harness.uow_factory() as uow:
        found = await uow.nodes.get(server_id)
        assert found is not None
        return found


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'controller.db'}")
    try:
        await migrate.upgrade(engine)
        yield engine
    finally:
        await engine.dispose()


# The hub runs in this event loop: blocking calls (ping) go to threads so it can work.
async def test_exported_profile_connects_and_suspension_cuts_it_off(
    lab: Lab, tmp_path: Path
) -> None:
    interface = lab.iface("ov")
    vpn_port = _free_udp_port()
    client_log = tmp_path / "client.log"
    client: subprocess.Popen[bytes] | None = None
    async with _sqlite(tmp_path) as engine:
        with RootLink(lab, lab.server) as link:
            async with ControllerHarness.open(engine, tmp_path) as harness:
                node = await enroll_node(
                    harness,
                    "ovpn-1",
                    address=link.host_address,
                    port=50051,
                    state_dir=tmp_path / "agent-state",
                )
                # The agent is dialled over the root link; clients reach the node at its
                # public address (here: the server end of the lab's veth pair).
                async with harness.uow_factory() as uow:
                    await uow.nodes.update_fields(
                        node.server_id,
                        supported_protocols=[VpnProtocol.OPENVPN.value],
                        domain=lab.server.address,
                    )
                    await uow.commit()
                config_file = tmp_path / "agent.toml"
                config_file.write_text(
                    f'state_dir = "{node.state_dir}"\n'
                    f'listen = "{node.target}"\n'
                    "usage_interval = 1\n"
                    "[backends.ovpn]\n"
                    'type = "openvpn"\n'
                    f"port = {vpn_port}\n"
                    'transport = "udp"\n'
                    f'interface = "{interface}"\n'
                    f'subnet = "{SUBNET}"\n'
                    "push_redirect_gateway = false\n"
                    "keepalive = [1, 5]\n"
                )
                agent = AgentProcess(lab.server, config_file, tmp_path / "agent.log")
                management = ManagementClient(node.state_dir / "openvpn-ovpn" / "management.sock")
                server_log = node.state_dir / "openvpn-ovpn" / "openvpn.log"
                try:
                    agent.start()

                    async def reports_openvpn() -> bool:
                        server = await _server(harness, node.server_id)
                        return bool(server.openvpn_config)

                    await harness.wait_for(
                        reports_openvpn, within=60, what="the node's OpenVPN params"
                    )

                    await harness.services.subscriptions.grant(
                        Actor.cli(), TELEGRAM_ID, days=30, devices=1
                    )
                    rendered = await harness.services.configs.export(
                        TELEGRAM_ID, VpnProtocol.OPENVPN
                    )
                    assert rendered.filename.endswith(".ovpn")
                    assert f"remote {lab.server.address} {vpn_port} udp" in rendered.text
                    [config] = await harness.services.configs.list_for_user(TELEGRAM_ID)
                    common_name = config.client_id

                    # The hub puts the client in the node's enabled set.
                    async def enabled() -> bool:
                        server = await _server(harness, node.server_id)
                        return server.applied_revision >= server.desired_revision

                    await harness.wait_for(enabled, within=30, what="the node to converge")

                    profile = tmp_path / "client.ovpn"
                    profile.write_text(rendered.text)
                    profile.chmod(0o600)
                    # The profile as a user imports it (its own `dev tun`: tun devices are
                    # per namespace).
                    client = subprocess.Popen(  # noqa: ASYNC220 - a daemon-like child
                        lab.client.argv(
                            "openvpn",
                            "--config",
                            str(profile),
                            "--log",
                            str(client_log),
                            "--verb",
                            "3",
                            # A refused client retries after its handshake window (60 s by
                            # default): shorter here, so the re-enabled client is back soon.
                            "--hand-window",
                            "8",
                        ),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    await asyncio.to_thread(lab.client.ping_until, SERVER_TUNNEL, within=30)

                    # The server lists the session (read on a separate management connection;
                    # a CI run once read none right after the first ping answered, so the read
                    # is retried briefly and the logs are shown if it never appears).
                    async def listed() -> bool:
                        with contextlib.suppress(ManagementError, OSError):
                            names = [s.common_name for s in await management.sessions()]
                            return names == [common_name]
                        return False

                    try:
                        await harness.wait_for(listed, within=10, what="the session listed")
                    except AssertionError as exc:
                        logs = _tails(tmp_path / "agent.log", server_log, client_log)
                        pytest.fail(f"{exc}\n{logs}")

                    # Suspension: the hub removes the client; the node revokes it and kills
                    # the live session at once.
                    await harness.services.subscriptions.suspend(
                        Actor.cli(), config.subscription_id
                    )

                    async def session_gone() -> bool:
                        with contextlib.suppress(ManagementError, OSError):
                            return all(
                                s.common_name != common_name for s in await management.sessions()
                            )
                        return False

                    await harness.wait_for(session_gone, within=20, what="the session to be killed")
                    # The client retries on its own; the server refuses its certificate.
                    await harness.wait_for(
                        lambda: "certificate revoked" in server_log.read_text(errors="replace"),
                        within=30,
                        what="the server to refuse the revoked certificate",
                    )
                    assert not await asyncio.to_thread(
                        lab.client.ping, SERVER_TUNNEL, count=1, wait=1
                    )
                    assert await session_gone()

                    # Resumed: the same profile works again (the CRL no longer lists it).
                    await harness.services.subscriptions.resume(Actor.cli(), config.subscription_id)
                    await asyncio.to_thread(lab.client.ping_until, SERVER_TUNNEL, within=90)
                finally:
                    if client is not None:
                        client.kill()
                        client.wait(timeout=10)
                    agent.kill()
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
