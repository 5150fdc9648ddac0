"""Network namespaces as test hosts: two hosts joined by a veth pair (see shared LAB notes).

Names are unique per run: the UAPI socket directory /var/run/wireguard is shared by all
namespaces, and a developer may run their own namespaces beside the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from tests.conftest import need

REQUIRED_PROGRAMS = ("ip", "wireguard-go", "wg", "wg-quick", "ping")


def require_lab() -> None:
    """Skip (fail under VPNBOT_TEST_STRICT) unless this machine can run the e2e tests."""
    need(os.geteuid() == 0, "network namespaces need root")
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    need(
        not missing,
        f"missing programs: {', '.join(missing)} (apt-get install "
        "--no-install-recommends wireguard-go wireguard-tools iproute2 iputils-ping)",
    )
    need(os.path.exists("/dev/net/tun"), "/dev/net/tun is missing")


def run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Host:
    name: str
    address: str

    def exec(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout)

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def ping(self, address: str, *, count: int = 1, wait: float = 1, size: int = 56) -> bool:
        result = self.exec(
            "ping",
            "-c",
            str(count),
            "-W",
            str(wait),
            "-i",
            "0.2",
            "-s",
            str(size),
            address,
            check=False,
            timeout=count * (wait + 1) + 5,
        )
        return result.returncode == 0

    def ping_until(self, address: str, *, within: float) -> float:
        """Seconds until a ping through answers; raises AssertionError after ``within``."""
        start = time.monotonic()
        while time.monotonic() - start < within:
            if self.ping(address):
                return time.monotonic() - start
        raise AssertionError(f"{self.name}: no answer from {address} within {within:g} s")


class Lab:
    """A server host and a client host on 10.99.0.0/24, torn down completely."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.server = Host(f"vb{self.tag}s", "10.99.0.1")
        self.client = Host(f"vb{self.tag}c", "10.99.0.2")

    def iface(self, suffix: str) -> str:
        name = f"vb{self.tag}{suffix}"
        assert len(name) <= 15
        return name

    def __enter__(self) -> Lab:
        veth_s, veth_c = self.iface("vs"), self.iface("vc")
        try:
            for host in (self.server, self.client):
                run(["ip", "netns", "add", host.name])
            run(["ip", "link", "add", veth_s, "type", "veth", "peer", "name", veth_c])
            for host, veth in ((self.server, veth_s), (self.client, veth_c)):
                run(["ip", "link", "set", veth, "netns", host.name])
                run(["ip", "-n", host.name, "addr", "add", f"{host.address}/24", "dev", veth])
                run(["ip", "-n", host.name, "link", "set", "lo", "up"])
                run(["ip", "-n", host.name, "link", "set", veth, "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in (self.server, self.client):
            pids = run(["ip", "netns", "pids", host.name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)
        for host in (self.server, self.client):
            run(["ip", "netns", "del", host.name], check=False)
        # wireguard-go leaves its socket behind when killed.
        for entry in (
            os.listdir("/var/run/wireguard") if os.path.isdir("/var/run/wireguard") else ()
        ):
            if entry.startswith(f"vb{self.tag}"):
                os.unlink(os.path.join("/var/run/wireguard", entry))
