"""Helpers for the e2e tests that run the controller side too: real agent processes, the
real CLIs as subprocesses, a link from the root namespace into a lab host, and a stub
``resolvconf`` for wg-quick (client configs carry a ``DNS =`` line).

Builds on :mod:`tests.e2e.netns` without changing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.nodes.ca import load_controller_credentials
from controller.nodes.client import ClientCredentials
from controller.services import Actor
from controller.services.nodes import NodeDraft
from node_agent.tls import create_key_and_csr
from proto.nodeapi.v1.enrollment import EnrollmentToken
from tests.e2e.netns import Host, Lab, run
from tests.hub_support import ControllerHarness

REPO = Path(__file__).resolve().parents[2]
VPNBOT = [sys.executable, "-c", "from controller.cli.entry import entrypoint; entrypoint()"]
AGENT = [sys.executable, "-m", "node_agent"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any VPNBOT_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPNBOT_")}
    env.update(extra)
    return env


def agent_toml(
    path: Path,
    *,
    state_dir: Path,
    listen: str,
    interface: str,
    addresses: Sequence[str],
    listen_port: int = 51820,
) -> Path:
    """An agent config with one real WireGuard backend (wireguard-go through UAPI)."""
    quoted = ", ".join(f'"{a}"' for a in addresses)
    path.write_text(
        f'state_dir = "{state_dir}"\n'
        f'listen = "{listen}"\n'
        "[backends.wireguard]\n"
        'type = "wireguard"\n'
        'driver = "uapi"\n'
        f'interface = "{interface}"\n'
        f"listen_port = {listen_port}\n"
        f"addresses = [{quoted}]\n"
    )
    return path


class AgentProcess:
    """``vpn-node-agent run`` inside a lab host, in a session of its own (as under a
    terminal or a unit). wireguard-go, which the agent starts, lives in yet another session
    and survives whatever happens to the agent."""

    def __init__(self, host: Host, config: Path, log: Path) -> None:
        self.host, self.config, self.log = host, config, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.host.argv(*AGENT, "run", "--config", str(self.config)),
                cwd=REPO,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crash(self) -> int:
        """SIGKILL the agent process alone (``ip netns exec`` execs it: same pid)."""
        assert self.process is not None
        self.process.kill()
        code = self.process.wait(timeout=10)
        self.process = None
        return code

    def stop(self) -> int:
        """SIGTERM to the agent's process group; its exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        code = self.process.wait(timeout=20)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None


class RootLink:
    """A veth pair from the root namespace (where the test process runs) into a lab host:
    root side 10.98.X.1/30, host side 10.98.X.2/30, X random per run."""

    def __init__(self, lab: Lab, host: Host) -> None:
        self.host = host
        self.root_end, self.host_end = lab.iface("hr"), lab.iface("hn")
        self.octet = random.randint(0, 255)
        self.root_address = f"10.98.{self.octet}.1"
        self.host_address = f"10.98.{self.octet}.2"

    def __enter__(self) -> RootLink:
        try:
            run(["ip", "link", "add", self.root_end, "type", "veth", "peer", "name", self.host_end])
            run(["ip", "link", "set", self.host_end, "netns", self.host.name])
            run(["ip", "addr", "add", f"{self.root_address}/30", "dev", self.root_end])
            run(["ip", "link", "set", self.root_end, "up"])
            self.host.exec("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_end)
            self.host.exec("ip", "link", "set", self.host_end, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Deleting one end removes both.
        run(["ip", "link", "del", self.root_end], check=False)


def stub_resolvconf(directory: Path) -> dict[str, str]:
    """An environment whose PATH starts with a ``resolvconf`` that accepts and ignores
    everything (wg-quick calls it for the ``DNS =`` line; Debian's is not installed)."""
    directory.mkdir(parents=True, exist_ok=True)
    stub = directory / "resolvconf"
    stub.write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")
    stub.chmod(0o755)
    env = clean_env()
    env["PATH"] = f"{directory}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


def wait_until(predicate: object, *, within: float, what: str, step: float = 0.2) -> None:
    """Poll a plain predicate until it returns true; AssertionError naming ``what``."""
    assert callable(predicate)
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(step)


# -- the controller in the test process (tests.hub_support), agents as real processes ------


@dataclass(frozen=True)
class EnrolledNode:
    server_id: int
    name: str
    node_id: str
    state_dir: Path
    address: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"


async def enroll_node(
    harness: ControllerHarness, name: str, *, address: str, port: int, state_dir: Path
) -> EnrolledNode:
    """Add a node served at ``address:port`` and enroll ``state_dir`` for it through the real
    NodeService (what ``vpn-node-agent enroll`` does, without the HTTPS hop)."""
    server, token_text = await harness.services.nodes.add(
        Actor.cli(), NodeDraft(name=name, address=address, grpc_port=port)
    )
    token = EnrollmentToken.decode(token_text)
    state_dir.mkdir(parents=True, mode=0o700)  # noqa: ASYNC240 - a local directory
    csr = create_key_and_csr(state_dir, token.node_id)
    enrolled = await harness.services.nodes.enroll(token.secret, csr)
    (state_dir / "agent.pem").write_bytes(enrolled.certificate_pem)
    (state_dir / "ca.pem").write_bytes(enrolled.ca_certificate_pem)
    return EnrolledNode(server.id, name, token.node_id, state_dir, address, port)


async def controller_credentials(harness: ControllerHarness) -> ClientCredentials:
    """A controller certificate from the cluster CA in the harness's database (what the hub
    uses), for asking an agent directly."""
    credentials = await load_controller_credentials(harness.uow_factory, harness.box)
    assert credentials is not None, "no cluster CA yet: add a node first"
    return credentials


async def wg_dump(host: Host, interface: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``wg show IFACE dump`` in ``host``: public key -> (preshared key, allowed IPs)."""
    process = await asyncio.create_subprocess_exec(
        *host.argv("wg", "show", interface, "dump"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    peers = {}
    for line in out.decode().splitlines()[1:]:  # the first line is the interface
        public_key, preshared_key, _endpoint, allowed_ips, *_ = line.split("\t")
        ips = frozenset() if allowed_ips == "(none)" else frozenset(allowed_ips.split(","))
        peers[public_key] = ("" if preshared_key == "(none)" else preshared_key, ips)
    return peers
