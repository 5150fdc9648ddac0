"""The WireGuard backend: one device whose peers are the desired clients.

It remembers what it last applied (a ``PeerIndex``), so a delta is validated and sent
without reading the device: a single-peer change on a 10k-peer device is one small UAPI
``set``. A full ``apply`` reads the device and repairs whatever differs, peers added by hand
included. Only differences are ever sent; peers never get replaced wholesale.

The server key pair is generated on the node and kept in the state directory; only the
public key leaves it (``public_params``).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent.backends.base import (
    ApplyReport,
    BackendStatus,
    Counters,
    Health,
    PublicParams,
    UsageSample,
    WireGuardPublicParams,
)
from node_agent.backends.wireguard import link
from node_agent.backends.wireguard.driver import DriverError, PeerChange, PeerState, WireGuardDriver
from node_agent.backends.wireguard.peers import PeerIndex
from node_agent.errors import BackendError, ConfigError
from node_agent.files import write_atomic
from node_agent.model import Client, WireGuardPeer

log = structlog.get_logger("node_agent.wireguard")

ONLINE_WINDOW = 180  # seconds since the last handshake for a peer to count as online


def load_or_create_private_key(path: Path) -> str:
    """The device's base64 private key, generated on first use and kept 0600."""
    if path.exists():
        text = path.read_text().strip()
        try:
            if len(base64.b64decode(text, validate=True)) == 32:
                return text
        except ValueError:
            pass
        raise ConfigError(f"{path} does not hold a WireGuard private key")
    raw = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    key = base64.b64encode(raw).decode()
    write_atomic(path, (key + "\n").encode(), mode=0o600)
    return key


def public_key_of(private_key: str) -> str:
    raw = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key)).public_key()
    return base64.b64encode(
        raw.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


def _same_networks(a: Sequence[str], b: Sequence[str]) -> bool:
    # The device prints networks in canonical form (fd00::2/128), the controller may not.
    def canonical(ips: Sequence[str]) -> list[str]:
        return sorted(str(ipaddress.ip_network(ip, strict=False)) for ip in ips)

    return sorted(a) == sorted(b) or canonical(a) == canonical(b)


def _change_for(spec: WireGuardPeer, present: PeerState | None) -> PeerChange | None:
    """The UAPI/netlink change turning ``present`` into ``spec`` (None: nothing to do)."""
    if present is None:
        return PeerChange(
            public_key=spec.public_key,
            preshared_key=spec.preshared_key or "",
            allowed_ips=spec.allowed_ips,
            persistent_keepalive=spec.persistent_keepalive,
        )
    psk = (
        None
        if (present.preshared_key or None) == (spec.preshared_key or None)
        else (spec.preshared_key or "")
    )
    ips = None if _same_networks(present.allowed_ips, spec.allowed_ips) else spec.allowed_ips
    keepalive = (
        None
        if present.persistent_keepalive == spec.persistent_keepalive
        else spec.persistent_keepalive
    )
    if psk is None and ips is None and keepalive is None:
        return None
    return PeerChange(
        public_key=spec.public_key,
        update_only=True,
        preshared_key=psk,
        allowed_ips=ips,
        persistent_keepalive=keepalive,
    )


class WireGuardBackend:
    kind = "wireguard"

    def __init__(
        self,
        name: str,
        *,
        driver: WireGuardDriver,
        interface: str,
        listen_port: int,
        addresses: Sequence[str],
        private_key_path: Path,
        mtu: int | None = None,
    ) -> None:
        self.name = name
        self.driver = driver
        self.interface = interface
        self.listen_port = listen_port
        self.addresses = [ipaddress.ip_interface(a) for a in addresses]
        self.mtu = mtu
        self.private_key = load_or_create_private_key(private_key_path)
        self.public_key = public_key_of(self.private_key)
        self._index = PeerIndex(name, self.addresses)
        self._ifindex: int | None = None
        self._online = 0
        self._log = log.bind(backend=name, interface=interface)

    # --- validation -----------------------------------------------------------------------

    def validate(self, clients: Sequence[Client]) -> None:
        PeerIndex.build(self.name, clients, self.addresses)

    def validate_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        self._index.check_changes(upserts, removals)

    # --- device ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            created = await self.driver.ensure_device(self.interface)
            self._ifindex = await asyncio.to_thread(
                link.configure_link, self.interface, self.addresses, self.mtu
            )
            if created:
                self._log.info("wireguard_device_created", driver=self.driver.name)
                self._index = PeerIndex(self.name, self.addresses)
                await self.driver.set(
                    self.interface, private_key=self.private_key, listen_port=self.listen_port
                )
                return
            device = await self.driver.get(self.interface)
            if device.private_key != self.private_key or device.listen_port != self.listen_port:
                await self.driver.set(
                    self.interface, private_key=self.private_key, listen_port=self.listen_port
                )
        except DriverError as exc:
            raise BackendError(f"{self.name}: {exc}") from None

    async def apply(self, clients: Sequence[Client]) -> ApplyReport:
        wanted = PeerIndex.build(self.name, clients, self.addresses)
        known_owner = self._index.key_owner  # who owned each key, as far as we know
        try:
            device = await self.driver.get(self.interface)
            removes: dict[str, PeerChange] = {}
            reset: set[str] = set()
            removed = 0
            for key in device.peers:
                new_owner = wanted.key_owner.get(key)
                old_owner = known_owner.get(key)
                if new_owner is None:
                    removed += 1
                elif old_owner is None or old_owner == new_owner:
                    continue
                # Not wanted, or the key moved to another client: the peer (and its
                # counters, which belong to the old owner) goes.
                removes[key] = PeerChange(key, remove=True)
                if old_owner is not None:
                    reset.add(old_owner)
            others: list[PeerChange] = []
            added = updated = 0
            for client_id, spec in wanted.peers.items():
                present = None if spec.public_key in removes else device.peers.get(spec.public_key)
                change = _change_for(spec, present)
                if change is None:
                    continue
                others.append(change)
                if present is None:
                    added += 1
                    reset.add(client_id)
                else:
                    updated += 1
            # Removals first: a moved key is removed, then created afresh for its new owner.
            await self.driver.set(self.interface, peers=[*removes.values(), *others])
        except DriverError as exc:
            raise BackendError(f"{self.name}: {exc}") from None
        finally:
            self._index = wanted
        return ApplyReport(added, updated, removed, frozenset(reset))

    async def apply_changes(
        self, upserts: Sequence[Client], removals: Sequence[str]
    ) -> ApplyReport:
        index = self._index
        removes: dict[str, PeerChange] = {}
        others: list[PeerChange] = []
        reset: set[str] = set()
        added = updated = removed = 0
        upsert_ids = {c.id for c in upserts}
        for client_id in removals:
            if client_id in index.peers and client_id not in upsert_ids:
                key = index.peers[client_id].public_key
                removes[key] = PeerChange(key, remove=True)
                reset.add(client_id)
                removed += 1
        for client in upserts:
            spec = client.spec
            assert isinstance(spec, WireGuardPeer)  # validated
            old = index.peers.get(client.id)
            if old is not None and old.public_key != spec.public_key:
                removes[old.public_key] = PeerChange(old.public_key, remove=True)
                old = None
            owner = index.key_owner.get(spec.public_key)
            if owner is not None and owner != client.id:
                # The key moves from another client: that peer's counters are the other
                # client's traffic, so the peer is re-created, never taken over.
                removes[spec.public_key] = PeerChange(spec.public_key, remove=True)
                reset.add(owner)
            if old is None:
                others.append(_change_for(spec, None))  # type: ignore[arg-type]
                reset.add(client.id)
                added += 1
            else:
                present = PeerState(
                    old.public_key, old.preshared_key, old.allowed_ips, old.persistent_keepalive
                )
                change = _change_for(spec, present)
                if change is not None:
                    others.append(change)
                    updated += 1
        try:
            await self.driver.set(self.interface, peers=[*removes.values(), *others])
        except DriverError as exc:
            raise BackendError(f"{self.name}: {exc}") from None
        finally:
            index.apply_changes(upserts, removals)
        return ApplyReport(added, updated, removed, frozenset(reset))

    async def usage(self) -> UsageSample:
        try:
            device = await self.driver.get(self.interface)
        except DriverError as exc:
            raise BackendError(f"{self.name}: {exc}") from None
        now = time.time()
        counters: dict[str, Counters] = {}
        online = 0
        for key, peer in device.peers.items():
            client_id = self._index.key_owner.get(key)
            if client_id is None:
                continue
            counters[client_id] = Counters(peer.rx_bytes, peer.tx_bytes)
            if peer.last_handshake and now - peer.last_handshake < ONLINE_WINDOW:
                online += 1
        self._online = online
        return UsageSample(f"{self.interface}#{self._ifindex}", counters)

    async def status(self) -> BackendStatus:
        if not await self.driver.exists(self.interface):
            return BackendStatus(Health.DOWN, f"device {self.interface} is not running")
        return BackendStatus(Health.OK, "", len(self._index.peers), self._online)

    def public_params(self) -> PublicParams:
        return WireGuardPublicParams(
            public_key=self.public_key,
            listen_port=self.listen_port,
            addresses=tuple(str(a) for a in self.addresses),
            interface=self.interface,
        )

    async def close(self) -> None:
        """Leave the device running: clients stay connected while the agent is away."""
