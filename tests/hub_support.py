"""A controller in the test process (services + hub on one database) and enrolled in-process
agents with fake backends, joined over real mTLS on loopback.

    async with ControllerHarness.open(engine, tmp_path) as controller:
        node = await controller.add_node("nl-1")            # enrolled through NodeService.enroll
        async with node.agent():                            # an in-process agent serving it
            await controller.wait_converged(node)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from controller.crypto import SecretBox
from controller.db.engine import create_session_factory
from controller.db.models import Server
from controller.db.uow import NodeEvents, UnitOfWorkFactory, make_uow_factory
from controller.nodes.hub import Hub
from controller.nodes.issuer import NodeIssuer
from controller.services import Actor, Services, build_services
from controller.services.nodes import NodeDraft
from controller.settings import HubSettings
from node_agent.backends.base import WireGuardPublicParams
from node_agent.backends.fake import FakeBackend
from node_agent.tls import create_key_and_csr
from proto.nodeapi.v1 import node_agent_pb2 as pb
from proto.nodeapi.v1.enrollment import EnrollmentToken
from tests.agent_support import RunningAgent, running_agent
from tests.conftest import FakeClock

FAST_HUB = HubSettings(
    poll_seconds=0.1,
    resync_seconds=2.0,
    usage_seconds=3600.0,
    metrics_seconds=3600.0,
    rpc_timeout_seconds=5.0,
    max_backoff_seconds=1.0,
)


@dataclass
class Node:
    harness: ControllerHarness
    server_id: int
    name: str
    node_id: str
    state_dir: Path
    port: int
    subnet: str
    backend: FakeBackend = field(init=False)

    def __post_init__(self) -> None:
        self.backend = self.new_backend()

    def new_backend(self) -> FakeBackend:
        """A fake standing in for a WireGuard server (reports WireGuard parameters)."""
        return FakeBackend(
            "wg",
            WireGuardPublicParams(
                public_key="x" * 43 + "=",
                listen_port=51820,
                addresses=(self.subnet,),
                interface="wg",
            ),
        )

    @contextlib.asynccontextmanager
    async def agent(self, backend: FakeBackend | None = None) -> AsyncIterator[RunningAgent]:
        """Serve this node from an in-process agent (a restart = leave and enter again)."""
        if backend is not None:
            self.backend = backend
        async with running_agent(
            self.state_dir, {"wg": self.backend}, listen=f"127.0.0.1:{self.port}"
        ) as running:
            yield running

    def peers(self) -> set[str]:
        return set(self.backend.clients)


@dataclass
class ControllerHarness:
    engine: AsyncEngine
    tmp_path: Path
    clock: Any
    events: NodeEvents
    uow_factory: UnitOfWorkFactory
    box: SecretBox
    services: Services
    settings: HubSettings
    hub: Hub | None = None
    hub_task: asyncio.Task[None] | None = None
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        engine: AsyncEngine,
        tmp_path: Path,
        *,
        clock: Any = None,
        settings: HubSettings = FAST_HUB,
        start_hub: bool = True,
    ) -> AsyncIterator[ControllerHarness]:
        events = NodeEvents()
        uow_factory = make_uow_factory(create_session_factory(engine), events)
        box = SecretBox(os.urandom(32))
        clock = clock or FakeClock()
        services = build_services(
            uow_factory, clock, secrets=box, issuer=NodeIssuer(uow_factory, box)
        )
        harness = cls(engine, tmp_path, clock, events, uow_factory, box, services, settings)
        if start_hub:
            harness.start_hub()
        try:
            yield harness
        finally:
            await harness.stop_hub()

    def new_hub(self, **kwargs: Any) -> Hub:
        return Hub(
            self.uow_factory,
            self.box,
            self.settings,
            self.clock,
            events=self.events,
            engine=self.engine,
            **kwargs,
        )

    def start_hub(self) -> Hub:
        self.hub = self.new_hub()
        self.hub_task = asyncio.create_task(self.hub.run())
        return self.hub

    async def stop_hub(self) -> None:
        task, self.hub_task = self.hub_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def add_node(
        self, name: str, *, subnet: str | None = None, max_users: int = 1000, country: str = ""
    ) -> Node:
        """Add a node and enroll a state directory for it through the real service."""
        port = _free_port()
        server, token_text = await self.services.nodes.add(
            Actor.cli(),
            NodeDraft(
                name=name,
                address="127.0.0.1",
                grpc_port=port,
                max_users=max_users,
                country_code=country,
            ),
        )
        token = EnrollmentToken.decode(token_text)
        state_dir = self.tmp_path / f"agent-{name}"
        state_dir.mkdir(parents=True)
        csr = create_key_and_csr(state_dir, token.node_id)
        enrolled = await self.services.nodes.enroll(token.secret, csr)
        (state_dir / "agent.pem").write_bytes(enrolled.certificate_pem)
        (state_dir / "ca.pem").write_bytes(enrolled.ca_certificate_pem)
        index = len(self.nodes) + 1
        node = Node(
            self, server.id, name, token.node_id, state_dir, port, subnet or f"10.{index}.0.1/24"
        )
        self.nodes.append(node)
        return node

    async def server(self, node: Node) -> Server:
        async with self.uow_factory() as uow:
            found = await uow.nodes.get(node.server_id)
            assert found is not None
            return found

    async def wait_for(self, predicate: Any, *, within: float = 10.0, what: str = "") -> None:
        """Poll an (async or plain) predicate until true."""
        deadline = time.monotonic() + within
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {within:g} s waiting for {what or predicate}"
                )
            await asyncio.sleep(0.02)

    async def wait_converged(self, node: Node, *, within: float = 10.0) -> Server:
        """Until the node's agent applied its current desired revision."""

        async def done() -> bool:
            server = await self.server(node)
            return server.enrolled_at is not None and server.applied_revision >= max(
                server.desired_revision, 1
            )

        await self.wait_for(done, within=within, what=f"node {node.name} to converge")
        return await self.server(node)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wireguard_info(
    subnet: str, public_key: str = "q" * 43 + "=", *, boot_id: str = "boot-1"
) -> pb.AgentInfo:
    """Agent info of a node with one healthy WireGuard backend: what the hub records when
    it first reaches the agent (and what makes the node serve WireGuard)."""
    return pb.AgentInfo(
        agent_version="test",
        boot_id=boot_id,
        backends=[
            pb.BackendInfo(
                name="wg",
                kind=pb.BACKEND_KIND_WIREGUARD,
                status=pb.BackendStatus(health=pb.BACKEND_HEALTH_OK),
                wireguard=pb.WireGuardParams(
                    public_key=public_key, listen_port=51820, addresses=[subnet], interface="wg0"
                ),
            )
        ],
    )
