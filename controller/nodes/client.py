"""The controller's gRPC client for one node agent, over mutual TLS.

The channel trusts only the cluster CA and uses the node's identity as the TLS target name,
so the handshake itself fails unless the agent's certificate SAN names the node we meant to
call (an agent of another node, or a certificate from another CA, is refused before any
request is sent). Every call carries a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

from proto.nodeapi.v1 import node_agent_pb2 as pb
from proto.nodeapi.v1 import node_agent_pb2_grpc as pb_grpc
from proto.nodeapi.v1.identity import node_dns_name

DEFAULT_TIMEOUT = 10.0
APPLY_TIMEOUT = 60.0  # a full state of 10k peers takes seconds on a busy node
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class NodeRpcError(Exception):
    """A call to an agent failed; ``code`` says how (UNAVAILABLE: unreachable or refused)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes


class NodeClient:
    def __init__(
        self,
        target: str,
        node_id: str,
        credentials: ClientCredentials,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.target = target
        self.node_id = node_id
        self.timeout = timeout
        name = node_dns_name(node_id)
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=credentials.ca_pem,
            private_key=credentials.key_pem,
            certificate_chain=credentials.cert_pem,
        )
        self.channel = grpc.aio.secure_channel(
            target,
            channel_credentials,
            options=[
                ("grpc.ssl_target_name_override", name),
                ("grpc.default_authority", name),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.stub = pb_grpc.NodeAgentStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None = None,  # noqa: ASYNC109 - it is the gRPC deadline
    ) -> Resp:
        try:
            return await method(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise NodeRpcError(exc.code(), exc.details() or "") from None

    async def info(self) -> pb.AgentInfo:
        return await self._unary(self.stub.GetInfo, pb.GetInfoRequest())

    async def apply_state(
        self, revision: int, state: pb.DesiredState, *, force: bool = False
    ) -> pb.ApplyResult:
        request = pb.ApplyStateRequest(revision=revision, state=state, force=force)
        return await self._unary(self.stub.ApplyState, request, max(self.timeout, APPLY_TIMEOUT))

    async def apply_delta(
        self, base_revision: int, revision: int, backends: list[pb.BackendDelta]
    ) -> pb.ApplyResult:
        request = pb.ApplyDeltaRequest(
            base_revision=base_revision, revision=revision, backends=backends
        )
        return await self._unary(self.stub.ApplyDelta, request, max(self.timeout, APPLY_TIMEOUT))

    async def read_usage(self, after_cursor: int = 0, limit: int = 0) -> pb.ReadUsageResponse:
        request = pb.ReadUsageRequest(after_cursor=after_cursor, limit=limit)
        return await self._unary(self.stub.ReadUsage, request)

    async def ack_usage(self, cursor: int, ledger_id: str) -> pb.AckUsageResponse:
        """Acknowledge entries up to ``cursor`` of the ledger ``ledger_id`` (both from the
        ReadUsageResponse), after they are committed on our side."""
        request = pb.AckUsageRequest(cursor=cursor, ledger_id=ledger_id)
        return await self._unary(self.stub.AckUsage, request)

    async def issue_openvpn_client(
        self, backend: str, common_name: str, valid_days: int = 0
    ) -> pb.IssueOpenVpnClientResponse:
        request = pb.IssueOpenVpnClientRequest(
            backend=backend, common_name=common_name, valid_days=valid_days
        )
        return await self._unary(self.stub.IssueOpenVpnClient, request)

    async def metrics(self) -> pb.HostMetrics:
        return await self._unary(self.stub.GetMetrics, pb.GetMetricsRequest())

    async def stream_metrics(
        self, interval_seconds: int, *, duration: float
    ) -> AsyncIterator[pb.HostMetrics]:
        """Metrics every ``interval_seconds`` for at most ``duration`` seconds (the deadline)."""
        call = self.stub.StreamMetrics(
            pb.StreamMetricsRequest(interval_seconds=interval_seconds), timeout=duration
        )
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise NodeRpcError(exc.code(), exc.details() or "") from None
        finally:
            call.cancel()
