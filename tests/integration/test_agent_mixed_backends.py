"""One agent, a real Xray backend (v2ray 4.34 as its core) beside another: a core that is
down degrades only its own backend (with the reason), the others are applied, and the
periodic reconcile converges the failed one once its core is back. An invalid client for
one backend applies nothing anywhere."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node_agent.agent import Agent
from node_agent.backends.base import Health, VpnBackend
from node_agent.backends.fake import FakeBackend
from node_agent.backends.xray.backend import XrayBackend
from node_agent.config import XrayConfig
from node_agent.errors import InvalidStateError
from node_agent.ledger import UsageLedger
from node_agent.model import Client, DesiredState, OpenVpnClient, VlessUser
from node_agent.state import StateStore
from tests.conftest import need
from tests.unit.test_xray_backend import free_port, run_core, wait_for_api

U1 = str(uuid.UUID(int=11, version=4))


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    need(shutil.which("v2ray") is not None, "v2ray is not installed (apt-get install v2ray)")
    xray = XrayBackend(
        "vless",
        XrayConfig.model_validate(
            {
                "type": "xray",
                "api": f"127.0.0.1:{free_port()}",
                "api_prefix": "v2ray.core.",
                "api_timeout": 2,
                "security": "none",
                "listen": "127.0.0.1",
                "port": free_port(),
            }
        ),
        tmp_path,
    )
    backends: dict[str, VpnBackend] = {"vless": xray, "fake": FakeBackend("fake")}
    store = StateStore(tmp_path / "state.db")
    ledger = UsageLedger(tmp_path / "usage.db")
    agent = Agent(node_id="n1", version="test", backends=backends, store=store, ledger=ledger)
    try:
        yield agent
    finally:
        await xray.close()
        store.close()
        ledger.close()


async def test_a_core_that_is_down_degrades_only_its_backend(agent: Agent, tmp_path: Path) -> None:
    state = DesiredState(
        {
            "vless": [Client("v1", VlessUser(U1, email="config-1"))],
            "fake": [Client("f1", OpenVpnClient("x"))],
        }
    )
    outcome = await agent.apply_full(1, state, force=False)
    by_name = {o.name: o for o in outcome.backends}
    assert by_name["vless"].status.health in (Health.DEGRADED, Health.DOWN)
    assert by_name["vless"].status.reason  # says why
    assert by_name["fake"].status.health is Health.OK
    fake = agent.backends["fake"]
    assert isinstance(fake, FakeBackend) and set(fake.clients) == {"f1"}
    # The state is accepted and persisted as a whole: the node must converge to it.
    assert agent.revision == 1 and agent.state == state

    xray = agent.backends["vless"]
    assert isinstance(xray, XrayBackend)
    core = run_core(xray.config_path, tmp_path / "core.log")
    try:
        await wait_for_api(xray)
        await agent.reconcile()
        status = await agent.backend_status("vless")
        assert status.health is Health.OK, status.reason
        assert set(xray.core_users()) == {"v1"}
    finally:
        core.kill()
        core.wait(timeout=10)


async def test_an_invalid_client_for_one_backend_applies_nothing(agent: Agent) -> None:
    good = DesiredState({"fake": [Client("f1", OpenVpnClient("x"))]})
    await agent.apply_full(1, good, force=False)
    bad = DesiredState(
        {
            "fake": [Client("f2", OpenVpnClient("y"))],
            "vless": [Client("v1", VlessUser("not-a-uuid"))],
        }
    )
    with pytest.raises(InvalidStateError, match=r"(?i)uuid"):
        await agent.apply_full(2, bad, force=False)
    fake = agent.backends["fake"]
    assert isinstance(fake, FakeBackend) and set(fake.clients) == {"f1"}
    assert agent.revision == 1 and agent.state == good
