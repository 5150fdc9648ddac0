"""The hub's reads and writes: what a node should have, and what it reported.

Each method is one short transaction; nothing here talks to an agent.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog

from common.clock import Clock
from common.tasks import TaskSet
from controller.crypto import SecretBox, open_config_secret
from controller.db.models import ServerStats, UsageCounter
from controller.db.uow import UnitOfWorkFactory
from controller.domain import rules
from controller.domain.enums import NodeStatus, SubscriptionStatus, SuspendReason, VpnProtocol
from controller.nodes.desired import ConfigRow, NodeState, build_state
from proto.nodeapi.v1 import node_agent_pb2 as pb

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

PARAMS_COLUMN = {
    VpnProtocol.WIREGUARD: "wireguard_config",
    VpnProtocol.OPENVPN: "openvpn_config",
    VpnProtocol.VLESS: "vless_config",
}


_PSK_CACHE_MAX = 500_000


@dataclass(frozen=True, slots=True)
class NodeTarget:
    server_id: int
    name: str
    node_id: str
    target: str  # host:port the agent serves gRPC on
    desired_revision: int = 0


@dataclass(frozen=True, slots=True)
class Desired:
    revision: int
    state: NodeState | None  # None: the node has not reported its backends yet
    known_boot_id: str | None
    applied_revision: int


def backends_of(server_params: dict[VpnProtocol, dict[str, Any] | None]) -> dict[VpnProtocol, str]:
    return {
        protocol: str(params["backend"])
        for protocol, params in server_params.items()
        if params and params.get("backend")
    }


# What an agent reports is input like any other: bounded before it reaches the database or
# a client's config file.
MAX_COUNTER = 2**62
MAX_REVISION = 2**62
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# What goes verbatim into a client's share link: X25519 keys in base64url (43 characters),
# short ids of 0-16 hex digits, DNS names, uTLS fingerprint names.
_REALITY_KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SHORT_ID = re.compile(r"^(?:[0-9a-f]{2}){0,8}$")
_SERVER_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_FINGERPRINT = re.compile(r"^[a-z0-9_]{1,32}$")


def _wg_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _addresses(values: Sequence[str]) -> list[str] | None:
    checked = []
    for value in values[:16]:
        try:
            interface = ipaddress.ip_interface(value)
        except ValueError:
            return None
        if "/" not in value or interface.ip == interface.network.network_address:
            return None
        checked.append(str(interface))
    return checked or None


def _text(value: str, limit: int = 255) -> str:
    return "".join(c for c in value if c.isprintable())[:limit]


def _params(backend: pb.BackendInfo) -> tuple[str, dict[str, Any]] | None:
    """The backend's public parameters as (protocol column, values), or None when they are
    missing or malformed (then the node does not serve that protocol)."""
    which = backend.WhichOneof("params")
    if which == "wireguard":
        wg = backend.wireguard
        addresses = _addresses(list(wg.addresses))
        if not (_wg_key(wg.public_key) and 1 <= wg.listen_port <= 65535 and addresses):
            return None
        return "wireguard", {
            "backend": backend.name,
            "public_key": wg.public_key,
            "listen_port": wg.listen_port,
            "addresses": addresses,
            "interface": _text(wg.interface, 64),
        }
    if which == "openvpn":
        ovpn = backend.openvpn
        if not 1 <= ovpn.port <= 65535 or ovpn.transport not in ("udp", "tcp", ""):
            return None
        return "openvpn", {
            "backend": backend.name,
            "port": ovpn.port,
            "transport": ovpn.transport or "udp",
            "ca_certificate_pem": ovpn.ca_certificate_pem[:16384],
        }
    if which == "reality":
        reality = backend.reality
        server_names = [n for n in list(reality.server_names)[:16] if _SERVER_NAME.fullmatch(n)]
        if not (
            1 <= reality.port <= 65535
            and _REALITY_KEY.fullmatch(reality.public_key)
            and server_names
            and all(_SHORT_ID.fullmatch(i) for i in reality.short_ids)
            and reality.flow in ("", "xtls-rprx-vision")
            and _FINGERPRINT.fullmatch(reality.fingerprint or "chrome")
        ):
            return None
        return "vless", {
            "backend": backend.name,
            "port": reality.port,
            "public_key": reality.public_key,
            "short_ids": list(reality.short_ids)[:16],
            "server_names": server_names,
            "flow": reality.flow,
            "fingerprint": reality.fingerprint or "chrome",
        }
    return None


def params_from_info(
    info: pb.AgentInfo,
) -> tuple[dict[VpnProtocol, dict[str, Any] | None], list[str]]:
    """The public parameters per protocol from agent info (the first backend of each), and
    the names of backends whose parameters were malformed."""
    found: dict[VpnProtocol, dict[str, Any] | None] = dict.fromkeys(PARAMS_COLUMN)
    invalid: list[str] = []
    for backend in info.backends:
        if backend.WhichOneof("params") is None:
            continue
        parsed = _params(backend) if _NAME.fullmatch(backend.name) else None
        if parsed is None:
            invalid.append(_text(backend.name, 64) or "?")
            continue
        protocol = VpnProtocol(parsed[0])
        if found[protocol] is None:
            found[protocol] = parsed[1]
    return found, invalid


def health_of(
    backends: Sequence[pb.BackendInfo] | Sequence[pb.BackendApplyResult],
) -> tuple[NodeStatus, str | None]:
    problems = [
        f"{b.name}: {b.status.reason or pb.BackendHealth.Name(b.status.health)}"
        for b in backends
        if b.status.health not in (pb.BACKEND_HEALTH_OK, pb.BACKEND_HEALTH_UNSPECIFIED)
    ]
    if problems:
        return NodeStatus.DEGRADED, "; ".join(problems)[:500]
    return NodeStatus.ONLINE, None


def _shielded(
    method: Callable[Concatenate[HubStore, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[HubStore, P], Coroutine[Any, Any, T]]:
    """Run the transaction as its own task that a cancelled caller cannot cut short.

    The hub cancels node workers (node removed, hub stopping) at any await. A transaction
    interrupted inside the database driver can leave its connection holding SQLite's write
    lock, locking out every other writer of the controller; shielded, it always ends in a
    commit or a rollback. :meth:`HubStore.drain` waits for the ones still running.
    """

    async def wrapper(self: HubStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._pending.shield(method(self, *args, **kwargs))

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class HubStore:
    def __init__(self, uow_factory: UnitOfWorkFactory, box: SecretBox, clock: Clock) -> None:
        self._uow = uow_factory
        self._box = box
        self._now = clock
        self._psk_cache: dict[int, tuple[bytes, str | None]] = {}
        self._pending = TaskSet()

    async def drain(self) -> None:
        """Wait for transactions whose callers were cancelled."""
        await self._pending.drain()

    @_shielded
    async def targets(self) -> list[NodeTarget]:
        async with self._uow().read_only() as uow:
            servers = await uow.nodes.list_all(enrolled_only=True)
            return [
                NodeTarget(
                    s.id,
                    s.name,
                    s.node_uid,
                    grpc_target(s.ip_address, s.grpc_port),
                    s.desired_revision,
                )
                for s in servers
                if s.is_active
            ]

    @_shielded
    async def revisions(self) -> dict[int, tuple[int, int]]:
        async with self._uow().read_only() as uow:
            return {r.server_id: (r.desired, r.applied) for r in await uow.nodes.revisions()}

    @_shielded
    async def desired(self, server_id: int) -> Desired | None:
        """The node's desired revision and full state. The revision is read first: rows
        committed after it can only make the state newer than its label, never older."""
        async with self._uow().read_only() as uow:
            revision = await uow.nodes.desired_revision(server_id)
            server = await uow.nodes.get(server_id)
            if revision is None or server is None:
                return None
            backends = backends_of(
                {p: getattr(server, column) for p, column in PARAMS_COLUMN.items()}
            )
            rows = await uow.configs.node_rows(server_id)
            if not backends:
                return Desired(revision, None, server.agent_boot_id, server.applied_revision)
            configs = []
            for row in rows:
                protocol = VpnProtocol(row.protocol)
                psk = None
                if protocol is VpnProtocol.WIREGUARD and row.secret_encrypted is not None:
                    psk = self._preshared_key(row.id, row.secret_encrypted)
                data = row.config_data or {}
                configs.append(
                    ConfigRow(
                        config_id=row.id,
                        protocol=protocol,
                        client_id=row.client_id,
                        config_active=row.is_active,
                        status=SubscriptionStatus(row.status),
                        expires_at=row.expires_at,
                        banned=row.is_banned,
                        address=data.get("address"),
                        preshared_key=psk,
                        extra=data,
                    )
                )
            state = build_state(backends, configs, self._now())
            return Desired(revision, state, server.agent_boot_id, server.applied_revision)

    def _preshared_key(self, config_id: int, blob: bytes) -> str | None:
        """Decrypt a config's PSK once per sealed value (every sync rebuilds the state)."""
        cached = self._psk_cache.get(config_id)
        if cached is not None and cached[0] == blob:
            return cached[1]
        if len(self._psk_cache) > _PSK_CACHE_MAX:
            self._psk_cache.clear()
        psk = open_config_secret(self._box, config_id, blob).get("preshared_key")
        self._psk_cache[config_id] = (blob, psk)
        return psk

    @_shielded
    async def raise_revision(self, server_id: int, above: int) -> int:
        """A new desired revision greater than ``above`` (the agent's) for a state the hub
        found changed without a bump, or a node ahead of a restored database."""
        async with self._uow() as uow:
            revision = await uow.nodes.raise_desired_revision(server_id, above + 1)
            await uow.commit()
            return revision

    @_shielded
    async def record_info(self, server_id: int, info: pb.AgentInfo) -> None:
        status, reason = health_of(info.backends)
        params, invalid = params_from_info(info)
        if invalid:
            status = NodeStatus.DEGRADED
            reason = "; ".join(
                [*([reason] if reason else []), f"malformed parameters from {', '.join(invalid)}"]
            )[:500]
        values: dict[str, Any] = {
            "agent_boot_id": _text(info.boot_id, 64),
            "agent_version": _text(info.agent_version, 32),
            "status": status,
            "status_reason": reason,
            "last_seen_at": self._now(),
            "last_check": self._now(),
        }
        for protocol, column in PARAMS_COLUMN.items():
            values[column] = params[protocol]
        async with self._uow() as uow:
            await uow.nodes.update_fields(server_id, **values)
            await uow.commit()

    @_shielded
    async def record_applied(self, server_id: int, result: pb.ApplyResult) -> None:
        values: dict[str, Any] = {
            "applied_revision": result.applied_revision,
            "agent_boot_id": _text(result.boot_id, 64),
            "last_seen_at": self._now(),
        }
        if result.backends:  # a delta reports only the backends it touched
            values["status"], values["status_reason"] = health_of(result.backends)
        async with self._uow() as uow:
            await uow.nodes.update_fields(server_id, **values)
            await uow.commit()

    @_shielded
    async def record_down(self, server_id: int, reason: str) -> None:
        async with self._uow() as uow:
            await uow.nodes.update_fields(
                server_id,
                status=NodeStatus.DOWN,
                status_reason=reason[:500],
                last_check=self._now(),
            )
            await uow.commit()

    @_shielded
    async def record_refused(self, server_id: int, reason: str) -> None:
        async with self._uow() as uow:
            await uow.nodes.update_fields(
                server_id,
                status=NodeStatus.DEGRADED,
                status_reason=f"the agent refused the desired state: {reason}"[:500],
                last_check=self._now(),
            )
            await uow.commit()

    @_shielded
    async def record_metrics(self, server_id: int, metrics: pb.HostMetrics) -> None:
        memory = _percent(metrics.memory_used_bytes, metrics.memory_total_bytes)
        disk = _percent(metrics.disk_used_bytes, metrics.disk_total_bytes)
        async with self._uow() as uow:
            await uow.nodes.add_stats(
                ServerStats(
                    server_id=server_id,
                    cpu_usage=metrics.cpu_percent,
                    memory_usage=memory,
                    disk_usage=disk,
                    active_connections=metrics.clients_online,
                    total_traffic_bytes=metrics.network_rx_bytes + metrics.network_tx_bytes,
                    network_rx_bytes=metrics.network_rx_bytes,
                    network_tx_bytes=metrics.network_tx_bytes,
                    load_avg_1m=metrics.load_1,
                    uptime_seconds=metrics.uptime_seconds,
                    recorded_at=self._now(),
                )
            )
            await uow.nodes.update_fields(
                server_id,
                cpu_usage=metrics.cpu_percent,
                memory_usage=memory,
                disk_usage=disk,
                current_users=metrics.clients_online,
                last_check=self._now(),
            )
            await uow.commit()

    @_shielded
    async def prune_stats(self, retention_days: int) -> int:
        async with self._uow() as uow:
            deleted = await uow.nodes.delete_stats_before(
                self._now() - dt.timedelta(days=retention_days)
            )
            await uow.commit()
            return deleted

    @_shielded
    async def account_usage(
        self, server_id: int, ledger_id: str, entries: Sequence[pb.UsageEntry]
    ) -> list[int]:
        """Count a page of the node's usage ledger, in one transaction.

        Entries carry cumulative totals; what is added is the growth over the stored
        baseline, so a page read twice (its acknowledgement lost) adds nothing the second
        time. Subscriptions that reach their traffic limit are suspended (and their nodes
        bumped) in the same transaction. Returns the ids suspended.
        """
        if not entries:
            return []
        now = self._now()
        # The newest entry per client wins (entries carry totals).
        if not ledger_id or len(ledger_id) > 64:
            raise ValueError("the agent sent a malformed usage ledger id")
        latest: dict[tuple[str, str], pb.UsageEntry] = {}
        for entry in entries:
            if (
                entry.rx_bytes > MAX_COUNTER
                or entry.tx_bytes > MAX_COUNTER
                or not _NAME.fullmatch(entry.backend)
                or not 0 < len(entry.client_id) <= 255
            ):
                log.warning("usage_entry_ignored", server_id=server_id, backend=entry.backend[:64])
                continue
            latest[(entry.backend, entry.client_id)] = entry
        suspended: list[int] = []
        async with self._uow() as uow:
            server = await uow.nodes.get(server_id)
            if server is None:
                return []
            protocol_of = {
                name: protocol
                for protocol, name in backends_of(
                    {p: getattr(server, c) for p, c in PARAMS_COLUMN.items()}
                ).items()
            }
            baselines = await uow.usage.baselines(server_id, list(latest))
            # Owners of clients seen for the first time (or not yet attributed).
            unowned = [
                k for k in latest if (c := baselines.get(k)) is None or c.subscription_id is None
            ]
            owners: dict[tuple[str, str], tuple[int, int]] = {}
            for backend in {key[0] for key in unowned}:
                protocol = protocol_of.get(backend)
                if protocol is not None:
                    clients = [key[1] for key in unowned if key[0] == backend]
                    for client_id, ids in (
                        await uow.configs.by_client(server_id, protocol, clients)
                    ).items():
                        owners[(backend, client_id)] = ids
            by_config: dict[int, int] = {}
            by_subscription: dict[int, int] = {}
            for key, entry in latest.items():
                counter = baselines.get(key)
                if counter is None:
                    counter = UsageCounter(
                        server_id=server_id,
                        backend=key[0],
                        client_id=key[1],
                        ledger_id=ledger_id,
                        rx_total=0,
                        tx_total=0,
                    )
                    uow.usage.add(counter)
                elif counter.ledger_id != ledger_id:  # a new ledger starts from zero
                    counter.ledger_id, counter.rx_total, counter.tx_total = ledger_id, 0, 0
                if key in owners:
                    counter.vpn_config_id, counter.subscription_id = owners[key]
                added = max(0, entry.rx_bytes - counter.rx_total) + max(
                    0, entry.tx_bytes - counter.tx_total
                )
                counter.rx_total = max(counter.rx_total, entry.rx_bytes)
                counter.tx_total = max(counter.tx_total, entry.tx_bytes)
                counter.updated_at = now
                if not added or counter.subscription_id is None:
                    continue
                if counter.vpn_config_id is not None:  # None: the config was deleted since
                    by_config[counter.vpn_config_id] = (
                        by_config.get(counter.vpn_config_id, 0) + added
                    )
                by_subscription[counter.subscription_id] = (
                    by_subscription.get(counter.subscription_id, 0) + added
                )
            await uow.session.flush()
            for config_id, amount in sorted(by_config.items()):
                await uow.configs.add_traffic(config_id, amount, now)
            for subscription_id, amount in sorted(by_subscription.items()):
                state = await uow.subscriptions.add_traffic(subscription_id, amount)
                if (
                    state is not None
                    and state.status is SubscriptionStatus.ACTIVE
                    and rules.traffic_limit_reached(state.used_bytes, state.limit_bytes)
                    and await uow.subscriptions.suspend_if_active(
                        subscription_id, SuspendReason.TRAFFIC_LIMIT, now
                    )
                ):
                    suspended.append(subscription_id)
            if suspended:
                await uow.touch_subscriptions(suspended)
            await uow.commit()
        if suspended:
            log.info("traffic_limit_reached", subscriptions=suspended, server_id=server_id)
        return suspended


def _percent(used: int, total: int) -> float:
    return round(100.0 * used / total, 2) if total else 0.0


def grpc_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
