"""`vpn-node-agent` as a real process (``python -m node_agent``): csr, run, signals, the
state-dir lock, and every refusal in one line."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from controller.nodes.client import NodeRpcError
from node_agent import __version__
from proto.nodeapi.v1 import node_agent_pb2 as pb
from tests.agent_support import Cluster

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0
WG_KEY = base64.b64encode(bytes(range(32))).decode()
STOP_TIMEOUT = 10.0


def agent_env() -> dict[str, str]:
    """The current environment without the agent's own settings, importing from the repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPN_NODE_AGENT_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent", *args],
        cwd=ROOT,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vpn-node-agent: error: "), result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- one-shot commands ----------------------------------------------------------------------


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"vpn-node-agent {__version__}"


def test_help_mentions_the_commands() -> None:
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    assert "csr" in result.stdout
    assert "not implemented" not in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert "run" in result.stderr  # the help, on stderr
    assert "Traceback" not in result.stderr


def test_csr_prints_a_csr_and_keeps_the_key_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"

    result = cli("csr", "--state-dir", str(state_dir), "--node-id", "n1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert result.stdout.rstrip().endswith("-----END CERTIFICATE REQUEST-----")
    csr = x509.load_pem_x509_csr(result.stdout.encode())
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1.nodes.vpnbot.internal"]
    key = state_dir / "agent.key"
    assert key.is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()

    # Asked again, the key is kept: the CSR carries the same public key.
    again = cli("csr", "--state-dir", str(state_dir), "--node-id", "n1")
    assert again.returncode == 0, again.stderr
    assert x509.load_pem_x509_csr(again.stdout.encode()).public_key() == csr.public_key()


def test_csr_refuses_an_invalid_node_id(tmp_path: Path) -> None:
    line = one_line_error(cli("csr", "--state-dir", str(tmp_path / "s"), "--node-id", "Bad_Id"))
    assert "invalid node id" in line


def test_run_without_certificates_names_the_missing_files(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"

    line = one_line_error(
        cli("run", "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{free_port()}")
    )

    for name in ("ca.pem", "agent.key", "agent.pem"):
        assert str(state_dir / name) in line
    assert "enroll" in line


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:", ":50051"])
def test_run_refuses_a_bad_listen_value(tmp_path: Path, listen: str) -> None:
    line = one_line_error(cli("run", "--state-dir", str(tmp_path / "state"), "--listen", listen))
    assert "HOST:PORT" in line


# --- the serving agent ----------------------------------------------------------------------


@dataclass
class AgentProcess:
    process: asyncio.subprocess.Process
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait(self, seconds: float) -> int:
        return await asyncio.wait_for(self.process.wait(), seconds)


Spawn = Callable[..., Awaitable[AgentProcess]]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``python -m node_agent ARGS``; every process is killed at teardown."""
    started: list[AgentProcess] = []

    async def start(*args: str) -> AgentProcess:
        stderr_path = tmp_path / f"agent-{len(started)}.stderr"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "node_agent",
                *args,
                cwd=ROOT,
                env=agent_env(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        started.append(AgentProcess(process, stderr_path))
        return started[-1]

    try:
        yield start
    finally:
        for agent in started:
            if agent.process.returncode is None:
                agent.process.kill()
            await agent.process.wait()


@pytest.fixture
def enrolled(tmp_path: Path) -> tuple[Cluster, Path, Path]:
    """A cluster, an enrolled state dir for node n1 and a config with a fake backend."""
    cluster = Cluster.create()
    state_dir = tmp_path / "state"
    cluster.enroll(state_dir, "n1")
    config = tmp_path / "cfg.toml"
    config.write_text('usage_interval = 3600\n\n[backends.fake]\ntype = "fake"\n')
    return cluster, state_dir, config


async def wait_until_serving(cluster: Cluster, port: int, agent: AgentProcess) -> pb.AgentInfo:
    deadline = time.monotonic() + START_TIMEOUT
    async with cluster.client(f"127.0.0.1:{port}", "n1", timeout=2) as client:
        while True:
            if agent.process.returncode is not None:
                pytest.fail(f"the agent exited with {agent.process.returncode}: {agent.stderr}")
            try:
                return await client.info()
            except NodeRpcError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the agent did not serve within {START_TIMEOUT} s: {agent.stderr}")
                await asyncio.sleep(0.2)


async def test_run_serves_and_stops_cleanly_on_sigterm(
    spawn: Spawn, enrolled: tuple[Cluster, Path, Path]
) -> None:
    cluster, state_dir, config = enrolled
    port = free_port()
    agent = await spawn(
        "run",
        "--state-dir",
        str(state_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--config",
        str(config),
    )

    info = await wait_until_serving(cluster, port, agent)
    first_boot = info.boot_id
    assert info.node_id == "n1"
    assert info.agent_version == __version__
    assert [(b.name, b.kind, b.status.health) for b in info.backends] == [
        ("fake", pb.BACKEND_KIND_FAKE, pb.BACKEND_HEALTH_OK)
    ]
    client_spec = pb.WireGuardPeer(public_key=WG_KEY, allowed_ips=["10.8.0.2/32"])
    state = pb.DesiredState(
        backends=[pb.BackendState(name="fake", clients=[pb.Client(id="c1", wireguard=client_spec)])]
    )
    async with cluster.client(f"127.0.0.1:{port}", "n1", timeout=5) as client:
        assert (await client.apply_state(3, state)).applied_revision == 3

    agent.process.send_signal(signal.SIGTERM)
    code = await agent.wait(STOP_TIMEOUT)

    assert code == 0, agent.stderr
    assert "Traceback" not in agent.stderr
    assert "stopping" in agent.stderr

    # The lock is released and the applied state persisted: a new process serves it.
    again = await spawn(
        "run",
        "--state-dir",
        str(state_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--config",
        str(config),
    )
    info = await wait_until_serving(cluster, port, again)
    assert info.applied_revision == 3
    assert info.boot_id != first_boot
    assert info.backends[0].status.clients == 1
    again.process.send_signal(signal.SIGINT)  # Ctrl+C stops it cleanly too
    assert await again.wait(STOP_TIMEOUT) == 0, again.stderr
    assert "Traceback" not in again.stderr


async def test_a_second_agent_on_the_same_state_dir_is_refused(
    spawn: Spawn, enrolled: tuple[Cluster, Path, Path]
) -> None:
    cluster, state_dir, config = enrolled
    port = free_port()
    first = await spawn(
        "run",
        "--state-dir",
        str(state_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--config",
        str(config),
    )
    await wait_until_serving(cluster, port, first)

    second = await spawn(
        "run",
        "--state-dir",
        str(state_dir),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--config",
        str(config),
    )
    code = await second.wait(START_TIMEOUT)

    assert code == 1, second.stderr
    assert "another agent is running" in second.stderr
    assert "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if "error:" in line]
    assert errors == [f"vpn-node-agent: error: another agent is running with {state_dir}"]
    # The first one is unharmed.
    assert first.process.returncode is None
    assert (await wait_until_serving(cluster, port, first)).node_id == "n1"
