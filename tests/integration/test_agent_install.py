"""The agent-only install, as a VPN host gets it: ``pip install 'vpnbot[agent]'`` into a fresh
virtual environment (built from this tree, not editable), then its ``vpn-node-agent`` serves a
controller over mTLS. Nothing of the controller's libraries may come with it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from controller.nodes.client import NodeRpcError
from tests.agent_support import Cluster

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER_ONLY = ("aiogram", "fastapi", "sqlalchemy", "asyncpg", "redis", "alembic", "uvicorn")


def _env() -> dict[str, str]:
    # Nothing of this checkout or of the test environment may leak into the agent's imports.
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {
        k: v for k, v in os.environ.items() if k not in drop and not k.startswith("VPN_NODE_AGENT_")
    }


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("agent-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(where)
    result = subprocess.run(
        [str(where / "bin/python"), "-m", "pip", "install", "-q", f"{ROOT}[agent]"],
        cwd=where,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not install vpnbot[agent]: {result.stderr[-2000:]}")
    return where


def run_in(venv_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_dir / "bin" / argv[0]), *argv[1:]],
        cwd=venv_dir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_agent_install_has_none_of_the_controller_libraries(agent_venv: Path) -> None:
    probe = (
        "import importlib.util, sys; "
        f"print(','.join(m for m in {CONTROLLER_ONLY!r} if importlib.util.find_spec(m)))"
    )
    result = run_in(agent_venv, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    # ... and what the agent does need is there.
    needed = "import grpc, google.protobuf, cryptography, psutil, pyroute2, httpx, structlog"
    assert run_in(agent_venv, "python", "-c", needed).returncode == 0


def test_the_agent_help_works_from_the_agent_install(agent_venv: Path) -> None:
    result = run_in(agent_venv, "vpn-node-agent", "--help")
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout and "enroll" in result.stdout


def test_the_controller_command_names_the_missing_install(agent_venv: Path) -> None:
    result = run_in(agent_venv, "vpnbot", "--help")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vpnbot: error: "), result.stderr
    assert "pip install 'vpnbot[controller]'" in lines[0]


async def test_the_agent_runs_from_the_agent_install(agent_venv: Path, tmp_path: Path) -> None:
    cluster = Cluster.create()
    state_dir = tmp_path / "state"
    cluster.enroll(state_dir, "n1")
    config = tmp_path / "agent.toml"
    config.write_text('usage_interval = 3600\n\n[backends.fake]\ntype = "fake"\n')
    sock = tmp_path / "agent.sock"
    log = (tmp_path / "agent.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(agent_venv / "bin/vpn-node-agent"),
        "run",
        "--state-dir",
        str(state_dir),
        "--listen",
        f"unix:{sock}",
        "--config",
        str(config),
        cwd=agent_venv,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        async with cluster.client(f"unix:{sock}", "n1", timeout=2) as client:
            while True:
                assert process.returncode is None, (tmp_path / "agent.log").read_text()
                try:
                    info = await client.info()
                    break
                except NodeRpcError:
                    assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
                    await asyncio.sleep(0.2)
        assert info.node_id == "n1"
        assert [b.name for b in info.backends] == ["fake"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
    assert sys.prefix != str(agent_venv)  # the agent ran from its own environment, not ours
