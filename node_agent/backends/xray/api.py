"""A minimal client of the Xray gRPC API (HandlerService, StatsService), for Xray and v2ray.

Xray-core serves ``xray.app.proxyman.command.HandlerService`` and friends; v2ray 4.x serves
the same API under ``v2ray.core.``. The messages are the same on the wire (our mirror in
``proto/xrayapi``), so the only differences are the gRPC method paths and the type names in
``TypedMessage``, both built here from ``prefix``. Every call has a timeout.

Errors: ``XrayUnavailable`` when the API does not answer (connection refused, timeout),
``XrayApiError`` when the core answers with a refusal; both are ``BackendError``. Adding a user
that exists and removing one that does not are not errors (``add_vless_user`` /
``remove_user`` return False): the caller re-sends whole states, so both must be idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf.message import Message

from node_agent.errors import BackendError
from proto.xrayapi import xray_api_pb2 as pb

Prefix = Literal["xray.", "v2ray.core."]
PREFIXES: tuple[Prefix, ...] = ("xray.", "v2ray.core.")
USER_STATS = "user>>>"
_TRAFFIC = re.compile(r"^user>>>(?P<email>.+)>>>traffic>>>(?P<dir>uplink|downlink)$")
# gRPC's defaults back a failed channel off for up to two minutes: a core that comes back
# would stay "unavailable" to us long after it answers.
_CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),  # the API is local; never through an http_proxy
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class XrayApiError(BackendError):
    """The core answered with a refusal; ``details`` is the core's own message."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class XrayUnavailable(XrayApiError):
    """The API did not answer: the core is down, starting, or the address is wrong."""


@dataclass(frozen=True, slots=True)
class UserTraffic:
    uplink: int = 0  # bytes from the client to the server
    downlink: int = 0  # bytes from the server to the client


@dataclass(frozen=True, slots=True)
class SysStats:
    uptime: int  # seconds since the core started
    goroutines: int
    alloc_bytes: int


def encode_add_vless_user(
    prefix: str, tag: str, *, email: str, uuid: str, flow: str = "", level: int = 0
) -> pb.AlterInboundRequest:
    account = pb.VlessAccount(id=uuid, flow=flow)
    user = pb.User(
        level=level,
        email=email,
        account=pb.TypedMessage(
            type=f"{prefix}proxy.vless.Account", value=account.SerializeToString()
        ),
    )
    operation = pb.AddUserOperation(user=user)
    return pb.AlterInboundRequest(
        tag=tag,
        operation=pb.TypedMessage(
            type=f"{prefix}app.proxyman.command.AddUserOperation",
            value=operation.SerializeToString(),
        ),
    )


def encode_remove_user(prefix: str, tag: str, email: str) -> pb.AlterInboundRequest:
    return pb.AlterInboundRequest(
        tag=tag,
        operation=pb.TypedMessage(
            type=f"{prefix}app.proxyman.command.RemoveUserOperation",
            value=pb.RemoveUserOperation(email=email).SerializeToString(),
        ),
    )


def parse_user_traffic(stats: pb.QueryStatsResponse) -> dict[str, UserTraffic]:
    """Per-user counters by email from a ``QueryStats("user>>>")`` answer."""
    found: dict[str, dict[str, int]] = {}
    for stat in stats.stat:
        match = _TRAFFIC.fullmatch(stat.name)
        if match is not None:
            found.setdefault(match["email"], {})[match["dir"]] = max(stat.value, 0)
    return {
        email: UserTraffic(d.get("uplink", 0), d.get("downlink", 0)) for email, d in found.items()
    }


class XrayApi:
    """One core's API at ``target`` (``HOST:PORT``; ``[::1]:PORT`` for IPv6)."""

    def __init__(self, target: str, prefix: Prefix = "xray.", timeout: float = 5.0) -> None:
        if prefix not in PREFIXES:
            raise ValueError(f"prefix must be one of {PREFIXES}")
        self.target = target
        self.prefix = prefix
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    def method(self, service: str, name: str) -> str:
        """The full gRPC path, e.g. ``/xray.app.stats.command.StatsService/QueryStats``."""
        return f"/{self.prefix}{service}/{name}"

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._calls.clear()
        if channel is not None:
            await channel.close()

    # --- HandlerService --------------------------------------------------------------------

    async def add_vless_user(
        self, tag: str, *, email: str, uuid: str, flow: str = "", level: int = 0
    ) -> bool:
        """Add a VLESS user to inbound ``tag``; False when a user with that email exists."""
        request = encode_add_vless_user(
            self.prefix, tag, email=email, uuid=uuid, flow=flow, level=level
        )
        try:
            await self._alter(request, f"adding user {email} to inbound {tag!r}")
        except XrayApiError as exc:
            if f"User {email} already exists" in exc.details:
                return False
            raise
        return True

    async def remove_user(self, tag: str, email: str) -> bool:
        """Remove the user ``email`` from inbound ``tag``; False when it was not there."""
        try:
            await self._alter(
                encode_remove_user(self.prefix, tag, email),
                f"removing user {email} from inbound {tag!r}",
            )
        except XrayApiError as exc:
            # Exactly the user's own "not found": a missing inbound says "handler not found".
            if f"User {email} not found" in exc.details:
                return False
            raise
        return True

    async def _alter(self, request: pb.AlterInboundRequest, what: str) -> None:
        await self._call(
            "app.proxyman.command.HandlerService",
            "AlterInbound",
            request,
            pb.AlterInboundResponse,
            what,
        )

    # --- StatsService ----------------------------------------------------------------------

    async def query_stats(self, pattern: str, *, reset: bool = False) -> pb.QueryStatsResponse:
        return await self._call(
            "app.stats.command.StatsService",
            "QueryStats",
            pb.QueryStatsRequest(pattern=pattern, reset=reset),
            pb.QueryStatsResponse,
            "querying stats",
        )

    async def user_traffic(self) -> dict[str, UserTraffic]:
        """Every user's counters by email, read without resetting them."""
        return parse_user_traffic(await self.query_stats(USER_STATS, reset=False))

    async def sys_stats(self) -> SysStats:
        answer = await self._call(
            "app.stats.command.StatsService",
            "GetSysStats",
            pb.SysStatsRequest(),
            pb.SysStatsResponse,
            "reading system stats",
        )
        return SysStats(answer.Uptime, answer.NumGoroutine, answer.Alloc)

    # --- transport -------------------------------------------------------------------------

    async def _call(
        self, service: str, name: str, request: Req, response: type[Resp], what: str
    ) -> Resp:
        path = self.method(service, name)
        call = self._calls.get(path)
        if call is None:
            if self._channel is None:
                # Plaintext on purpose: the core's API speaks no TLS. It listens on the node's
                # loopback by default, and the VLESS inbound's routing blackholes loopback,
                # private networks and the API's port for clients.
                self._channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
            deserialize: Callable[[bytes], Resp] = response.FromString
            call = self._channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=deserialize,
            )
            self._calls[path] = call
        try:
            result: Resp = await call(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, path, what) from None
        return result

    def _error(self, exc: grpc.aio.AioRpcError, path: str, what: str) -> XrayApiError:
        code, details = exc.code(), exc.details() or ""
        if code in _UNREACHABLE:
            return XrayUnavailable(
                f"Xray API at {self.target} did not answer {what} ({code.name}: {details})",
                details,
            )
        if code is grpc.StatusCode.UNIMPLEMENTED or "Unknown type" in details:
            return XrayApiError(
                f"Xray API at {self.target} does not know {path} ({details}): is the API "
                f"prefix {self.prefix!r} right for this core (xray. for Xray, v2ray.core. for "
                "v2ray 4.x) and is the service enabled in its config?",
                details,
            )
        return XrayApiError(f"Xray refused {what}: {details or code.name}", details)
