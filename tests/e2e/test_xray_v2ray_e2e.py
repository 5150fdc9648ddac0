"""End to end with a real core: v2ray 4.34 (the Xray API under the ``v2ray.core.`` prefix)
driven by our Xray backend inside a real Agent, a real v2ray VLESS client, and curl.

srv: the core, started by the backend's ``command`` (plain VLESS over TCP: v2ray has no
Reality), its API on the srv end of a veth link from the root namespace (the test process,
where the agent runs, reaches it there); an HTTP server with a random body on 203.0.113.10
(a public-looking address on srv's loopback) and another on 127.0.0.1. cli: a v2ray client
with a SOCKS inbound and our user's UUID; curl through it. The body is only reachable through
the tunnel, so a fetch that returns it went through the core as our user.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node_agent.agent import Agent
from node_agent.backends.base import Health
from node_agent.backends.xray import xray_config
from node_agent.backends.xray.backend import XrayBackend
from node_agent.config import XrayConfig
from node_agent.ledger import UsageLedger
from node_agent.model import Client, DesiredState, VlessUser
from node_agent.state import StateStore
from tests.conftest import need
from tests.e2e.controller_lab import RootLink, clean_env, wait_until
from tests.e2e.netns import Host, Lab, require_lab

BACKEND = "vless"
VLESS_PORT = 8443  # the namespaces are new per run: fixed ports cannot collide
API_PORT = 10085
WEB, WEB_PORT, LOOPBACK_PORT = "203.0.113.10", 8080, 8081
SOCKS = "127.0.0.1:1080"
BLOB_SIZE = 256 * 1024
CLIENT_ID = "client-a"


@dataclass
class Scene:
    lab: Lab
    link: RootLink
    tmp: Path
    blob_sha: str
    user_uuid: str


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    require_lab()
    missing = [p for p in ("v2ray", "curl") if shutil.which(p) is None]
    need(not missing, f"missing programs: {', '.join(missing)} (apt-get install v2ray curl)")
    blob = secrets.token_bytes(BLOB_SIZE)
    web = tmp_path / "web"
    web.mkdir()
    (web / "blob").write_bytes(blob)
    user_uuid = str(uuid.uuid4())
    with Lab() as lab, RootLink(lab, lab.server) as link:
        srv = lab.server
        srv.exec("ip", "addr", "add", f"{WEB}/32", "dev", "lo")
        for address, port in ((WEB, WEB_PORT), ("127.0.0.1", LOOPBACK_PORT)):
            _background(srv, tmp_path / f"http-{port}.log", "python3", "-m", "http.server",
                        "--bind", address, "--directory", str(web), str(port))  # fmt: skip
        client_config = tmp_path / "client.json"
        client_config.write_text(json.dumps(_client_config(lab.server.address, user_uuid)))
        _background(lab.client, tmp_path / "client.log", "v2ray", "-config", str(client_config))
        for address, port in ((WEB, WEB_PORT), ("127.0.0.1", LOOPBACK_PORT)):
            wait_until(
                lambda a=address, p=port: (
                    _curl(srv, f"http://{a}:{p}/blob", tmp_path, proxy=False) is not None
                ),
                within=15,
                what=f"the HTTP server on {address}:{port}",
            )
        yield Scene(lab, link, tmp_path, hashlib.sha256(blob).hexdigest(), user_uuid)


def _background(host: Host, log: Path, *argv: str) -> subprocess.Popen[bytes]:
    """A long-running program in ``host``; Lab.close kills everything in the namespace."""
    with log.open("ab") as out:
        return subprocess.Popen(
            host.argv(*argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=clean_env(),
            start_new_session=True,
        )


def _client_config(server: str, user_uuid: str) -> dict[str, object]:
    host, port = SOCKS.split(":")
    return {
        "log": {"loglevel": "warning", "access": "none"},
        "inbounds": [
            {"listen": host, "port": int(port), "protocol": "socks", "settings": {"udp": False}}
        ],
        "outbounds": [
            {
                "protocol": "vless",
                "settings": {
                    "vnext": [
                        {
                            "address": server,
                            "port": VLESS_PORT,
                            "users": [{"id": user_uuid, "encryption": "none", "level": 0}],
                        }
                    ]
                },
                "streamSettings": {"network": "tcp", "security": "none"},
            }
        ],
    }


def _curl(host: Host, url: str, tmp: Path, *, proxy: bool = True) -> str | None:
    """sha256 of what ``url`` returned, or None when the fetch failed."""
    out = tmp / f"fetched-{secrets.token_hex(4)}"
    argv = ["curl", "-sf", "--max-time", "5", "-o", str(out)]
    if proxy:
        argv += ["--socks5-hostname", SOCKS]
    result = subprocess.run(host.argv(*argv, url), capture_output=True, timeout=20)
    try:
        return hashlib.sha256(out.read_bytes()).hexdigest() if result.returncode == 0 else None
    except FileNotFoundError:
        return None
    finally:
        out.unlink(missing_ok=True)


def fetch(scene: Scene) -> str | None:
    return _curl(scene.lab.client, f"http://{WEB}:{WEB_PORT}/blob", scene.tmp)


def user(user_uuid: str, email: str = "config-1") -> Client:
    return Client(CLIENT_ID, VlessUser(uuid=user_uuid, flow="", email=email))


@pytest.fixture
async def node(scene: Scene) -> AsyncIterator[tuple[Agent, XrayBackend]]:
    state_dir = scene.tmp / "state"
    state_dir.mkdir()
    spec = XrayConfig(
        type="xray",
        api=f"{scene.link.host_address}:{API_PORT}",
        api_prefix="v2ray.core.",
        security="none",
        listen=scene.lab.server.address,
        port=VLESS_PORT,
        command=scene.lab.server.argv("v2ray", "-config", "{config}"),
    )
    backend = XrayBackend(BACKEND, spec, state_dir)
    store = StateStore(state_dir / "state.db")
    ledger = UsageLedger(state_dir / "usage.db")
    agent = Agent(
        node_id="node-xray", version="test", backends={BACKEND: backend}, store=store, ledger=ledger
    )
    try:
        await agent.boot()
        yield agent, backend
    finally:
        await agent.close()
        store.close()
        ledger.close()


async def wait_for_uptime(backend: XrayBackend, seconds: int) -> None:
    """Let the running core reach ``seconds`` of uptime, so a restart reads as one."""
    deadline = time.monotonic() + 20
    while (await backend.api.sys_stats()).uptime < seconds:
        assert time.monotonic() < deadline, "the core's uptime does not advance"
        await asyncio.sleep(0.2)


async def kill_core(backend: XrayBackend, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        try:
            await backend.api.sys_stats()
        except Exception:
            return
        assert time.monotonic() < deadline, "the killed core still answers"
        await asyncio.sleep(0.1)


async def wait_for_api(backend: XrayBackend) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            await backend.api.sys_stats()
            return
        except Exception:
            assert time.monotonic() < deadline, "the restarted core never answered"
            await asyncio.sleep(0.1)


def downloaded(agent: Agent) -> int:
    return agent.ledger.totals(BACKEND)[CLIENT_ID].tx_bytes


async def test_users_usage_and_restarts_with_real_v2ray(
    scene: Scene, node: tuple[Agent, XrayBackend]
) -> None:
    agent, backend = node
    assert (await agent.backend_status(BACKEND)).health is Health.OK
    assert backend.process is not None and backend.process.running()
    assert backend.public_params() is None  # plain VLESS is not advertised
    wait_until(
        lambda: f" {SOCKS} " in scene.lab.client.exec("ss", "-Hltn").stdout.replace("  ", " "),
        within=15,
        what="the client's SOCKS port",
    )
    assert fetch(scene) is None, "no user yet: the core must refuse the client"

    # Added through the API: the client fetches through the core.
    outcome = await agent.apply_full(
        1, DesiredState({BACKEND: [user(scene.user_uuid)]}), force=False
    )
    assert outcome.backends[0].report.added == 1
    assert outcome.backends[0].status.health is Health.OK
    assert fetch(scene) == scene.blob_sha
    on_disk = json.loads(backend.config_path.read_text())
    (clients,) = [i["settings"]["clients"] for i in on_disk["inbounds"] if i["tag"] != "api"]
    assert [c["id"] for c in clients] == [scene.user_uuid]

    # Counted per user, without reset: the ledger holds at least what was fetched.
    await agent.sample_usage()
    assert downloaded(agent) >= BLOB_SIZE
    assert agent.ledger.totals(BACKEND)[CLIENT_ID].rx_bytes > 0
    assert (await agent.backend_status(BACKEND)).clients_online == 0  # first sample: unknown

    # The core's own networks stay out of reach through the tunnel.
    lo = f"http://127.0.0.1:{LOOPBACK_PORT}/blob"
    assert _curl(scene.lab.server, lo, scene.tmp, proxy=False) == scene.blob_sha
    assert _curl(scene.lab.client, lo, scene.tmp) is None
    assert _curl(scene.lab.client, f"http://localhost:{LOOPBACK_PORT}/blob", scene.tmp) is None
    assert _curl(scene.lab.client, f"http://{backend.spec.api}/", scene.tmp) is None

    # Removed: refused at once; the counter stays with the client.
    await agent.apply_delta(1, 2, {}, {BACKEND: [CLIENT_ID]})
    assert fetch(scene) is None
    assert json.loads(backend.config_path.read_text())["inbounds"][1]["settings"]["clients"] == []
    # Back again: its counter continues, the ledger keeps adding.
    await agent.apply_delta(2, 3, {BACKEND: [user(scene.user_uuid)]}, {})
    assert fetch(scene) == scene.blob_sha
    await agent.sample_usage()
    assert downloaded(agent) >= 2 * BLOB_SIZE
    assert (await agent.backend_status(BACKEND)).clients_online == 1
    fetched = 2

    # A plain restart of the core from the file on disk keeps the user.
    await wait_for_uptime(backend, 2)
    await agent.sample_usage()
    assert backend.process.pid is not None
    epoch = (await backend.usage()).epoch
    await kill_core(backend, backend.process.pid)
    manual = _background(
        scene.lab.server, scene.tmp / "manual.log", "v2ray", "-config", str(backend.config_path)
    )
    await wait_for_api(backend)
    assert fetch(scene) == scene.blob_sha
    fetched += 1
    await agent.sample_usage()
    assert (await backend.usage()).epoch != epoch, "a restarted core is a new usage epoch"
    assert downloaded(agent) >= fetched * BLOB_SIZE

    # A restart from a config without users: the agent sees the uptime go back, re-adds.
    await wait_for_uptime(backend, 2)
    await agent.sample_usage()
    await kill_core(backend, manual.pid)
    empty = scene.tmp / "empty.json"
    empty.write_bytes(xray_config.dump(xray_config.render(backend.settings, [])))
    _background(scene.lab.server, scene.tmp / "empty.log", "v2ray", "-config", str(empty))
    await wait_for_api(backend)
    assert fetch(scene) is None, "that core has no users"
    await agent.sample_usage()  # detects the restart and restores the user
    assert fetch(scene) == scene.blob_sha
    fetched += 1
    await agent.sample_usage()
    assert downloaded(agent) >= fetched * BLOB_SIZE
    assert (await agent.backend_status(BACKEND)).health is Health.OK

    # Killed with nobody to restart it: the next reconcile starts it through `command`.
    await wait_for_uptime(backend, 2)
    await agent.sample_usage()
    stray = [int(p) for p in scene.lab.server.exec("ip", "netns", "pids", scene.lab.server.name)
             .stdout.split() if _is_core(int(p), empty)]  # fmt: skip
    assert len(stray) == 1
    await kill_core(backend, stray[0])
    down = await agent.backend_status(BACKEND)
    assert down.health is Health.DOWN and "did not answer" in down.reason
    await agent.reconcile()
    assert backend.process.running()
    assert fetch(scene) == scene.blob_sha
    fetched += 1
    await agent.sample_usage()
    assert downloaded(agent) >= fetched * BLOB_SIZE
    assert (await agent.backend_status(BACKEND)).health is Health.OK


def _is_core(pid: int, config: Path) -> bool:
    try:
        return str(config) in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    except OSError:
        return False
