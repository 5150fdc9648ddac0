"""Wire messages (``nodeapi.v1``) to the agent's model and back. Shape errors become
InvalidStateError; meaning is checked by the backends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from node_agent.backends.base import (
    BackendStatus,
    Health,
    OpenVpnPublicParams,
    PublicParams,
    RealityPublicParams,
    WireGuardPublicParams,
)
from node_agent.errors import InvalidStateError
from node_agent.model import Client, DesiredState, OpenVpnClient, VlessUser, WireGuardPeer
from proto.nodeapi.v1 import node_agent_pb2 as pb

KINDS = {
    "wireguard": pb.BACKEND_KIND_WIREGUARD,
    "openvpn": pb.BACKEND_KIND_OPENVPN,
    "xray": pb.BACKEND_KIND_XRAY,
    "threexui": pb.BACKEND_KIND_THREEXUI,
    "fake": pb.BACKEND_KIND_FAKE,
}
HEALTH = {
    Health.OK: pb.BACKEND_HEALTH_OK,
    Health.DEGRADED: pb.BACKEND_HEALTH_DEGRADED,
    Health.DOWN: pb.BACKEND_HEALTH_DOWN,
}


def client_from_pb(backend: str, message: pb.Client) -> Client:
    kind = message.WhichOneof("spec")
    if kind == "wireguard":
        wg = message.wireguard
        spec: WireGuardPeer | OpenVpnClient | VlessUser = WireGuardPeer(
            public_key=wg.public_key,
            preshared_key=wg.preshared_key or None,
            allowed_ips=tuple(wg.allowed_ips),
            persistent_keepalive=wg.persistent_keepalive,
        )
    elif kind == "openvpn":
        spec = OpenVpnClient(common_name=message.openvpn.common_name)
    elif kind == "vless":
        v = message.vless
        spec = VlessUser(uuid=v.uuid, flow=v.flow, email=v.email)
    else:
        raise InvalidStateError(f"backend {backend!r}: client {message.id!r} has no spec")
    return Client(message.id, spec)


def _unique_names(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidStateError(f"backend {name!r} appears twice")
        seen.add(name)


def state_from_pb(message: pb.DesiredState) -> DesiredState:
    _unique_names([b.name for b in message.backends])
    return DesiredState(
        {
            b.name: tuple(client_from_pb(b.name, c) for c in b.clients)
            for b in message.backends
            if b.clients
        }
    )


def delta_from_pb(
    message: pb.ApplyDeltaRequest,
) -> tuple[dict[str, list[Client]], dict[str, list[str]]]:
    _unique_names([b.name for b in message.backends])
    upserts = {b.name: [client_from_pb(b.name, c) for c in b.upsert] for b in message.backends}
    removals = {b.name: list(b.remove) for b in message.backends}
    return upserts, removals


def status_to_pb(status: BackendStatus) -> pb.BackendStatus:
    return pb.BackendStatus(
        health=HEALTH[status.health],
        reason=status.reason,
        clients=status.clients,
        clients_online=status.clients_online,
    )


def backend_info_to_pb(
    name: str, kind: str, status: BackendStatus, params: PublicParams
) -> pb.BackendInfo:
    info = pb.BackendInfo(
        name=name, kind=KINDS.get(kind, pb.BACKEND_KIND_UNSPECIFIED), status=status_to_pb(status)
    )
    if isinstance(params, WireGuardPublicParams):
        info.wireguard.CopyFrom(
            pb.WireGuardParams(
                public_key=params.public_key,
                listen_port=params.listen_port,
                addresses=list(params.addresses),
                interface=params.interface,
            )
        )
    elif isinstance(params, OpenVpnPublicParams):
        info.openvpn.CopyFrom(
            pb.OpenVpnParams(
                port=params.port,
                transport=params.transport,
                ca_certificate_pem=params.ca_certificate_pem,
            )
        )
    elif isinstance(params, RealityPublicParams):
        info.reality.CopyFrom(
            pb.RealityParams(
                port=params.port,
                public_key=params.public_key,
                short_ids=list(params.short_ids),
                server_names=list(params.server_names),
                flow=params.flow,
                fingerprint=params.fingerprint,
            )
        )
    return info


def timestamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp
