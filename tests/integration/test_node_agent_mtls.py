"""The node agent over real mutual TLS on loopback: who may call it, whom the controller
trusts, and what every RPC does through the controller's own client."""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.nodes.client import ClientCredentials, NodeClient, NodeRpcError
from controller.nodes.pki import CertificateAuthority, cert_to_pem, generate_key, key_to_pem
from node_agent.agent import Agent
from node_agent.backends.fake import FakeBackend
from node_agent.ledger import UsageLedger
from node_agent.server import CAPABILITIES, AgentServer
from node_agent.state import StateStore
from node_agent.tls import CERT_FILE, KEY_FILE, load_credentials
from proto.nodeapi.v1 import node_agent_pb2 as pb
from proto.nodeapi.v1 import node_agent_pb2_grpc as pb_grpc
from proto.nodeapi.v1.identity import CONTROLLER_IDENTITY
from tests.agent_support import Cluster, RunningAgent, running_agent

NODE = "node-a"
Code = grpc.StatusCode
FAST = 5.0  # seconds: a deadline for calls that must fail (or answer) quickly


# --- builders ----------------------------------------------------------------------------


def wg_key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def wg_client(client_id: str, n: int) -> pb.Client:
    return pb.Client(
        id=client_id,
        wireguard=pb.WireGuardPeer(public_key=wg_key(n), allowed_ips=[f"10.8.0.{n}/32"]),
    )


def desired(*clients: pb.Client, backend: str = "fake") -> pb.DesiredState:
    return pb.DesiredState(backends=[pb.BackendState(name=backend, clients=list(clients))])


def credentials_of(state_dir: Path, ca_pem: bytes) -> ClientCredentials:
    """Client credentials made of an enrolled state dir's key and certificate."""
    return ClientCredentials(
        ca_pem, (state_dir / KEY_FILE).read_bytes(), (state_dir / CERT_FILE).read_bytes()
    )


def issued(
    ca: CertificateAuthority, common_name: str, dns_names: list[str], *, server: bool = False
) -> tuple[bytes, bytes]:
    key = generate_key()
    cert = ca.issue(
        key.public_key(), common_name=common_name, dns_names=dns_names, server=server, client=True
    )
    return key_to_pem(key), cert_to_pem(cert)


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(NodeRpcError) as info:
        await call
    return info.value.code


async def stream_code(client: NodeClient, interval: int) -> grpc.StatusCode:
    with pytest.raises(NodeRpcError) as info:
        async for _ in client.stream_metrics(interval, duration=FAST):
            pass
    return info.value.code


async def issue_openvpn_code(client: NodeClient) -> grpc.StatusCode:
    request = pb.IssueOpenVpnClientRequest(backend="openvpn", common_name="alice", valid_days=30)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.IssueOpenVpnClient(request, timeout=FAST)
    return info.value.code()


# --- fixtures ----------------------------------------------------------------------------


@dataclass
class Node:
    cluster: Cluster
    running: RunningAgent
    fake: FakeBackend
    client: NodeClient
    state_dir: Path

    @property
    def agent(self) -> Agent:
        return self.running.agent

    def other_client(self, credentials: ClientCredentials, node_id: str = NODE) -> NodeClient:
        return NodeClient(self.running.target, node_id, credentials, timeout=FAST)


@pytest.fixture
def cluster() -> Cluster:
    return Cluster.create()


@pytest.fixture
async def node(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Node]:
    state_dir = tmp_path / "agent"
    cluster.enroll(state_dir, NODE)
    fake = FakeBackend("fake")
    async with (
        running_agent(state_dir, {"fake": fake}) as running,
        cluster.client(running.target, NODE, timeout=FAST) as client,
    ):
        yield Node(cluster, running, fake, client, state_dir)


# --- who may call -------------------------------------------------------------------------


async def test_the_controller_certificate_is_accepted(node: Node) -> None:
    info = await node.client.info()

    assert info.node_id == NODE  # from the agent's certificate SAN
    assert info.agent_version == "test"
    assert info.boot_id == node.agent.boot_id
    assert len(info.boot_id) == 32
    assert info.applied_revision == 0
    assert list(info.capabilities) == list(CAPABILITIES)
    assert "apply_delta" in info.capabilities
    assert info.started_at.seconds > 0
    assert len(info.backends) == 1
    backend = info.backends[0]
    assert backend.name == "fake"
    assert backend.kind == pb.BACKEND_KIND_FAKE
    assert backend.status.health == pb.BACKEND_HEALTH_OK
    assert backend.status.reason == ""
    assert backend.status.clients == 0
    assert backend.WhichOneof("params") is None


def _refused_at_handshake(kind: str, cluster: Cluster) -> ClientCredentials:
    """Client credentials the agent's TLS layer must refuse (all trust the cluster CA)."""
    ca_pem = cluster.ca.cert_pem
    if kind == "another-ca":
        other = CertificateAuthority.create("some other CA")
        key, cert = other.issue_controller()  # even with the controller identity
        return ClientCredentials(ca_pem, key_to_pem(key), cert_to_pem(cert))
    key = generate_key()
    if kind == "expired":
        cert = cluster.ca.issue(
            key.public_key(),
            common_name="vpnbot controller",
            dns_names=[CONTROLLER_IDENTITY],
            server=False,
            client=True,
            valid_days=0,
        )
    else:  # a server-only certificate is no client certificate
        cert = cluster.ca.issue(
            key.public_key(),
            common_name="vpnbot controller",
            dns_names=[CONTROLLER_IDENTITY],
            server=True,
            client=False,
        )
    return ClientCredentials(ca_pem, key_to_pem(key), cert_to_pem(cert))


@pytest.mark.parametrize("kind", ["another-ca", "expired", "server-only-usage"])
async def test_a_client_certificate_the_cluster_ca_does_not_vouch_for_is_refused(
    node: Node, kind: str
) -> None:
    credentials = _refused_at_handshake(kind, node.cluster)

    async with node.other_client(credentials) as intruder:
        assert await code_of(intruder.info()) == Code.UNAVAILABLE  # the handshake fails
        assert await code_of(intruder.apply_state(1, desired(wg_client("c1", 2)))) == (
            Code.UNAVAILABLE
        )

    assert node.agent.revision == 0
    assert node.fake.clients == {}


NOT_THE_CONTROLLER = ["another-node", "client-only-someone-else", "controller-in-cn-only"]


def _not_the_controller(kind: str, cluster: Cluster, tmp_path: Path) -> ClientCredentials:
    ca = cluster.ca
    if kind == "another-node":
        other_dir = tmp_path / "node-z"
        cluster.enroll(other_dir, "node-z")
        return credentials_of(other_dir, ca.cert_pem)
    if kind == "client-only-someone-else":
        return ClientCredentials(ca.cert_pem, *issued(ca, "someone", ["someone.else"]))
    # The identity is the SAN, not the common name.
    return ClientCredentials(ca.cert_pem, *issued(ca, CONTROLLER_IDENTITY, ["someone.else"]))


@pytest.mark.parametrize("kind", NOT_THE_CONTROLLER)
async def test_a_cluster_certificate_without_the_controller_identity_is_denied_everything(
    node: Node, tmp_path: Path, kind: str
) -> None:
    # Something to protect: an applied state and unacknowledged usage.
    await node.client.apply_state(1, desired(wg_client("c1", 2)))
    node.fake.add_traffic("c1", 100, 200)
    before = await node.client.read_usage()
    assert len(before.entries) == 1
    apply_calls = node.fake.apply_calls

    credentials = _not_the_controller(kind, node.cluster, tmp_path)
    denied = Code.PERMISSION_DENIED
    async with node.other_client(credentials) as intruder:
        assert await code_of(intruder.info()) == denied
        assert await code_of(intruder.apply_state(9, pb.DesiredState(), force=True)) == denied
        delta = [pb.BackendDelta(name="fake", remove=["c1"])]
        assert await code_of(intruder.apply_delta(1, 2, delta)) == denied
        assert await code_of(intruder.read_usage()) == denied
        assert await code_of(intruder.ack_usage(before.last_cursor, before.ledger_id)) == denied
        assert await code_of(intruder.metrics()) == denied
        assert await stream_code(intruder, 1) == denied
        assert await issue_openvpn_code(intruder) == denied

    # Nothing was applied, nothing acknowledged.
    assert node.agent.revision == 1
    assert set(node.fake.clients) == {"c1"}
    assert node.fake.apply_calls == apply_calls
    assert (await node.client.info()).applied_revision == 1
    after = await node.client.read_usage()
    assert [(e.client_id, e.rx_bytes, e.tx_bytes) for e in after.entries] == [("c1", 100, 200)]


async def test_an_agent_whose_certificate_names_another_node_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    state_dir = tmp_path / "agent"
    cluster.enroll(state_dir, "node-b")
    fake = FakeBackend("fake")
    async with running_agent(state_dir, {"fake": fake}) as running:
        async with cluster.client(running.target, "node-a", timeout=FAST) as wrong:
            assert await code_of(wrong.info()) == Code.UNAVAILABLE
            assert await code_of(wrong.apply_state(1, desired(wg_client("c1", 2)))) == (
                Code.UNAVAILABLE
            )
            delta = [pb.BackendDelta(name="fake", upsert=[wg_client("c1", 2)])]
            assert await code_of(wrong.apply_delta(0, 1, delta)) == Code.UNAVAILABLE

        assert running.agent.revision == 0
        assert fake.clients == {}
        assert fake.apply_calls == 1  # the boot
        async with cluster.client(running.target, "node-b", timeout=FAST) as right:
            info = await right.info()
        assert info.node_id == "node-b"
        assert info.applied_revision == 0


async def test_a_client_that_does_not_trust_the_cluster_ca_refuses_the_agent(node: Node) -> None:
    other = CertificateAuthority.create("some other CA")
    controller = node.cluster.controller
    credentials = ClientCredentials(other.cert_pem, controller.key_pem, controller.cert_pem)

    async with node.other_client(credentials) as client:
        assert await code_of(client.info()) == Code.UNAVAILABLE
        assert await code_of(client.apply_state(1, desired(wg_client("c1", 2)))) == (
            Code.UNAVAILABLE
        )

    assert node.agent.revision == 0
    assert node.fake.clients == {}


async def test_a_plaintext_channel_gets_nothing(node: Node) -> None:
    async with grpc.aio.insecure_channel(node.running.target) as channel:
        stub = pb_grpc.NodeAgentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetInfo(pb.GetInfoRequest(), timeout=FAST)
        assert info.value.code() == Code.UNAVAILABLE
        request = pb.ApplyStateRequest(revision=1, state=desired(wg_client("c1", 2)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ApplyState(request, timeout=FAST)
        assert info.value.code() == Code.UNAVAILABLE

    assert node.agent.revision == 0
    assert node.fake.clients == {}


# --- desired state ------------------------------------------------------------------------

BAD_KEY = pb.Client(
    id="bad", wireguard=pb.WireGuardPeer(public_key="not base64!", allowed_ips=["10.8.0.9/32"])
)
SHORT_KEY = pb.Client(
    id="short",
    wireguard=pb.WireGuardPeer(
        public_key=base64.b64encode(b"x" * 16).decode(), allowed_ips=["10.8.0.9/32"]
    ),
)
INVALID_STATES = {
    "invalid-key": desired(wg_client("c1", 2), BAD_KEY),
    "short-key": desired(SHORT_KEY),
    "no-spec": desired(pb.Client(id="empty")),
    "duplicate-client-id": desired(wg_client("c1", 2), wg_client("c1", 3)),
    "overlapping-allowed-ips": desired(
        wg_client("c1", 2),
        pb.Client(
            id="c2",
            wireguard=pb.WireGuardPeer(public_key=wg_key(3), allowed_ips=["10.8.0.0/24"]),
        ),
    ),
    "unknown-backend": desired(wg_client("c1", 2), backend="wireguard"),
    "duplicate-backend": pb.DesiredState(
        backends=[
            pb.BackendState(name="fake", clients=[wg_client("c1", 2)]),
            pb.BackendState(name="fake", clients=[wg_client("c2", 3)]),
        ]
    ),
}


@pytest.mark.parametrize(
    "state",
    [pytest.param(state, id=name) for name, state in INVALID_STATES.items()],
)
async def test_an_invalid_state_is_refused_and_nothing_is_applied(
    node: Node, state: pb.DesiredState
) -> None:
    apply_calls = node.fake.apply_calls

    with pytest.raises(NodeRpcError) as info:
        await node.client.apply_state(1, state)

    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.details  # says what is wrong
    assert (await node.client.info()).applied_revision == 0
    assert node.fake.clients == {}
    assert node.fake.apply_calls == apply_calls
    assert node.agent.store.load()[0] == 0  # nothing persisted either


async def test_apply_state_converges_the_backend(node: Node) -> None:
    result = await node.client.apply_state(1, desired(wg_client("c1", 2), wg_client("c2", 3)))

    assert result.applied_revision == 1
    assert result.boot_id == node.agent.boot_id
    assert [(b.name, b.added, b.updated, b.removed) for b in result.backends] == [("fake", 2, 0, 0)]
    assert result.backends[0].status.health == pb.BACKEND_HEALTH_OK
    assert set(node.fake.clients) == {"c1", "c2"}
    info = await node.client.info()
    assert info.applied_revision == 1
    assert info.backends[0].status.clients == 2


async def test_deltas_need_the_right_base_revision(node: Node) -> None:
    await node.client.apply_state(1, desired(wg_client("c1", 2)))
    add_c2 = [pb.BackendDelta(name="fake", upsert=[wg_client("c2", 3)])]

    with pytest.raises(NodeRpcError) as info:
        await node.client.apply_delta(0, 2, add_c2)
    assert info.value.code == Code.FAILED_PRECONDITION
    assert set(node.fake.clients) == {"c1"}
    assert (await node.client.info()).applied_revision == 1

    result = await node.client.apply_delta(1, 2, add_c2)
    assert result.applied_revision == 2
    assert [(b.name, b.added, b.removed) for b in result.backends] == [("fake", 1, 0)]
    assert set(node.fake.clients) == {"c1", "c2"}
    assert (await node.client.info()).applied_revision == 2

    remove_c1 = [pb.BackendDelta(name="fake", remove=["c1"])]
    result = await node.client.apply_delta(2, 3, remove_c1)
    assert [(b.added, b.removed) for b in result.backends] == [(0, 1)]
    assert set(node.fake.clients) == {"c2"}


@pytest.mark.parametrize(
    ("base", "revision", "delta"),
    [
        pytest.param(1, 2, [pb.BackendDelta(name="nope", upsert=[wg_client("c2", 3)])], id="name"),
        pytest.param(1, 1, [pb.BackendDelta(name="fake", upsert=[wg_client("c2", 3)])], id="rev"),
        pytest.param(1, 2, [pb.BackendDelta(name="fake", upsert=[BAD_KEY])], id="bad-key"),
        pytest.param(
            1,
            2,
            [pb.BackendDelta(name="fake"), pb.BackendDelta(name="fake", remove=["c1"])],
            id="duplicate-backend",
        ),
    ],
)
async def test_an_invalid_delta_is_refused(
    node: Node, base: int, revision: int, delta: list[pb.BackendDelta]
) -> None:
    await node.client.apply_state(1, desired(wg_client("c1", 2)))
    apply_calls = node.fake.apply_calls

    with pytest.raises(NodeRpcError) as info:
        await node.client.apply_delta(base, revision, delta)

    assert info.value.code == Code.INVALID_ARGUMENT
    assert set(node.fake.clients) == {"c1"}
    assert node.fake.apply_calls == apply_calls
    assert (await node.client.info()).applied_revision == 1


async def test_an_older_full_state_needs_force(node: Node) -> None:
    await node.client.apply_state(5, desired(wg_client("c1", 2)))

    with pytest.raises(NodeRpcError) as info:
        await node.client.apply_state(4, desired(wg_client("c9", 9)))
    assert info.value.code == Code.FAILED_PRECONDITION
    assert set(node.fake.clients) == {"c1"}
    assert (await node.client.info()).applied_revision == 5

    # The same revision again is no rollback.
    assert (await node.client.apply_state(5, desired(wg_client("c1", 2)))).applied_revision == 5

    result = await node.client.apply_state(4, desired(wg_client("c9", 9)), force=True)
    assert result.applied_revision == 4
    assert set(node.fake.clients) == {"c9"}
    assert (await node.client.info()).applied_revision == 4


async def test_the_applied_state_survives_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"
    cluster.enroll(state_dir, NODE)
    async with (
        running_agent(state_dir, {"fake": FakeBackend("fake")}) as running,
        cluster.client(running.target, NODE, timeout=FAST) as client,
    ):
        await client.apply_state(1, desired(wg_client("c1", 2), wg_client("c2", 3)))
        delta = [pb.BackendDelta(name="fake", upsert=[wg_client("c3", 4)], remove=["c1"])]
        await client.apply_delta(1, 2, delta)
        boot_id = (await client.info()).boot_id

    fake = FakeBackend("fake")
    async with running_agent(state_dir, {"fake": fake}) as running:
        assert set(fake.clients) == {"c2", "c3"}  # restored at boot, before serving
        async with cluster.client(running.target, NODE, timeout=FAST) as client:
            info = await client.info()
    assert info.applied_revision == 2
    assert info.boot_id != boot_id
    assert info.backends[0].status.clients == 2


# --- usage ------------------------------------------------------------------------------


async def test_usage_is_cumulative_and_acknowledged_entries_are_compacted(node: Node) -> None:
    await node.client.apply_state(1, desired(wg_client("c1", 2), wg_client("c2", 3)))
    assert (await node.client.read_usage()).entries == []  # no traffic yet

    node.fake.add_traffic("c1", 100, 200)
    first = await node.client.read_usage()
    assert [(e.backend, e.client_id, e.rx_bytes, e.tx_bytes) for e in first.entries] == [
        ("fake", "c1", 100, 200)
    ]
    assert first.last_cursor == first.entries[-1].cursor
    assert not first.more
    assert first.ledger_id
    assert first.entries[0].sampled_at.seconds > 0

    node.fake.add_traffic("c1", 50, 25)
    node.fake.add_traffic("c2", 7, 8)
    second = await node.client.read_usage(after_cursor=first.last_cursor)
    assert sorted((e.client_id, e.rx_bytes, e.tx_bytes) for e in second.entries) == [
        ("c1", 150, 225),  # totals, not differences
        ("c2", 7, 8),
    ]
    assert second.ledger_id == first.ledger_id
    assert second.last_cursor > first.last_cursor

    ack = await node.client.ack_usage(second.last_cursor, second.ledger_id)
    assert ack.acknowledged_cursor == second.last_cursor
    assert (await node.client.read_usage()).entries == []
    assert (await node.client.read_usage(after_cursor=second.last_cursor)).entries == []

    with pytest.raises(NodeRpcError) as info:
        await node.client.ack_usage(second.last_cursor + 1000, second.ledger_id)
    assert info.value.code == Code.INVALID_ARGUMENT

    node.fake.add_traffic("c2", 1, 1)
    third = await node.client.read_usage(after_cursor=second.last_cursor)
    assert [(e.client_id, e.rx_bytes, e.tx_bytes) for e in third.entries] == [("c2", 8, 9)]


async def test_read_usage_pages_with_a_limit(node: Node) -> None:
    await node.client.apply_state(1, desired(*(wg_client(f"c{i}", i + 2) for i in range(3))))
    for i in range(3):
        node.fake.add_traffic(f"c{i}", 10 * (i + 1), 1)

    page = await node.client.read_usage(limit=2)
    assert len(page.entries) == 2
    assert page.more
    rest = await node.client.read_usage(after_cursor=page.last_cursor, limit=2)
    assert len(rest.entries) == 1
    assert not rest.more
    seen = {e.client_id: e.rx_bytes for e in [*page.entries, *rest.entries]}
    assert seen == {"c0": 10, "c1": 20, "c2": 30}


# --- metrics, health, the rest ------------------------------------------------------------


async def test_get_metrics_returns_plausible_numbers(node: Node) -> None:
    await node.client.apply_state(1, desired(wg_client("c1", 2)))
    node.fake.add_traffic("c1", 1, 1)  # the fake marks the client online

    m = await node.client.metrics()

    assert m.memory_total_bytes > 0
    assert 0 < m.memory_used_bytes <= m.memory_total_bytes
    assert m.disk_total_bytes > 0
    assert m.disk_used_bytes <= m.disk_total_bytes
    assert m.cpu_count >= 1
    assert 0.0 <= m.cpu_percent <= 100.0
    assert m.uptime_seconds > 0
    assert m.load_1 >= 0
    assert m.clients_online == 1
    assert abs(m.sampled_at.seconds - time.time()) < 60


async def test_stream_metrics_yields_every_interval(node: Node) -> None:
    started = time.monotonic()
    items = [m async for m in node.client.stream_metrics(1, duration=3.5)]
    elapsed = time.monotonic() - started

    assert len(items) >= 2
    assert all(m.memory_total_bytes > 0 for m in items)
    assert items[-1].sampled_at.ToDatetime() > items[0].sampled_at.ToDatetime()
    assert elapsed < 6  # the deadline ends it


@pytest.mark.parametrize("interval", [5000, 3601])
async def test_stream_metrics_refuses_an_interval_out_of_range(node: Node, interval: int) -> None:
    assert await stream_code(node.client, interval) == Code.INVALID_ARGUMENT


async def test_issue_openvpn_client_names_an_unknown_or_non_issuing_backend(node: Node) -> None:
    """Issuance goes to a named backend that issues clients: an unknown name is a bad
    argument; a backend that does not issue (the fake here) is UNIMPLEMENTED."""
    assert await issue_openvpn_code(node.client) == Code.INVALID_ARGUMENT
    request = pb.IssueOpenVpnClientRequest(backend="fake", common_name="alice", valid_days=30)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.client.stub.IssueOpenVpnClient(request, timeout=FAST)
    assert info.value.code() == Code.UNIMPLEMENTED
    assert "does not issue clients" in (info.value.details() or "")


@pytest.mark.parametrize("service", ["", "nodeapi.v1.NodeAgent"])
async def test_health_check_over_the_same_mtls_channel(node: Node, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(node.client.channel)

    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=FAST)

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_agent_serves_a_unix_socket(cluster: Cluster, tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"
    cluster.enroll(state_dir, NODE)
    socket_dir = Path(tempfile.mkdtemp(prefix="na-", dir="/tmp"))  # sun_path is short
    try:
        target = f"unix:{socket_dir / 'a.sock'}"
        fake = FakeBackend("fake")
        async with running_agent(state_dir, {"fake": fake}, listen=target) as running:
            assert running.target == target
            assert (socket_dir / "a.sock").exists()
            async with cluster.client(target, NODE, timeout=FAST) as client:
                info = await client.info()
                assert info.node_id == NODE
                result = await client.apply_state(1, desired(wg_client("c1", 2)))
                assert result.applied_revision == 1
            assert set(fake.clients) == {"c1"}
            # Over the socket too, the controller identity is required.
            intruder_creds = ClientCredentials(
                cluster.ca.cert_pem, *issued(cluster.ca, "someone", ["someone.else"])
            )
            async with NodeClient(target, NODE, intruder_creds, timeout=FAST) as intruder:
                assert await code_of(intruder.info()) == Code.PERMISSION_DENIED
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


# --- shutdown ---------------------------------------------------------------------------


@pytest.fixture
async def bare_agent(cluster: Cluster, tmp_path: Path) -> AsyncIterator[tuple[Agent, AgentServer]]:
    """An agent and its server, started but stopped by the test itself."""
    state_dir = tmp_path / "agent"
    cluster.enroll(state_dir, NODE)
    credentials = load_credentials(state_dir)
    store = StateStore(state_dir / "state.db")
    ledger = UsageLedger(state_dir / "usage.db")
    agent = Agent(
        node_id=credentials.node_id,
        version="test",
        backends={"fake": FakeBackend("fake")},
        store=store,
        ledger=ledger,
    )
    await agent.boot()
    server = AgentServer(
        agent, credentials, "127.0.0.1:0", usage_interval=3600, reconcile_interval=3600
    )
    await server.start()
    try:
        yield agent, server
    finally:
        await server.server.stop(0)  # no-op when the test stopped it
        store.close()
        ledger.close()


async def test_graceful_shutdown_ends_a_stream_in_progress(
    cluster: Cluster, bare_agent: tuple[Agent, AgentServer]
) -> None:
    agent, server = bare_agent
    fake = agent.backends["fake"]
    assert isinstance(fake, FakeBackend)
    received: list[pb.HostMetrics] = []
    first = asyncio.Event()

    async with cluster.client(f"127.0.0.1:{server.port}", NODE, timeout=FAST) as client:

        async def consume() -> None:
            async for item in client.stream_metrics(1, duration=60):
                received.append(item)
                first.set()

        task = asyncio.create_task(consume())
        try:
            await asyncio.wait_for(first.wait(), 10)
            started = time.monotonic()
            await asyncio.wait_for(server.stop(grace=1), 15)  # returns
            stop_took = time.monotonic() - started
            # The stream ended with the server, long before its 60 s deadline.
            outcome = (await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10))[0]
        finally:
            task.cancel()

        assert stop_took < 10
        assert outcome is None or (
            isinstance(outcome, NodeRpcError) and outcome.code in (Code.UNAVAILABLE, Code.CANCELLED)
        ), outcome
        assert received
        assert not fake.started  # the agent closed its backends
        assert await code_of(client.info()) == Code.UNAVAILABLE  # nobody serves any more


async def test_stop_without_calls_returns_promptly(bare_agent: tuple[Agent, AgentServer]) -> None:
    _, server = bare_agent
    started = time.monotonic()
    await asyncio.wait_for(server.stop(grace=5), 10)
    assert time.monotonic() - started < 5
    assert all(task.done() for task in server._tasks)
