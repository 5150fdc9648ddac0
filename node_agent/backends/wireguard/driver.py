"""What a WireGuard driver does, independent of how it talks to the device.

Keys are base64 here (as in .conf files and the contract); a driver converts them to what its
transport needs (hex on the UAPI, raw bytes on netlink).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PeerState:
    public_key: str
    preshared_key: str | None = None  # None: no preshared key (all zeros on the wire)
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int = 0
    endpoint: str | None = None
    last_handshake: int = 0  # unix seconds, 0 = never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(slots=True)
class PeerBuilder:
    """A peer assembled field by field while a device dump is parsed (a peer may span
    several netlink messages)."""

    public_key: str
    preshared_key: str | None = None
    allowed_ips: list[str] = field(default_factory=list)
    persistent_keepalive: int = 0
    endpoint: str | None = None
    last_handshake: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0

    def build(self) -> PeerState:
        return PeerState(
            public_key=self.public_key,
            preshared_key=self.preshared_key,
            allowed_ips=tuple(self.allowed_ips),
            persistent_keepalive=self.persistent_keepalive,
            endpoint=self.endpoint,
            last_handshake=self.last_handshake,
            rx_bytes=self.rx_bytes,
            tx_bytes=self.tx_bytes,
        )


@dataclass(frozen=True, slots=True)
class DeviceState:
    private_key: str | None = None
    listen_port: int = 0
    peers: dict[str, PeerState] = field(default_factory=dict)  # by public key


@dataclass(frozen=True, slots=True)
class PeerChange:
    """One peer's part of a set operation.

    ``remove`` drops the peer. Otherwise the peer is created or updated (``update_only``:
    only if it exists); ``preshared_key`` "" clears it, None leaves it; ``allowed_ips`` not
    None replaces the peer's list; ``persistent_keepalive`` None leaves it.
    """

    public_key: str
    remove: bool = False
    update_only: bool = False
    preshared_key: str | None = None
    allowed_ips: tuple[str, ...] | None = None
    persistent_keepalive: int | None = None


class DriverError(OSError):
    """The device could not be created, read or changed."""


class WireGuardDriver(Protocol):
    name: str  # "uapi" or "netlink"

    async def ensure_device(self, ifname: str) -> bool:
        """Create the device when it does not exist; return True when it was created."""

    async def exists(self, ifname: str) -> bool: ...

    async def get(self, ifname: str) -> DeviceState:
        """The whole device: every peer, however many messages the transport needs."""

    async def set(
        self,
        ifname: str,
        *,
        private_key: str | None = None,
        listen_port: int | None = None,
        peers: Sequence[PeerChange] = (),
    ) -> None:
        """Apply device settings and peer changes (not atomic: validate first)."""

    async def delete_device(self, ifname: str) -> None: ...
