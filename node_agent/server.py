"""The agent's gRPC server: the ``nodeapi.v1.NodeAgent`` service and ``grpc.health.v1``
over mutual TLS, plus the agent's periodic work (usage sampling, reconcile)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from common.tasks import TaskSet
from node_agent import convert
from node_agent.agent import Agent, ApplyOutcome
from node_agent.backends.base import IssuesClients
from node_agent.errors import (
    AgentError,
    BackendError,
    InvalidStateError,
    LedgerMismatchError,
    NotSupportedError,
    RevisionMismatchError,
)
from node_agent.metrics import MetricsCollector
from node_agent.tls import AgentCredentials, is_controller
from proto.nodeapi.v1 import node_agent_pb2 as pb
from proto.nodeapi.v1 import node_agent_pb2_grpc as pb_grpc

log = structlog.get_logger("node_agent")

CAPABILITIES = ("apply_state", "apply_delta", "usage_ledger", "metrics_stream")
DEFAULT_STREAM_INTERVAL = 10
CONTROLLER_REQUIRED = "the controller identity is required"
DEFAULT_CLIENT_DAYS = 3650
MAX_CLIENT_DAYS = 3650
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a full state of 10k+ peers is several MB

Context = grpc.aio.ServicerContext[object, object]
T = TypeVar("T")

_STATUS = {
    InvalidStateError: grpc.StatusCode.INVALID_ARGUMENT,
    RevisionMismatchError: grpc.StatusCode.FAILED_PRECONDITION,
    LedgerMismatchError: grpc.StatusCode.FAILED_PRECONDITION,
    BackendError: grpc.StatusCode.UNAVAILABLE,
    NotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
}


async def _guard(context: Context, call: Callable[[], Awaitable[T]]) -> T:
    """Refuse callers without the controller identity; turn agent errors into statuses."""
    if not is_controller(context):
        log.warning("caller_refused", peer=context.peer())
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, CONTROLLER_REQUIRED)
    try:
        return await call()
    except AgentError as exc:
        code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), grpc.StatusCode.INTERNAL)
        await context.abort(code, str(exc))
    raise AssertionError("unreachable")  # abort() raises


class NodeAgentService(pb_grpc.NodeAgentServicer):
    def __init__(self, agent: Agent, metrics: MetricsCollector) -> None:
        self.agent = agent
        self.metrics = metrics

    async def GetInfo(self, request: pb.GetInfoRequest, context: Context) -> pb.AgentInfo:
        async def run() -> pb.AgentInfo:
            statuses = await self.agent.statuses()
            return pb.AgentInfo(
                node_id=self.agent.node_id,
                agent_version=self.agent.version,
                boot_id=self.agent.boot_id,
                applied_revision=self.agent.revision,
                capabilities=list(CAPABILITIES),
                backends=[
                    convert.backend_info_to_pb(name, b.kind, statuses[name], b.public_params())
                    for name, b in self.agent.backends.items()
                ],
                started_at=convert.timestamp(self.agent.started_at),
            )

        return await _guard(context, run)

    def _result(self, outcome: ApplyOutcome) -> pb.ApplyResult:
        return pb.ApplyResult(
            applied_revision=outcome.revision,
            boot_id=self.agent.boot_id,
            backends=[
                pb.BackendApplyResult(
                    name=o.name,
                    added=o.report.added,
                    updated=o.report.updated,
                    removed=o.report.removed,
                    status=convert.status_to_pb(o.status),
                )
                for o in outcome.backends
            ],
        )

    async def ApplyState(self, request: pb.ApplyStateRequest, context: Context) -> pb.ApplyResult:
        async def run() -> pb.ApplyResult:
            state = convert.state_from_pb(request.state)
            outcome = await self.agent.apply_full(
                request.revision,
                state,
                force=request.force,
                named=[b.name for b in request.state.backends],
            )
            return self._result(outcome)

        return await _guard(context, run)

    async def ApplyDelta(self, request: pb.ApplyDeltaRequest, context: Context) -> pb.ApplyResult:
        async def run() -> pb.ApplyResult:
            upserts, removals = convert.delta_from_pb(request)
            outcome = await self.agent.apply_delta(
                request.base_revision, request.revision, upserts, removals
            )
            return self._result(outcome)

        return await _guard(context, run)

    async def ReadUsage(
        self, request: pb.ReadUsageRequest, context: Context
    ) -> pb.ReadUsageResponse:
        async def run() -> pb.ReadUsageResponse:
            await self.agent.sample_usage()  # fresh figures for whoever asks
            page = await asyncio.to_thread(
                self.agent.ledger.read, request.after_cursor, request.limit
            )
            return pb.ReadUsageResponse(
                entries=[
                    pb.UsageEntry(
                        cursor=e.cursor,
                        backend=e.backend,
                        client_id=e.client_id,
                        rx_bytes=e.rx_bytes,
                        tx_bytes=e.tx_bytes,
                        sampled_at=convert.timestamp(e.sampled_at),
                    )
                    for e in page.entries
                ],
                last_cursor=page.last_cursor,
                more=page.more,
                ledger_id=page.ledger_id,
            )

        return await _guard(context, run)

    async def AckUsage(self, request: pb.AckUsageRequest, context: Context) -> pb.AckUsageResponse:
        async def run() -> pb.AckUsageResponse:
            if not request.ledger_id:
                raise InvalidStateError("ledger_id is required (from the ReadUsageResponse)")
            acked = await asyncio.to_thread(
                self.agent.ledger.acknowledge, request.cursor, request.ledger_id
            )
            return pb.AckUsageResponse(acknowledged_cursor=acked)

        return await _guard(context, run)

    async def _metrics(self) -> pb.HostMetrics:
        online = sum(s.clients_online for s in (await self.agent.statuses()).values())
        m = self.metrics.sample(online)
        return pb.HostMetrics(
            sampled_at=convert.timestamp(m.sampled_at),
            cpu_percent=m.cpu_percent,
            cpu_count=m.cpu_count,
            memory_total_bytes=m.memory_total,
            memory_used_bytes=m.memory_used,
            disk_total_bytes=m.disk_total,
            disk_used_bytes=m.disk_used,
            network_rx_bytes=m.network_rx,
            network_tx_bytes=m.network_tx,
            load_1=m.load[0],
            load_5=m.load[1],
            load_15=m.load[2],
            uptime_seconds=m.uptime_seconds,
            clients_online=m.clients_online,
        )

    async def GetMetrics(self, request: pb.GetMetricsRequest, context: Context) -> pb.HostMetrics:
        return await _guard(context, self._metrics)

    async def StreamMetrics(
        self, request: pb.StreamMetricsRequest, context: Context
    ) -> AsyncIterator[pb.HostMetrics]:
        if not is_controller(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, CONTROLLER_REQUIRED)
        interval = request.interval_seconds or DEFAULT_STREAM_INTERVAL
        if not 1 <= interval <= 3600:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "interval_seconds must be 1..3600 (or 0)"
            )
        while True:
            yield await self._metrics()
            await asyncio.sleep(interval)

    async def IssueOpenVpnClient(
        self, request: pb.IssueOpenVpnClientRequest, context: Context
    ) -> pb.IssueOpenVpnClientResponse:
        async def run() -> pb.IssueOpenVpnClientResponse:
            backend = self.agent.backends.get(request.backend)
            if backend is None:
                raise InvalidStateError(f"unknown backend {request.backend!r}")
            if not isinstance(backend, IssuesClients):
                raise NotSupportedError(f"backend {request.backend!r} does not issue clients")
            days = request.valid_days or DEFAULT_CLIENT_DAYS
            if not 1 <= days <= MAX_CLIENT_DAYS:
                raise InvalidStateError(f"valid_days must be 1..{MAX_CLIENT_DAYS}")
            issued = await backend.issue_client(request.common_name, days)
            log.info(
                "openvpn_client_issued", backend=request.backend, common_name=issued.common_name
            )
            return pb.IssueOpenVpnClientResponse(
                common_name=issued.common_name,
                certificate_pem=issued.certificate_pem,
                profile=issued.profile,
                not_after=convert.timestamp(issued.not_after),
            )

        return await _guard(context, run)


HealthContext = grpc.aio.ServicerContext[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]


class _ControllerOnlyHealth(health_aio.HealthServicer):
    """grpc.health.v1, answered to the controller only, like everything else here."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: HealthContext
    ) -> health_pb2.HealthCheckResponse:
        if not is_controller(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, CONTROLLER_REQUIRED)
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: HealthContext) -> None:
        if not is_controller(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, CONTROLLER_REQUIRED)
        await super().Watch(request, context)


class AgentServer:
    """The serving agent: gRPC server plus owned background tasks, stopped gracefully."""

    def __init__(
        self,
        agent: Agent,
        credentials: AgentCredentials,
        listen: str,
        *,
        usage_interval: float = 30.0,
        reconcile_interval: float = 60.0,
        metrics: MetricsCollector | None = None,
    ) -> None:
        self.agent = agent
        self.credentials = credentials
        self.listen = listen
        self.usage_interval = usage_interval
        self.reconcile_interval = reconcile_interval
        self.metrics = metrics or MetricsCollector()
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # A second agent must fail to bind, not silently share the port.
                ("grpc.so_reuseport", 0),
            ]
        )
        self.health = _ControllerOnlyHealth()
        self._tasks = TaskSet()
        self.port = 0

    async def start(self) -> None:
        pb_grpc.add_NodeAgentServicer_to_server(
            NodeAgentService(self.agent, self.metrics), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        try:
            self.port = self.server.add_secure_port(
                self.listen, self.credentials.server_credentials()
            )
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.listen}: {exc}") from None
        await self.server.start()
        for service in ("", "nodeapi.v1.NodeAgent"):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.spawn(
            self._every(self.usage_interval, self.agent.sample_usage, "usage_sample"),
            name="usage_sample",
        )
        self._tasks.spawn(
            self._every(self.reconcile_interval, self.agent.reconcile, "reconcile"),
            name="reconcile",
        )

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]], what: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # a failed round must not end the loop
                log.exception("periodic_job_failed", job=what)

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self._tasks.cancel_all()
        await self.agent.close()
