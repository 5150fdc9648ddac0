"""Builders for node-agent tests: a cluster CA, enrolled state directories, in-process agents."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from controller.nodes.ca import controller_credentials
from controller.nodes.client import ClientCredentials, NodeClient
from controller.nodes.pki import CertificateAuthority, cert_to_pem
from node_agent.agent import Agent
from node_agent.backends.base import VpnBackend
from node_agent.ledger import UsageLedger
from node_agent.server import AgentServer
from node_agent.state import StateStore
from node_agent.tls import CA_FILE, CERT_FILE, create_key_and_csr, load_credentials


@dataclass
class Cluster:
    ca: CertificateAuthority
    controller: ClientCredentials

    @classmethod
    def create(cls) -> Cluster:
        ca = CertificateAuthority.create()
        return cls(ca, controller_credentials(ca))

    def enroll(self, state_dir: Path, node_id: str) -> None:
        """What enrollment leaves behind: agent key (made there), signed cert, CA."""
        state_dir.mkdir(parents=True, exist_ok=True)
        csr = create_key_and_csr(state_dir, node_id)
        (state_dir / CERT_FILE).write_bytes(cert_to_pem(self.ca.sign_node_csr(csr, node_id)))
        (state_dir / CA_FILE).write_bytes(self.ca.cert_pem)

    def client(self, target: str, node_id: str, **kwargs: float) -> NodeClient:
        return NodeClient(target, node_id, self.controller, **kwargs)


@dataclass
class RunningAgent:
    agent: Agent
    server: AgentServer
    target: str


@contextlib.asynccontextmanager
async def running_agent(
    state_dir: Path, backends: Mapping[str, VpnBackend], listen: str = "127.0.0.1:0"
) -> AsyncIterator[RunningAgent]:
    credentials = load_credentials(state_dir)
    store = StateStore(state_dir / "state.db")
    ledger = UsageLedger(state_dir / "usage.db")
    agent = Agent(
        node_id=credentials.node_id, version="test", backends=backends, store=store, ledger=ledger
    )
    await agent.boot()
    server = AgentServer(agent, credentials, listen, usage_interval=3600, reconcile_interval=3600)
    await server.start()
    target = listen if listen.startswith("unix:") else f"127.0.0.1:{server.port}"
    try:
        yield RunningAgent(agent, server, target)
    finally:
        await server.stop(grace=1)
        store.close()
        ledger.close()
