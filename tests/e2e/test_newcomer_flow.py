"""The README's newcomer flow end to end, with nothing but the real programs.

In a clean working directory on the embedded SQLite default: ``vpnbot run`` in the server
namespace, ``vpnbot node add``, ``vpn-node-agent enroll`` and ``run`` (real wireguard-go),
``vpnbot user grant``, ``vpnbot config export`` — and the exported file, unedited, brings up
a real WireGuard client (wg-quick) in the client namespace that pings through the tunnel.
Then the controller stops while the client keeps pinging: not one packet may be lost, since
the node serves its clients without a controller.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.controller_lab import (
    AGENT,
    VPNBOT,
    AgentProcess,
    agent_toml,
    clean_env,
    stub_resolvconf,
    wait_until,
)
from tests.e2e.netns import Lab, require_lab

TELEGRAM_ID = "123456789"
SERVER_TUNNEL = "10.77.0.1"
API_PORT, ENROLL_PORT = 18080, 18443
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Run inside the server namespace: until the API answers /healthz and the enrollment
# listener (started once the API listens) accepts connections.
READY_PROBE = """
import socket, sys, time, urllib.request
api, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + float(sys.argv[4])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(api, timeout=2) as response:
            assert response.status == 200, response.status
        socket.create_connection((host, port), timeout=2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_lab()
    with Lab() as lab:
        yield lab


class Newcomer:
    """The operator at a terminal: every command from the same working directory and
    environment, so all share ./data (database and master key)."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab, self.workdir = lab, workdir
        self.env = clean_env(
            VPNBOT_ENROLLMENT__HOST=lab.server.address,
            VPNBOT_ENROLLMENT__PORT=str(ENROLL_PORT),
            VPNBOT_ENROLLMENT__PUBLIC_URL=f"https://{lab.server.address}:{ENROLL_PORT}",
            VPNBOT_HUB__POLL_SECONDS="0.5",
            VPNBOT_VPN__WIREGUARD_ALLOWED_IPS="10.77.0.0/24",
        )

    def vpnbot(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*VPNBOT, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
        return result

    def start_controller(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self.lab.server.argv(
                    *VPNBOT, "run", "--host", self.lab.server.address, "--port", str(API_PORT)
                ),
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def node_row(self, name: str) -> list[str]:
        for line in self.vpnbot("node", "list").stdout.splitlines():
            cells = line.split()
            if cells and cells[0] == name:
                return cells
        return []


def token_from(output: str) -> str:
    lines = output.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith("enrollment token")]
    token = lines[index + 1].strip()
    assert token and " " not in token, output
    return token


def stop_group(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_newcomer_flow_serves_a_real_client_and_survives_the_controller(
    lab: Lab, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    user = Newcomer(lab, workdir)
    controller_log = tmp_path / "controller.log"
    state_dir = tmp_path / "agent-state"
    config = agent_toml(
        tmp_path / "agent.toml",
        state_dir=state_dir,
        listen=f"{lab.server.address}:50051",  # `node add`'s default --grpc-port
        interface=lab.iface("wg"),
        addresses=[f"{SERVER_TUNNEL}/24"],
    )
    agent = AgentProcess(lab.server, config, tmp_path / "agent.log")
    client_iface = lab.iface("c")
    client_conf = tmp_path / f"{client_iface}.conf"
    wg_env = stub_resolvconf(tmp_path / "bin")
    controller: subprocess.Popen[bytes] | None = None
    pinger: subprocess.Popen[str] | None = None
    try:
        # a. The controller, in the server namespace, with the embedded SQLite default.
        controller = user.start_controller(controller_log)
        probe = subprocess.run(
            lab.server.argv(
                sys.executable,
                "-c",
                READY_PROBE,
                f"http://{lab.server.address}:{API_PORT}/healthz",
                lab.server.address,
                str(ENROLL_PORT),
                "60",
            ),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert probe.returncode == 0, (
            f"controller not ready (exit {controller.poll()}):\n{controller_log.read_text()}"
        )
        assert (workdir / "data" / "vpnbot.db").is_file()

        # b. The node, and its single-use token.
        added = user.vpnbot("node", "add", "node-1", "--address", lab.server.address)
        token = token_from(added.stdout)
        assert user.node_row("node-1")[4:6] == ["not", "enrolled"]

        # c. Enrollment from the node (over the HTTPS listener, CA pinned by the token).
        enrolled = subprocess.run(
            lab.server.argv(*AGENT, "enroll", "--token", token, "--state-dir", str(state_dir)),
            cwd=workdir,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        assert {"agent.key", "agent.pem", "ca.pem"} <= {p.name for p in state_dir.iterdir()}

        # d. The agent with a real WireGuard backend.
        agent.start()

        # e. The hub finds it; access and a config with its QR code.
        wait_until(
            lambda: "online" in user.node_row("node-1"),
            within=30,
            what="node-1 online in `vpnbot node list`",
            step=0.5,
        )
        granted = user.vpnbot("user", "grant", TELEGRAM_ID, "--days", "30")
        assert f"of {TELEGRAM_ID}: active until" in granted.stdout
        exported = user.vpnbot(
            "config",
            "export",
            TELEGRAM_ID,
            "--protocol",
            "wireguard",
            "--out",
            "client.conf",
            "--qr",
            "client.png",
        )
        assert "on node node-1 written to client.conf" in exported.stdout
        assert (workdir / "client.png").read_bytes().startswith(PNG_MAGIC)
        text = (workdir / "client.conf").read_text()
        assert f"Endpoint = {lab.server.address}:51820" in text
        assert re.search(r"^Address = 10\.77\.0\.\d+/32$", text, re.M), text
        assert (workdir / "client.conf").stat().st_mode & 0o777 == 0o600

        # f. A real WireGuard client from that file as it is (wg-quick wants IFACE.conf).
        shutil.copy2(workdir / "client.conf", client_conf)
        up = subprocess.run(
            lab.client.argv("wg-quick", "up", str(client_conf)),
            env=wg_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        took = lab.client.ping_until(SERVER_TUNNEL, within=20)
        print(f"the tunnel answered {took:.1f} s after wg-quick up")
        row = user.node_row("node-1")
        applied, desired = row[5].split("/")
        assert applied == desired and int(desired) >= 1, row

        # g. The controller stops while the client keeps pinging: no interruption.
        pinger = subprocess.Popen(
            lab.client.argv("ping", "-i", "0.2", "-c", "40", "-W", "1", SERVER_TUNNEL),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1.5)
        os.killpg(controller.pid, signal.SIGTERM)
        assert controller.wait(timeout=30) == 0, controller_log.read_text()
        controller = None
        assert pinger.poll() is None, "the ping must still be running after the controller stopped"
        output, _ = pinger.communicate(timeout=30)
        pinger = None
        assert re.search(r"40 packets transmitted, 40 received, 0% packet loss", output), output
        assert agent.alive(), "the agent must outlive the controller"

        log = controller_log.read_text()
        assert "Traceback" not in log
        assert "controller_stopped" in log
        assert "Traceback" not in (tmp_path / "agent.log").read_text()
    finally:
        if pinger is not None and pinger.poll() is None:
            pinger.kill()
            pinger.wait(timeout=10)
        stop_group(controller)
        agent.kill()
        subprocess.run(
            lab.client.argv("wg-quick", "down", str(client_conf)),
            env=wg_env,
            capture_output=True,
            timeout=30,
            check=False,
        )
