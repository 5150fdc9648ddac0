"""`UapiDriver.ensure_device` starting a real wireguard-go, in a throwaway network namespace.

wireguard-go daemonizes, and the device must outlive the agent: the daemon must not hold the
agent's pipes (with ``LOG_LEVEL=verbose`` in the agent's environment it would, and starting
the device would wait for it to exit) and must not sit in the agent's session, where a
Ctrl+C or a signal to the agent's process group would take every client down with it.

The driver runs in a child Python inside the namespace (the tun device is created there); the
namespace, the device and the daemon's UAPI socket are removed afterwards whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
SOCKET_DIR = Path("/var/run/wireguard")
START_TIMEOUT = 10.0  # what the driver may wait for the socket; starting must take far less
PROMPTLY = 5.0
LISTEN_PORT = 51999

# Runs inside the namespace: start the device like the agent does, then talk to it.
SCRIPT = """
import asyncio, json, os, sys, time
from node_agent.backends.wireguard.uapi import UapiDriver

async def main(ifname, start_timeout, listen_port):
    driver = UapiDriver(start_timeout=start_timeout)
    started = time.monotonic()
    try:
        created = await driver.ensure_device(ifname)
    except Exception as exc:
        report = {"error": repr(exc), "seconds": time.monotonic() - started}
    else:
        seconds = time.monotonic() - started
        await driver.set(ifname, listen_port=listen_port)
        device = await driver.get(ifname)
        report = {
            "error": None,
            "created": created,
            "seconds": seconds,
            "listen_port": device.listen_port,
            "peers": len(device.peers),
        }
    report["sid"] = os.getsid(0)
    print(json.dumps(report))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


def run(argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Namespace:
    name: str
    ifname: str

    def pids(self) -> list[int]:
        out = run(["ip", "netns", "pids", self.name]).stdout.split()
        return [int(pid) for pid in out if pid.isdigit()]

    def daemon_pids(self) -> list[int]:
        """Processes in the namespace running ``wireguard-go <ifname>``."""
        found = []
        for pid in self.pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"wireguard-go") for a in argv) and self.ifname.encode() in argv:
                found.append(pid)
        return found


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    need(os.geteuid() == 0, "network namespaces and tun devices need root")
    need(shutil.which("wireguard-go") is not None, "wireguard-go is not on PATH")
    need(shutil.which("ip") is not None, "ip (iproute2) is not on PATH")
    need(os.path.exists("/dev/net/tun"), "/dev/net/tun is missing")
    tag = uuid.uuid4().hex[:6]
    ns = Namespace(f"vbt{tag}", f"wgt{tag}")
    assert len(ns.ifname) <= 15
    created = run(["ip", "netns", "add", ns.name])
    need(created.returncode == 0, f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        yield ns
    finally:
        # wireguard-go exits when its tun device goes; whatever is left in the namespace
        # was started by this test.
        run(["ip", "-n", ns.name, "link", "del", ns.ifname])
        deadline = time.monotonic() + 2
        while ns.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in ns.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run(["ip", "netns", "del", ns.name])
        with contextlib.suppress(FileNotFoundError):
            (SOCKET_DIR / f"{ns.ifname}.sock").unlink()


def test_wireguard_go_starts_promptly_in_a_session_of_its_own(
    namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In the agent's environment this would hand the daemon our pipes (and keep them open).
    monkeypatch.setenv("LOG_LEVEL", "verbose")

    result = run(
        [
            "ip",
            "netns",
            "exec",
            namespace.name,
            sys.executable,
            "-c",
            SCRIPT,
            namespace.ifname,
            str(START_TIMEOUT),
            str(LISTEN_PORT),
        ],
        timeout=START_TIMEOUT + 30,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["error"] is None, report
    assert report["created"] is True
    assert report["seconds"] < PROMPTLY
    assert report["listen_port"] == LISTEN_PORT  # the device answers set and get
    assert report["peers"] == 0
    assert (SOCKET_DIR / f"{namespace.ifname}.sock").exists()

    # The daemon outlived the driver's process, in a session (and group) of its own.
    daemons = namespace.daemon_pids()
    assert len(daemons) == 1, f"processes in the namespace: {namespace.pids()}"
    daemon = daemons[0]
    assert os.getsid(daemon) not in {os.getsid(0), report["sid"]}
    assert os.getpgid(daemon) != os.getpgid(0)
