"""An in-memory WireGuard device behind the ``WireGuardDriver`` protocol, with the semantics
of the UAPI (wireguard-go) so the backend can be tested without a kernel or a daemon.

What it models:

* peers keyed by public key; a peer keeps its rx/tx counters while it lives and loses them
  when removed (re-adding the same key starts from zero);
* a ``set`` applies its changes in order, so "remove K, add K" re-creates K;
* ``update_only`` on a missing peer does nothing; ``remove`` of a missing peer does nothing;
* ``preshared_key=""`` clears the key; ``allowed_ips`` replaces the peer's list and takes each
  network away from any other peer that had it (one owner per network, as in WireGuard);
* networks are stored canonically (``FD00:0:0::2/128`` reads back as ``fd00::2/128``).

Test controls: ``add_traffic``, ``fail_set``/``fail_get``, ``set_delay`` (a slow device),
``crash()`` (the device is gone; ``ensure_device`` re-creates it empty, under a new
ifindex). ``configure_link`` stands in for ``link.configure_link`` (which needs a real
interface): ``patch_link`` installs it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node_agent.backends.wireguard import link
from node_agent.backends.wireguard.backend import WireGuardBackend
from node_agent.backends.wireguard.driver import (
    DeviceState,
    DriverError,
    PeerChange,
    PeerState,
    WireGuardDriver,
)

_ifindexes = itertools.count(100)


def canonical_network(text: str) -> str:
    """How a device prints an allowed IP it was given (host bits masked, lower case)."""
    return str(ipaddress.ip_network(text, strict=False))


@dataclass(slots=True)
class _Peer:
    preshared_key: str | None = None
    allowed_ips: list[str] = field(default_factory=list)
    persistent_keepalive: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0

    def state(self, public_key: str) -> PeerState:
        return PeerState(
            public_key=public_key,
            preshared_key=self.preshared_key,
            allowed_ips=tuple(self.allowed_ips),
            persistent_keepalive=self.persistent_keepalive,
            rx_bytes=self.rx_bytes,
            tx_bytes=self.tx_bytes,
        )


@dataclass(frozen=True, slots=True)
class SetCall:
    private_key: str | None
    listen_port: int | None
    peers: tuple[PeerChange, ...]


class MemoryWireGuardDriver:
    """One in-memory device (whatever ``ifname`` the backend passes)."""

    name = "memory"

    def __init__(self) -> None:
        self.up = False
        self.ifindex = 0  # of the current device; 0 while there is none
        self.created = 0  # how many times ensure_device created the device
        self.private_key: str | None = None
        self.listen_port = 0
        self.addresses: tuple[str, ...] = ()
        self.set_calls: list[SetCall] = []
        self.fail_set = False
        self.fail_get = False
        self.set_delay = 0.0  # seconds each set takes before it changes anything
        self._peers: dict[str, _Peer] = {}

    # --- WireGuardDriver ------------------------------------------------------------------

    async def ensure_device(self, ifname: str) -> bool:
        if self.up:
            return False
        self.up = True
        self.created += 1
        self.ifindex = next(_ifindexes)
        return True

    async def exists(self, ifname: str) -> bool:
        return self.up

    async def get(self, ifname: str) -> DeviceState:
        if not self.up:
            raise DriverError(f"{ifname}: no such device")
        if self.fail_get:
            raise DriverError(f"{ifname}: get failed (test)")
        return DeviceState(self.private_key, self.listen_port, self.peers)

    async def set(
        self,
        ifname: str,
        *,
        private_key: str | None = None,
        listen_port: int | None = None,
        peers: Sequence[PeerChange] = (),
    ) -> None:
        if self.set_delay:
            await asyncio.sleep(self.set_delay)
        if not self.up:
            raise DriverError(f"{ifname}: no such device")
        if self.fail_set:
            raise DriverError(f"{ifname}: set failed (test)")
        self.set_calls.append(SetCall(private_key, listen_port, tuple(peers)))
        if private_key is not None:
            self.private_key = private_key
        if listen_port is not None:
            self.listen_port = listen_port
        for change in peers:
            self._apply(change)

    async def delete_device(self, ifname: str) -> None:
        self.crash()

    # --- link (stands in for link.configure_link) -----------------------------------------

    def configure_link(
        self,
        ifname: str,
        addresses: Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface],
        mtu: int | None = None,
    ) -> int:
        if not self.up:
            raise DriverError(f"network interface {ifname} does not exist")
        self.addresses = tuple(str(a) for a in addresses)
        return self.ifindex

    # --- test controls --------------------------------------------------------------------

    @property
    def peers(self) -> dict[str, PeerState]:
        """What a ``get`` would report, without its failure modes."""
        return {key: peer.state(key) for key, peer in self._peers.items()}

    @property
    def changes(self) -> list[PeerChange]:
        """Every peer change sent so far, in order."""
        return [change for call in self.set_calls for change in call.peers]

    def add_traffic(self, public_key: str, rx: int, tx: int) -> None:
        peer = self._peers[public_key]
        peer.rx_bytes += rx
        peer.tx_bytes += tx

    def crash(self) -> None:
        """The device is gone with everything on it (wireguard-go killed, link deleted)."""
        self.up = False
        self.ifindex = 0
        self.private_key = None
        self.listen_port = 0
        self.addresses = ()
        self._peers.clear()

    # --- internals ------------------------------------------------------------------------

    def _apply(self, change: PeerChange) -> None:
        if change.remove:
            self._peers.pop(change.public_key, None)
            return
        peer = self._peers.get(change.public_key)
        if peer is None:
            if change.update_only:
                return
            peer = self._peers[change.public_key] = _Peer()
        if change.preshared_key is not None:
            peer.preshared_key = change.preshared_key or None
        if change.persistent_keepalive is not None:
            peer.persistent_keepalive = change.persistent_keepalive
        if change.allowed_ips is not None:
            networks = [canonical_network(ip) for ip in change.allowed_ips]
            for other in self._peers.values():
                other.allowed_ips = [ip for ip in other.allowed_ips if ip not in networks]
            peer.allowed_ips = list(dict.fromkeys(networks))


def _fits_the_protocol(driver: MemoryWireGuardDriver) -> WireGuardDriver:
    return driver  # a static check (mypy) that the memory driver is a WireGuardDriver


INTERFACE = "wgmem0"
LISTEN_PORT = 51820
SERVER_ADDRESSES = ("10.8.0.1/24", "fd00::1/64")


def patch_link(monkeypatch: pytest.MonkeyPatch, driver: MemoryWireGuardDriver) -> None:
    """Make ``WireGuardBackend.start`` configure the memory device instead of a real link."""
    # The backend calls ``link.configure_link`` through the module: patch it there.
    monkeypatch.setattr(link, "configure_link", driver.configure_link)


def make_backend(
    state_dir: Path,
    driver: MemoryWireGuardDriver,
    *,
    name: str = "wg",
    addresses: Sequence[str] = SERVER_ADDRESSES,
) -> WireGuardBackend:
    """A backend over ``driver`` whose private key lives in ``state_dir`` (call ``patch_link``
    before starting it)."""
    return WireGuardBackend(
        name,
        driver=driver,
        interface=INTERFACE,
        listen_port=LISTEN_PORT,
        addresses=addresses,
        private_key_path=state_dir / f"{name}.key",
    )
