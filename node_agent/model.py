"""The agent's own view of desired state: plain frozen dataclasses, validated before use.

Conversion from and to the wire messages lives in ``convert``; backends see only these types.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from node_agent.errors import InvalidStateError

MAX_CLIENT_ID_LEN = 128
KEY_LEN = 32


@dataclass(frozen=True, slots=True)
class WireGuardPeer:
    public_key: str  # base64
    preshared_key: str | None = None  # base64
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int = 0


@dataclass(frozen=True, slots=True)
class OpenVpnClient:
    common_name: str


@dataclass(frozen=True, slots=True)
class VlessUser:
    uuid: str
    flow: str = ""
    email: str = ""


ClientSpec = WireGuardPeer | OpenVpnClient | VlessUser


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    spec: ClientSpec


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Clients per backend name. A configured backend that is absent has no clients."""

    backends: Mapping[str, tuple[Client, ...]] = field(default_factory=dict)

    def clients(self, backend: str) -> tuple[Client, ...]:
        return self.backends.get(backend, ())

    def with_delta(
        self, upserts: Mapping[str, Sequence[Client]], removals: Mapping[str, Sequence[str]]
    ) -> DesiredState:
        """A new state: this one with clients replaced/added by id and removed by id."""
        result: dict[str, tuple[Client, ...]] = dict(self.backends)
        for name in upserts.keys() | removals.keys():
            current = {c.id: c for c in result.get(name, ())}
            for client_id in removals.get(name, ()):
                current.pop(client_id, None)
            for client in upserts.get(name, ()):
                current[client.id] = client
            result[name] = tuple(current.values())
        return DesiredState({k: v for k, v in result.items() if v})


def decode_key(value: str, what: str) -> bytes:
    """Decode a base64 WireGuard key or raise InvalidStateError naming ``what``."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidStateError(f"{what}: not valid base64") from None
    if len(raw) != KEY_LEN:
        raise InvalidStateError(f"{what}: a key must be {KEY_LEN} bytes, got {len(raw)}")
    return raw


def validate_client_ids(backend: str, clients: Sequence[Client]) -> None:
    seen: set[str] = set()
    for client in clients:
        if not client.id or len(client.id) > MAX_CLIENT_ID_LEN or not client.id.isprintable():
            raise InvalidStateError(
                f"backend {backend!r}: client id {client.id!r} must be 1..{MAX_CLIENT_ID_LEN} "
                "printable characters"
            )
        if client.id in seen:
            raise InvalidStateError(f"backend {backend!r}: duplicate client id {client.id!r}")
        seen.add(client.id)
