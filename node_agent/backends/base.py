"""The ``VpnBackend`` protocol every backend implements, and the values it exchanges.

A backend owns one piece of VPN software on the host (a WireGuard device, an OpenVPN server,
an Xray inbound). The reconciler calls ``validate`` on the whole desired state of every
backend before it calls ``apply`` on any of them, so a backend's ``apply`` sees only valid
input. ``apply`` is idempotent and changes only what differs from the running software.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from node_agent.model import Client


class Health(enum.Enum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class BackendStatus:
    health: Health
    reason: str = ""
    clients: int = 0
    clients_online: int = 0


@dataclass(frozen=True, slots=True)
class ApplyReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    # Clients whose traffic counters restarted from zero because of this apply (removed,
    # or re-created): the ledger moves their baseline.
    reset_clients: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Counters:
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True, slots=True)
class UsageSample:
    """Raw counters of the running software, per client id.

    ``epoch`` names the counters' lifetime: when it changes (a device re-created, a core
    restarted) every counter restarted from zero.
    """

    epoch: str
    counters: Mapping[str, Counters] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WireGuardPublicParams:
    public_key: str
    listen_port: int
    addresses: tuple[str, ...]
    interface: str


@dataclass(frozen=True, slots=True)
class OpenVpnPublicParams:
    port: int
    transport: str  # "udp" or "tcp"
    ca_certificate_pem: str


@dataclass(frozen=True, slots=True)
class RealityPublicParams:
    port: int
    public_key: str  # X25519, base64url without padding
    short_ids: tuple[str, ...]
    server_names: tuple[str, ...]
    flow: str
    fingerprint: str


PublicParams = WireGuardPublicParams | OpenVpnPublicParams | RealityPublicParams | None


@dataclass(frozen=True, slots=True)
class IssuedClient:
    """An OpenVPN client certificate the node's CA signed, with its inline profile."""

    common_name: str
    certificate_pem: str
    profile: str  # inline .ovpn without `remote` lines (the controller knows the address)
    not_after: dt.datetime


@runtime_checkable
class IssuesClients(Protocol):
    """A backend that issues client credentials itself (OpenVPN: the CA key stays here)."""

    async def issue_client(self, common_name: str, valid_days: int) -> IssuedClient:
        """Issue (or re-issue) a certificate for ``common_name``; InvalidStateError for a
        bad name."""


@runtime_checkable
class VpnBackend(Protocol):
    name: str
    kind: str  # "wireguard", "openvpn", "xray", "threexui", "fake"

    def validate(self, clients: Sequence[Client]) -> None:
        """Raise InvalidStateError when ``clients`` cannot be applied. No side effects."""

    async def start(self) -> None:
        """Bring the software up (create the device, start the core); idempotent."""

    async def apply(self, clients: Sequence[Client]) -> ApplyReport:
        """Converge the running software to exactly ``clients`` (already validated), reading
        what actually runs: repairs any drift."""

    def validate_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        """Like ``validate`` for a change to the last applied clients. No side effects."""

    async def apply_changes(
        self, upserts: Sequence[Client], removals: Sequence[str]
    ) -> ApplyReport:
        """Add or replace ``upserts`` (by id) and remove ``removals`` (already validated),
        touching nothing else. Unknown ids in ``removals`` are ignored."""

    async def usage(self) -> UsageSample:
        """Current raw per-client counters."""

    async def status(self) -> BackendStatus:
        """Health, client count and clients online."""

    def public_params(self) -> PublicParams:
        """What clients need to connect (public keys, ports); never secrets."""

    async def close(self) -> None:
        """Release resources; leave the VPN running so clients stay connected."""
