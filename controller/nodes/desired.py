"""The desired-state builder: a pure function from a node's config rows to the full state
its agent must converge to, and the delta between two such states.

``NodeState`` maps backend name -> client id -> ``pb.Client``. Every backend the node
reported is present (an empty one means "no clients"), so a full apply never leaves a
backend's old clients behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controller.domain.enums import SubscriptionStatus, VpnProtocol
from controller.domain.placement import has_access
from proto.nodeapi.v1 import node_agent_pb2 as pb

NodeState = dict[str, dict[str, pb.Client]]


@dataclass(frozen=True, slots=True)
class ConfigRow:
    """One config of the node, with what decides whether its client is on the node."""

    config_id: int
    protocol: VpnProtocol
    client_id: str
    config_active: bool
    status: SubscriptionStatus
    expires_at: datetime | None
    banned: bool
    address: str | None = None  # WireGuard tunnel address (no prefix)
    preshared_key: str | None = None  # WireGuard PSK, decrypted by the caller
    extra: Mapping[str, object] = field(default_factory=dict)


def _client(row: ConfigRow) -> pb.Client | None:
    if row.protocol is VpnProtocol.WIREGUARD:
        if not row.address:
            return None
        prefix = "/128" if ":" in row.address else "/32"
        return pb.Client(
            id=row.client_id,
            wireguard=pb.WireGuardPeer(
                public_key=row.client_id,
                preshared_key=row.preshared_key or "",
                allowed_ips=[row.address + prefix],
            ),
        )
    if row.protocol is VpnProtocol.OPENVPN:
        return pb.Client(id=row.client_id, openvpn=pb.OpenVpnClient(common_name=row.client_id))
    if row.protocol is VpnProtocol.VLESS:
        flow = row.extra.get("flow")
        return pb.Client(
            id=row.client_id,
            vless=pb.VlessUser(
                uuid=row.client_id,
                flow=flow if isinstance(flow, str) else "",
                email=f"config-{row.config_id}",
            ),
        )
    return None


def build_state(
    backends: Mapping[VpnProtocol, str], rows: Iterable[ConfigRow], now: datetime
) -> NodeState:
    """The node's full desired state: every entitled config whose protocol the node has a
    backend for, in that backend."""
    state: NodeState = {name: {} for name in backends.values()}
    for row in rows:
        backend = backends.get(row.protocol)
        if backend is None or not has_access(
            config_active=row.config_active,
            status=row.status,
            expires_at=row.expires_at,
            banned=row.banned,
            now=now,
        ):
            continue
        client = _client(row)
        if client is not None:
            state[backend][client.id] = client
    return state


def to_proto(state: NodeState) -> pb.DesiredState:
    return pb.DesiredState(
        backends=[
            pb.BackendState(name=name, clients=[clients[c] for c in sorted(clients)])
            for name, clients in sorted(state.items())
        ]
    )


def diff(old: NodeState, new: NodeState) -> list[pb.BackendDelta]:
    """What turns ``old`` into ``new``: upserts and removals per backend (empty: equal)."""
    deltas: list[pb.BackendDelta] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, {}), new.get(name, {})
        upsert = [after[c] for c in sorted(after) if before.get(c) != after[c]]
        remove = sorted(c for c in before if c not in after)
        if upsert or remove:
            deltas.append(pb.BackendDelta(name=name, upsert=upsert, remove=remove))
    return deltas


def count_clients(state: NodeState) -> int:
    return sum(len(clients) for clients in state.values())
