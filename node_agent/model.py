"""The agent's own view of desired state: plain frozen dataclasses, validated before use.

Conversion from and to the wire messages lives in ``convert``; backends see only these types.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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


class DesiredState:
    """Clients per backend name, by id in insertion order. A configured backend that is absent
    has no clients. ``update`` changes it in place: a delta on 10k clients must not copy them.
    """

    __slots__ = ("_backends",)

    def __init__(self, backends: Mapping[str, Iterable[Client]] | None = None) -> None:
        self._backends: dict[str, dict[str, Client]] = {}
        for name, clients in (backends or {}).items():
            by_id: dict[str, Client] = {}
            for client in clients:
                if client.id in by_id:
                    raise InvalidStateError(f"backend {name!r}: duplicate client id {client.id!r}")
                by_id[client.id] = client
            if by_id:
                self._backends[name] = by_id

    @property
    def backends(self) -> dict[str, tuple[Client, ...]]:
        return {name: tuple(clients.values()) for name, clients in self._backends.items()}

    def names(self) -> set[str]:
        return set(self._backends)

    def clients(self, backend: str) -> tuple[Client, ...]:
        return tuple(self._backends.get(backend, {}).values())

    def has(self, backend: str, client_id: str) -> bool:
        return client_id in self._backends.get(backend, {})

    def update(
        self, upserts: Mapping[str, Sequence[Client]], removals: Mapping[str, Sequence[str]]
    ) -> None:
        """Replace/add clients by id and remove clients by id, in place."""
        for name in upserts.keys() | removals.keys():
            clients = self._backends.setdefault(name, {})
            for client_id in removals.get(name, ()):
                clients.pop(client_id, None)
            for client in upserts.get(name, ()):
                clients[client.id] = client
            if not clients:
                del self._backends[name]

    def with_delta(
        self, upserts: Mapping[str, Sequence[Client]], removals: Mapping[str, Sequence[str]]
    ) -> DesiredState:
        """A new state: this one with the delta applied (this one is left alone)."""
        result = DesiredState(self.backends)
        result.update(upserts, removals)
        return result

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DesiredState) and self._backends == other._backends

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DesiredState({self.backends!r})"


def decode_key(value: str, what: str) -> bytes:
    """Decode a base64 WireGuard key or raise InvalidStateError naming ``what``."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidStateError(f"{what}: not valid base64") from None
    if len(raw) != KEY_LEN:
        raise InvalidStateError(f"{what}: a key must be {KEY_LEN} bytes, got {len(raw)}")
    # Only the canonical spelling: another spelling of the same bytes would slip past the
    # duplicate check and never match the key the device reports.
    if base64.b64encode(raw).decode() != value:
        raise InvalidStateError(
            f"{what}: not canonical base64 (expected {base64.b64encode(raw).decode()})"
        )
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
