"""The Xray backend against a real core: v2ray 4.34 on loopback, started through the
backend's own ``command`` (plain VLESS: v2ray has no Reality). The end-to-end test with a
real client and traffic is tests/e2e/test_xray_v2ray_e2e.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from node_agent.backends.base import Health, RealityPublicParams
from node_agent.backends.xray.api import XrayApi
from node_agent.backends.xray.backend import XrayBackend
from node_agent.config import XrayConfig
from node_agent.errors import BackendError, InvalidStateError
from node_agent.model import Client, VlessUser
from tests.conftest import need

U1, U2, U3 = (str(uuid.UUID(int=n, version=4)) for n in (1, 2, 3))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vless(client_id: str, user_uuid: str, email: str = "") -> Client:
    return Client(client_id, VlessUser(uuid=user_uuid, email=email))


def clients_in(path: Path) -> dict[str, str]:
    """uuid -> email of the VLESS inbound's clients in a config file."""
    config = json.loads(path.read_text())
    (vless_in,) = [i for i in config["inbounds"] if i["protocol"] == "vless"]
    return {c["id"]: c["email"] for c in vless_in["settings"]["clients"]}


Make = Callable[..., XrayBackend]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    """Builds backends on one state dir and API port; kills every core they started."""
    api_port, port = free_port(), free_port()
    made: list[XrayBackend] = []

    def build(**fields: Any) -> XrayBackend:
        spec = {
            "type": "xray",
            "api": f"127.0.0.1:{api_port}",
            "api_prefix": "v2ray.core.",
            "api_timeout": 2,
            "security": "none",
            "listen": "127.0.0.1",
            "port": port,
            "command": ["v2ray", "-config", "{config}"],
            **fields,
        }
        backend = XrayBackend("vless", XrayConfig.model_validate(spec), tmp_path / "state")
        made.append(backend)
        return backend

    try:
        yield build
    finally:
        for backend in made:
            await backend.close()
            if backend.process is not None and backend.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(backend.process.pid, signal.SIGKILL)
                async with asyncio.timeout(10):
                    await backend.process.wait()


@pytest.fixture
def v2ray() -> None:
    need(shutil.which("v2ray") is not None, "v2ray is not installed (apt-get install v2ray)")


# --- without a core --------------------------------------------------------------------------


def test_reality_parameters_are_generated_once_and_public_only(tmp_path: Path) -> None:
    spec = XrayConfig.model_validate(
        {
            "type": "xray",
            "port": 8443,
            "server_names": ["www.example.com"],
            "dest": "www.example.com:443",
            "short_id_count": 3,
        }
    )
    backend = XrayBackend("vless", spec, tmp_path)
    params = backend.public_params()
    assert isinstance(params, RealityPublicParams)
    assert params.port == 8443 and params.server_names == ("www.example.com",)
    assert params.flow == "xtls-rprx-vision" and params.fingerprint == "chrome"
    assert len(params.short_ids) == 3
    assert backend.material is not None
    assert backend.material.private_key not in repr(params)
    assert XrayBackend("vless", spec, tmp_path).public_params() == params  # kept in state_dir


def test_plain_vless_advertises_nothing(tmp_path: Path) -> None:
    spec = XrayConfig.model_validate({"type": "xray", "security": "none"})
    assert XrayBackend("vless", spec, tmp_path).public_params() is None


async def test_validation_refuses_bad_states_without_side_effects(make: Make) -> None:
    backend = make()
    with pytest.raises(InvalidStateError, match="is not a UUID"):
        backend.validate([vless("a", "nope")])
    with pytest.raises(InvalidStateError, match="already used"):
        backend.validate([vless("a", U1), vless("b", U1)])
    with pytest.raises(InvalidStateError, match="needs a Reality inbound"):
        backend.validate([Client("a", VlessUser(uuid=U1, flow="xtls-rprx-vision"))])
    with pytest.raises(InvalidStateError, match="email"):
        backend.validate_changes([vless("a", U1, "a b")], [])
    assert not backend.config_path.exists()


async def test_a_core_that_is_not_running_is_reported(make: Make) -> None:
    backend = make(command=None)
    with pytest.raises(BackendError, match="not answering"):
        await backend.start()
    with pytest.raises(BackendError, match="did not answer"):
        await backend.apply([vless("a", U1)])
    status = await backend.status()
    assert status.health is Health.DOWN and "did not answer" in status.reason
    assert status.clients == 1
    # The file a unit would start the core from already has the user.
    assert clients_in(backend.config_path) == {U1: backend.core_users()["a"].email}


async def test_a_core_that_cannot_start_says_why(make: Make, v2ray: None) -> None:
    backend = make(command=["v2ray", "-config", "{config}.missing"])
    with pytest.raises(BackendError, match="the core exited with status"):
        await backend.start()
    backend = make(command=["/nonexistent/xray", "run"])
    with pytest.raises(BackendError, match="could not start /nonexistent/xray"):
        await backend.start()


# --- with v2ray ------------------------------------------------------------------------------


async def test_users_are_changed_live_and_kept_in_the_file(make: Make, v2ray: None) -> None:
    backend = make()
    await backend.start()
    assert backend.process is not None and backend.process.running()
    assert clients_in(backend.config_path) == {}

    report = await backend.apply([vless("a", U1, "config-1"), vless("b", U2)])
    assert (report.added, report.updated, report.removed) == (2, 0, 0)
    emails = {cid: u.email for cid, u in backend.core_users().items()}
    assert clients_in(backend.config_path) == {U1: emails["a"], U2: emails["b"]}
    probe = XrayApi(backend.spec.api, "v2ray.core.")
    try:  # the core has them: adding again is a duplicate
        assert not await probe.add_vless_user(backend.spec.inbound_tag, email=emails["a"], uuid=U1)
    finally:
        await probe.close()

    report = await backend.apply_changes([vless("c", U3)], ["b"])
    assert (report.added, report.removed, report.reset_clients) == (1, 1, frozenset())
    assert set(clients_in(backend.config_path)) == {U1, U3}

    # A new UUID for a client is a new core user with a fresh counter: its baseline moves.
    report = await backend.apply_changes([vless("a", U2, "config-1")], [])
    assert report.updated == 1 and report.reset_clients == {"a"}
    assert set(clients_in(backend.config_path)) == {U2, U3}

    # A full apply converges to exactly the state given.
    report = await backend.apply([vless("c", U3)])
    assert report.removed == 1 and set(clients_in(backend.config_path)) == {U3}
    sample = await backend.usage()
    assert sample.epoch.startswith("vless-reality@") and sample.counters == {}
    status = await backend.status()
    assert (status.health, status.clients) == (Health.OK, 1)


async def test_a_change_the_core_refuses_leaves_a_consistent_record(
    make: Make, v2ray: None, tmp_path: Path
) -> None:
    backend = make(command=None)  # the core runs under "a unit": started here by hand
    with pytest.raises(BackendError, match="not answering"):
        await backend.start()  # nothing runs yet, but the file a unit needs is written
    core = run_core(backend.config_path, tmp_path / "core.log")
    try:
        await wait_for_api(backend)
        await backend.start()
        await backend.apply([vless("a", U1), vless("b", U2)])
        emails = {cid: u.email for cid, u in backend.core_users().items()}
    finally:
        core.kill()
        core.wait(timeout=10)

    with pytest.raises(BackendError, match="did not answer"):
        await backend.apply([vless("a", U1)])
    # b may still be in the core: it stays in the file until its removal got through, so
    # neither a restart of the core nor a restart of the agent can forget it.
    assert clients_in(backend.config_path) == {U1: emails["a"], U2: emails["b"]}
    assert (await backend.status()).health is Health.DOWN

    core = run_core(backend.config_path, tmp_path / "core.log")  # back, with b
    try:
        await wait_for_api(backend)
        await backend.apply([vless("a", U1)])
        assert clients_in(backend.config_path) == {U1: emails["a"]}
        probe = XrayApi(backend.spec.api, "v2ray.core.")
        try:
            assert await probe.remove_user(backend.spec.inbound_tag, emails["b"]) is False
            assert (
                await probe.add_vless_user(backend.spec.inbound_tag, email=emails["a"], uuid=U1)
                is False
            )
        finally:
            await probe.close()
        assert (await backend.status()).health is Health.OK
    finally:
        core.kill()
        core.wait(timeout=10)


def run_core(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["v2ray", "-config", str(config)], stdout=out, stderr=out, start_new_session=True
        )


async def wait_for_api(backend: XrayBackend, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await backend.api.sys_stats()
            return
        except BackendError:
            assert time.monotonic() < deadline, "the core's API never answered"
            await asyncio.sleep(0.05)


async def test_a_new_agent_adopts_the_running_core_and_its_epoch(make: Make, v2ray: None) -> None:
    first = make()
    await first.start()
    await first.apply([vless("a", U1)])
    epoch = (await first.usage()).epoch
    assert first.process is not None
    pid = first.process.pid
    await first.close()

    again = make()  # a restarted agent: same state dir, the core still running
    await again.start()
    assert again.process is not None and again.process.pid is None  # adopted, not spawned
    await again.apply([vless("a", U1)])
    assert (await again.usage()).epoch == epoch  # the ledger must not count it all again
    assert (await again.status()).health is Health.OK
    assert pid is not None and first.process.running()  # killed by the fixture


async def test_the_wrong_api_prefix_is_named(make: Make, v2ray: None) -> None:
    await make().start()
    wrong = make(api_prefix="xray.", command=None)
    with pytest.raises(BackendError, match=r"API prefix 'xray\.'"):
        await wrong.start()


def test_the_registry_builds_it_from_the_agent_config(tmp_path: Path) -> None:
    from node_agent.backends.registry import build_backends
    from node_agent.config import AgentConfig

    config = AgentConfig.model_validate(
        {
            "state_dir": str(tmp_path),
            "backends": {
                "vless": {
                    "type": "xray",
                    "server_names": ["www.example.com"],
                    "dest": "www.example.com:443",
                }
            },
        }
    )
    (backend,) = build_backends(config).values()
    assert isinstance(backend, XrayBackend) and backend.kind == "xray"
    assert backend.config_path == tmp_path / "xray-vless.json"
