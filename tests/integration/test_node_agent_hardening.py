"""The node agent over real mutual TLS on loopback: the review's hardening findings.

Health answers the controller only, an acknowledgement must name the agent's ledger, an
out-of-range cursor is the caller's error, and a second agent cannot share a busy port.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.nodes.client import ClientCredentials, NodeClient, NodeRpcError
from controller.nodes.pki import cert_to_pem, generate_key, key_to_pem
from node_agent.agent import Agent
from node_agent.backends.fake import FakeBackend
from node_agent.ledger import UsageLedger
from node_agent.server import AgentServer
from node_agent.state import StateStore
from node_agent.tls import load_credentials
from proto.nodeapi.v1 import node_agent_pb2 as pb
from tests.agent_support import Cluster, RunningAgent, running_agent

NODE = "node-h"
Code = grpc.StatusCode
FAST = 5.0  # seconds: the deadline of calls that must answer quickly
SERVING = health_pb2.HealthCheckResponse.SERVING


def wg_client(client_id: str, n: int) -> pb.Client:
    key = base64.b64encode(bytes([n]) * 32).decode()
    return pb.Client(
        id=client_id, wireguard=pb.WireGuardPeer(public_key=key, allowed_ips=[f"10.8.0.{n}/32"])
    )


def desired(*clients: pb.Client) -> pb.DesiredState:
    return pb.DesiredState(backends=[pb.BackendState(name="fake", clients=list(clients))])


def someone_else(cluster: Cluster) -> ClientCredentials:
    """A valid cluster client certificate that does not carry the controller identity."""
    key = generate_key()
    cert = cluster.ca.issue(
        key.public_key(), common_name="x", dns_names=["someone.else"], server=False, client=True
    )
    return ClientCredentials(cluster.ca.cert_pem, key_to_pem(key), cert_to_pem(cert))


def entries_of(page: pb.ReadUsageResponse) -> list[tuple[str, int, int]]:
    return sorted((e.client_id, e.rx_bytes, e.tx_bytes) for e in page.entries)


@dataclass
class Node:
    cluster: Cluster
    running: RunningAgent
    fake: FakeBackend
    client: NodeClient
    state_dir: Path


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    cluster = Cluster.create()
    state_dir = tmp_path / "agent"
    cluster.enroll(state_dir, NODE)
    fake = FakeBackend("fake")
    async with (
        running_agent(state_dir, {"fake": fake}) as running,
        cluster.client(running.target, NODE, timeout=FAST) as client,
    ):
        yield Node(cluster, running, fake, client, state_dir)


async def node_with_usage(node: Node) -> pb.ReadUsageResponse:
    """Two clients with traffic; the unacknowledged page that reports it."""
    await node.client.apply_state(1, desired(wg_client("c1", 2), wg_client("c2", 3)))
    node.fake.add_traffic("c1", 100, 200)
    node.fake.add_traffic("c2", 7, 8)
    page = await node.client.read_usage()
    assert entries_of(page) == [("c1", 100, 200), ("c2", 7, 8)]
    assert page.ledger_id
    return page


# --- health -----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "nodeapi.v1.NodeAgent"])
async def test_health_answers_the_controller(node: Node, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(node.client.channel)
    request = health_pb2.HealthCheckRequest(service=service)

    assert (await stub.Check(request, timeout=FAST)).status == SERVING
    watch = stub.Watch(request, timeout=FAST)
    try:
        assert (await watch.read()).status == SERVING
    finally:
        watch.cancel()


@pytest.mark.parametrize("service", ["", "nodeapi.v1.NodeAgent"])
async def test_health_denies_a_cluster_certificate_without_the_controller_identity(
    node: Node, service: str
) -> None:
    request = health_pb2.HealthCheckRequest(service=service)
    async with NodeClient(node.running.target, NODE, someone_else(node.cluster)) as intruder:
        stub = health_pb2_grpc.HealthStub(intruder.channel)

        with pytest.raises(grpc.aio.AioRpcError) as check:
            await stub.Check(request, timeout=FAST)
        assert check.value.code() == Code.PERMISSION_DENIED

        watch = stub.Watch(request, timeout=FAST)
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            await watch.read()
        assert watched.value.code() == Code.PERMISSION_DENIED


# --- usage acknowledgements --------------------------------------------------------------


async def test_an_ack_for_another_ledger_is_refused_and_deletes_nothing(node: Node) -> None:
    page = await node_with_usage(node)
    other_ledger = "0" * 32
    assert other_ledger != page.ledger_id

    with pytest.raises(NodeRpcError) as info:
        await node.client.ack_usage(page.last_cursor, other_ledger)

    assert info.value.code == Code.FAILED_PRECONDITION
    again = await node.client.read_usage()
    assert entries_of(again) == entries_of(page)
    assert again.ledger_id == page.ledger_id


async def test_an_ack_without_a_ledger_id_is_invalid_and_deletes_nothing(node: Node) -> None:
    page = await node_with_usage(node)

    with pytest.raises(NodeRpcError) as info:
        await node.client.ack_usage(page.last_cursor, "")

    assert info.value.code == Code.INVALID_ARGUMENT
    assert entries_of(await node.client.read_usage()) == entries_of(page)


async def test_an_ack_for_this_ledger_compacts_the_entries(node: Node) -> None:
    page = await node_with_usage(node)

    ack = await node.client.ack_usage(page.last_cursor, page.ledger_id)

    assert ack.acknowledged_cursor == page.last_cursor
    assert (await node.client.read_usage()).entries == []
    node.fake.add_traffic("c1", 1, 1)
    assert entries_of(await node.client.read_usage()) == [("c1", 101, 201)]


@pytest.mark.parametrize("cursor", [2**63, 2**64 - 1])
async def test_a_cursor_beyond_the_ledger_range_is_invalid(node: Node, cursor: int) -> None:
    page = await node_with_usage(node)

    with pytest.raises(NodeRpcError) as read:
        await node.client.read_usage(after_cursor=cursor)
    assert read.value.code == Code.INVALID_ARGUMENT

    with pytest.raises(NodeRpcError) as ack:
        await node.client.ack_usage(cursor, page.ledger_id)
    assert ack.value.code == Code.INVALID_ARGUMENT
    assert entries_of(await node.client.read_usage()) == entries_of(page)


# --- the listening port ------------------------------------------------------------------


async def test_a_second_agent_cannot_listen_on_a_port_in_use(node: Node, tmp_path: Path) -> None:
    port = node.running.server.port
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    store = StateStore(second_dir / "state.db")
    ledger = UsageLedger(second_dir / "usage.db")
    agent = Agent(
        node_id=NODE,
        version="test",
        backends={"fake": FakeBackend("fake")},
        store=store,
        ledger=ledger,
    )
    second = AgentServer(agent, load_credentials(node.state_dir), f"127.0.0.1:{port}")
    try:
        with pytest.raises(OSError, match=str(port)):
            await second.start()
    finally:
        await second.server.stop(None)
        store.close()
        ledger.close()

    # The first agent still answers every call on that port.
    for _ in range(5):
        assert (await node.client.info()).boot_id == node.running.agent.boot_id
