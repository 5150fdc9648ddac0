"""The kernel driver: WireGuard's generic netlink family (``linux/wireguard.h``) for the device's
keys and peers, rtnetlink for creating and deleting the device.

We build and parse the ``WG_CMD_*`` messages ourselves and use pyroute2's generic netlink
socket only as a transport, because its ``WireGuard`` calls do not fit a device with thousands
of peers:

- ``WireGuard.set()`` carries one peer per call, so a reconcile would cost one round trip per
  peer. We pack many peer changes into each message and split them the way ``wg(8)`` does: no
  message larger than about a page, and a peer whose allowed IPs do not fit continues in the
  next message under the same public key, without ``WGPEER_F_REPLACE_ALLOWEDIPS`` (which would
  drop the part already sent).
- The kernel answers a get with a multi-message dump, and a peer can be cut at a message
  boundary (its allowed IPs continue in the next message). ``WireGuard.info()`` hands back the
  raw chunks, and code that reads only the first one silently loses peers (pyroute2 #1212).
  ``parse_device`` merges every message.

The message building and parsing are pure functions, tested without a kernel module.
``NetlinkDriver`` runs pyroute2's blocking calls in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import ipaddress
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.generic.wireguard import (
    WG_CMD_GET_DEVICE,
    WG_CMD_SET_DEVICE,
    WG_GENL_NAME,
    WG_GENL_VERSION,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    wgmsg,
)

from node_agent.backends.wireguard.driver import (
    DeviceState,
    DriverError,
    PeerBuilder,
    PeerChange,
)

# wg(8) sizes its messages to MNL_SOCKET_BUFFER_SIZE, a page on the usual 4 KiB-page machines.
DEFAULT_MAX_MESSAGE_BYTES = 4096
# The kernel applies a whole message under the device's locks and each removed peer waits for
# an RCU grace period: a cap keeps a large batch of removals from stalling the device.
DEFAULT_MAX_PEERS_PER_MESSAGE = 64

MODULE_MISSING = (
    'WireGuard kernel module not loaded: use driver = "uapi" with wireguard-go, '
    "or load the module (modprobe wireguard)"
)

_KEY_LEN = 32
_ZERO_KEY = base64.b64encode(bytes(_KEY_LEN)).decode()
_IFNAMSIZ = 16
# Peers changing during a dump make it inconsistent (NLM_F_DUMP_INTR); wg(8) dumps again.
_DUMP_ATTEMPTS = 5


# Sizes of the encoded attributes, so messages are split before they are encoded.
def _attr(payload: int) -> int:
    return 4 + ((payload + 3) & ~3)


_MESSAGE_HEADER = 16 + 4  # nlmsghdr + genlmsghdr
_NEST = 4
_KEY_ATTR = _attr(_KEY_LEN)
_U32_ATTR = _attr(4)
_U16_ATTR = _attr(2)
_U8_ATTR = _attr(1)


def _allowed_ip_size(packed: bytes) -> int:
    return _NEST + _U16_ATTR + _attr(len(packed)) + _U8_ATTR


def _key(value: str, what: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} {value!r} is not base64") from None
    if len(raw) != _KEY_LEN:
        raise ValueError(f"{what} {value!r} is not {_KEY_LEN} bytes long")
    return base64.b64encode(raw).decode()


def _u16(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} is out of range 0-65535")
    return value


def _check_ifname(ifname: str) -> None:
    if not 0 < len(ifname.encode()) < _IFNAMSIZ:
        raise ValueError(f"interface name {ifname!r} must be 1-{_IFNAMSIZ - 1} bytes long")


def _allowed_ip(text: str) -> tuple[dict[str, Any], int]:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"allowed IP {text!r} is not an address or network") from None
    # The kernel masks the address itself; sending the network address loses nothing.
    packed = network.network_address.packed
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    entry = {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", packed],
            ["WGALLOWEDIP_A_CIDR_MASK", network.prefixlen],
        ]
    }
    return entry, _allowed_ip_size(packed)


def _new_message(attrs: list[list[Any]]) -> Any:
    msg = wgmsg()
    msg["cmd"] = WG_CMD_SET_DEVICE
    msg["version"] = WG_GENL_VERSION
    msg["attrs"] = attrs
    return msg


class _Packer:
    """Fills SET_DEVICE messages with peers, opening a new message when one is full."""

    def __init__(
        self,
        ifname: str,
        device_attrs: list[list[Any]],
        device_size: int,
        max_bytes: int,
        max_peers: int,
    ) -> None:
        self.messages: list[Any] = []
        self._ifname = ifname
        self._max_bytes = max_bytes
        self._max_peers = max_peers
        self._base_size = _MESSAGE_HEADER + _attr(len(ifname.encode()) + 1)
        self._start(device_attrs, device_size)

    def _start(self, device_attrs: list[list[Any]], device_size: int) -> None:
        self._attrs: list[list[Any]] = [["WGDEVICE_A_IFNAME", self._ifname], *device_attrs]
        self._peers: list[dict[str, Any]] = []
        self._size = self._base_size + device_size

    def room(self) -> int:
        """Bytes left for one more peer (its own nest included)."""
        peers_nest = 0 if self._peers else _NEST
        return self._max_bytes - self._size - peers_nest

    def full(self) -> bool:
        return len(self._peers) >= self._max_peers

    def add(self, peer_attrs: list[list[Any]], size: int) -> None:
        if not self._peers:
            self._size += _NEST
        self._peers.append({"attrs": peer_attrs})
        self._size += size

    def flush(self) -> None:
        # Only the first message may go out without peers: it carries the device settings.
        if self._peers or not self.messages:
            if self._peers:
                self._attrs.append(["WGDEVICE_A_PEERS", self._peers])
            self.messages.append(_new_message(self._attrs))
        self._start([], 0)


def _pack_peer(packer: _Packer, change: PeerChange) -> None:
    public_key = ["WGPEER_A_PUBLIC_KEY", _key(change.public_key, "public key")]
    head: list[list[Any]] = [public_key]
    head_size = _KEY_ATTR
    flags = 0
    ips: list[tuple[dict[str, Any], int]] = []
    if change.remove:
        flags = WGPEER_F_REMOVE_ME
    else:
        if change.update_only:
            flags |= WGPEER_F_UPDATE_ONLY
        if change.preshared_key is not None:
            # All zeros is how the kernel is told to forget the preshared key.
            psk = _key(change.preshared_key, "preshared key") if change.preshared_key else _ZERO_KEY
            head.append(["WGPEER_A_PRESHARED_KEY", psk])
            head_size += _KEY_ATTR
        if change.persistent_keepalive is not None:
            keepalive = _u16(change.persistent_keepalive, "persistent keepalive")
            head.append(["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", keepalive])
            head_size += _U16_ATTR
        if change.allowed_ips is not None:
            flags |= WGPEER_F_REPLACE_ALLOWEDIPS
            ips = [_allowed_ip(ip) for ip in change.allowed_ips]
    if flags:
        head.append(["WGPEER_A_FLAGS", flags])
        head_size += _U32_ATTR

    # A continuation only adds allowed IPs. It keeps UPDATE_ONLY: without it, a continuation
    # for a peer the first part did not create would create it with a partial list.
    continuation: list[list[Any]] = [public_key]
    continuation_size = _KEY_ATTR
    if flags & WGPEER_F_UPDATE_ONLY:
        continuation.append(["WGPEER_A_FLAGS", WGPEER_F_UPDATE_ONLY])
        continuation_size += _U32_ATTR

    start = 0
    while True:
        remaining = start < len(ips)
        overhead = _NEST + head_size + (_NEST if remaining else 0)
        needed = overhead + (ips[start][1] if remaining else 0)
        if packer.full() or needed > packer.room():
            packer.flush()
            if needed > packer.room():
                raise ValueError("max_message_bytes is too small for a single peer")
        room = packer.room() - overhead
        end = start
        while end < len(ips) and ips[end][1] <= room:
            room -= ips[end][1]
            end += 1
        attrs = list(head)
        if end > start:
            attrs.append(["WGPEER_A_ALLOWEDIPS", [entry for entry, _ in ips[start:end]]])
        packer.add(attrs, overhead + sum(size for _, size in ips[start:end]))
        start = end
        if start >= len(ips):
            return
        head, head_size = continuation, continuation_size


def build_set_messages(
    ifname: str,
    *,
    private_key: str | None = None,
    listen_port: int | None = None,
    peers: Sequence[PeerChange] = (),
    max_peers_per_message: int = DEFAULT_MAX_PEERS_PER_MESSAGE,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[Any]:
    """The ``WG_CMD_SET_DEVICE`` messages (``wgmsg``, not yet encoded) for these changes.

    The device settings go in the first message only; the peer changes are spread over as many
    messages as needed. ``WGDEVICE_F_REPLACE_PEERS`` is never set: peers not named are kept.
    Raises ValueError for a malformed key, port, keepalive or allowed IP, before anything is
    sent.
    """
    if max_peers_per_message < 1:
        raise ValueError("max_peers_per_message must be at least 1")
    _check_ifname(ifname)
    device_attrs: list[list[Any]] = []
    device_size = 0
    if private_key is not None:
        device_attrs.append(["WGDEVICE_A_PRIVATE_KEY", _key(private_key, "private key")])
        device_size += _KEY_ATTR
    if listen_port is not None:
        device_attrs.append(["WGDEVICE_A_LISTEN_PORT", _u16(listen_port, "listen port")])
        device_size += _U16_ATTR
    packer = _Packer(ifname, device_attrs, device_size, max_message_bytes, max_peers_per_message)
    if packer.room() < 0:
        raise ValueError("max_message_bytes is too small for the device settings")
    for change in peers:
        _pack_peer(packer, change)
    packer.flush()
    return packer.messages


def build_get_message(ifname: str) -> Any:
    """The ``WG_CMD_GET_DEVICE`` request; send it with ``NLM_F_DUMP``."""
    _check_ifname(ifname)
    msg = wgmsg()
    msg["cmd"] = WG_CMD_GET_DEVICE
    msg["version"] = WG_GENL_VERSION
    msg["attrs"] = [["WGDEVICE_A_IFNAME", ifname]]
    return msg


def _decoded_key(value: Any) -> str | None:
    """A decoded key attribute (pyroute2 gives base64 bytes) as base64 text; zeros are None."""
    if value is None:
        return None
    text = value.decode("ascii") if isinstance(value, bytes | bytearray) else str(value)
    return None if text == _ZERO_KEY else text


def _decoded_allowed_ip(entry: Any) -> str:
    family = entry.get_attr("WGALLOWEDIP_A_FAMILY")
    raw = entry.get_attr("WGALLOWEDIP_A_IPADDR")
    cidr = entry.get_attr("WGALLOWEDIP_A_CIDR_MASK")
    if raw is None or cidr is None:
        raise DriverError("allowed IP without an address or mask in a WireGuard dump")
    # pyroute2 decodes the address as "0a:00:00:01".
    packed = bytes.fromhex(raw.replace(":", "")) if isinstance(raw, str) else bytes(raw)
    if (family, len(packed)) not in ((socket.AF_INET, 4), (socket.AF_INET6, 16)):
        raise DriverError(f"allowed IP of family {family} and {len(packed)} bytes in a dump")
    return f"{ipaddress.ip_address(packed)}/{int(cidr)}"


def _decoded_endpoint(value: Any) -> str | None:
    if value is None:
        return None
    family = value.get("family")
    if family == socket.AF_INET:
        return f"{value['addr']}:{int(value['port'])}"
    if family == socket.AF_INET6:
        return f"[{value['addr']}]:{int(value['port'])}"
    return None


def _merge_peer(peers: dict[str, PeerBuilder], nla: Any) -> None:
    public_key = _decoded_key(nla.get_attr("WGPEER_A_PUBLIC_KEY"))
    if public_key is None:
        raise DriverError("peer without a public key in a WireGuard dump")
    # A peer cut at a message boundary comes back under the same key with only the rest of
    # its allowed IPs, so attributes are taken where present and the lists concatenated.
    parts = peers.get(public_key)
    if parts is None:
        parts = peers[public_key] = PeerBuilder(public_key)
    psk = nla.get_attr("WGPEER_A_PRESHARED_KEY")
    if psk is not None:
        parts.preshared_key = _decoded_key(psk)
    keepalive = nla.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
    if keepalive is not None:
        parts.persistent_keepalive = int(keepalive)
    endpoint = nla.get_attr("WGPEER_A_ENDPOINT")
    if endpoint is not None:
        parts.endpoint = _decoded_endpoint(endpoint)
    handshake = nla.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    if handshake is not None:
        parts.last_handshake = int(handshake.get("tv_sec", 0))
    rx_bytes = nla.get_attr("WGPEER_A_RX_BYTES")
    if rx_bytes is not None:
        parts.rx_bytes = int(rx_bytes)
    tx_bytes = nla.get_attr("WGPEER_A_TX_BYTES")
    if tx_bytes is not None:
        parts.tx_bytes = int(tx_bytes)
    for entry in nla.get_attr("WGPEER_A_ALLOWEDIPS") or ():
        parts.allowed_ips.append(_decoded_allowed_ip(entry))


def parse_device(messages: Iterable[Any]) -> DeviceState:
    """The device described by every message of a ``WG_CMD_GET_DEVICE`` dump (decoded
    ``wgmsg``s): the device attributes come from the first message, the peers from all."""
    private_key: str | None = None
    listen_port = 0
    peers: dict[str, PeerBuilder] = {}
    count = 0
    for msg in messages:
        if count == 0:
            private_key = _decoded_key(msg.get_attr("WGDEVICE_A_PRIVATE_KEY"))
            listen_port = int(msg.get_attr("WGDEVICE_A_LISTEN_PORT") or 0)
        count += 1
        for nla in msg.get_attr("WGDEVICE_A_PEERS") or ():
            _merge_peer(peers, nla)
    if count == 0:
        raise DriverError("the WireGuard dump is empty")
    return DeviceState(
        private_key=private_key,
        listen_port=listen_port,
        peers={key: parts.build() for key, parts in peers.items()},
    )


def _failure(action: str, ifname: str, exc: Exception) -> DriverError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if code == errno.ENODEV:
        return DriverError(f"cannot {action} {ifname}: no such WireGuard device")
    if code == errno.EOPNOTSUPP:
        return DriverError(f"cannot {action} {ifname}: it is not a kernel WireGuard device")
    if code == errno.EPERM:
        return DriverError(f"cannot {action} {ifname}: permission denied (needs CAP_NET_ADMIN)")
    return DriverError(f"cannot {action} {ifname}: {exc}")


@contextmanager
def _wireguard_socket() -> Iterator[Any]:
    # Not pyroute2's WireGuard(): it looks the family up in its constructor, and when that
    # fails the socket and its event loop are left for the garbage collector.
    try:
        sock = GenericNetlinkSocket()
    except OSError as exc:
        raise DriverError(f"cannot open a generic netlink socket: {exc}") from None
    try:
        try:
            sock.bind(WG_GENL_NAME, wgmsg)
        except NetlinkError as exc:
            # The family lookup fails with ENOENT when no module provides it.
            if exc.code == errno.ENOENT:
                raise DriverError(MODULE_MISSING) from None
            raise DriverError(f"cannot find the WireGuard netlink family: {exc}") from None
        yield sock
    finally:
        sock.close()


def _link(ipr: Any, ifname: str) -> tuple[int, str] | None:
    """The link's index and rtnetlink kind ("" when it has none), or None."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        return None
    links = ipr.get_links(found[0])
    info = links[0].get_attr("IFLA_LINKINFO") if links else None
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return int(found[0]), str(kind) if kind else ""


def _link_kind(ipr: Any, ifname: str) -> str | None:
    link = _link(ipr, ifname)
    return None if link is None else link[1]


def _not_wireguard(ifname: str, kind: str) -> DriverError:
    what = f"a {kind!r} device" if kind else "a device of another kind"
    return DriverError(f"{ifname} exists but is {what}, not a kernel WireGuard device")


class NetlinkDriver:
    """``WireGuardDriver`` for the kernel module. Each call opens its own sockets."""

    name = "netlink"

    async def ensure_device(self, ifname: str) -> bool:
        return await asyncio.to_thread(self._ensure_device, ifname)

    async def exists(self, ifname: str) -> bool:
        return await asyncio.to_thread(self._exists, ifname)

    async def get(self, ifname: str) -> DeviceState:
        return await asyncio.to_thread(self._get, ifname)

    async def set(
        self,
        ifname: str,
        *,
        private_key: str | None = None,
        listen_port: int | None = None,
        peers: Sequence[PeerChange] = (),
    ) -> None:
        try:
            messages = build_set_messages(
                ifname, private_key=private_key, listen_port=listen_port, peers=peers
            )
        except ValueError as exc:
            raise DriverError(f"cannot set {ifname}: {exc}") from None
        await asyncio.to_thread(self._send, ifname, messages)

    async def delete_device(self, ifname: str) -> None:
        await asyncio.to_thread(self._delete_device, ifname)

    @staticmethod
    def _ensure_device(ifname: str) -> bool:
        with IPRoute() as ipr:
            kind = _link_kind(ipr, ifname)
            if kind == "wireguard":
                return False
            if kind is not None:
                raise _not_wireguard(ifname, kind)
            # Asking for the family first gives the clear error when the module is missing
            # (creating the link would only say "operation not supported").
            with _wireguard_socket():
                pass
            try:
                ipr.link("add", ifname=ifname, kind="wireguard")
            except NetlinkError as exc:
                if exc.code == errno.EEXIST and _link_kind(ipr, ifname) == "wireguard":
                    return False  # created concurrently
                if exc.code == errno.EOPNOTSUPP:
                    raise DriverError(MODULE_MISSING) from None
                raise _failure("create", ifname, exc) from None
        return True

    @staticmethod
    def _exists(ifname: str) -> bool:
        with IPRoute() as ipr:
            return _link_kind(ipr, ifname) == "wireguard"

    @staticmethod
    def _delete_device(ifname: str) -> None:
        with IPRoute() as ipr:
            link = _link(ipr, ifname)
            if link is None:
                return
            index, kind = link
            # The name comes from configuration: never delete someone else's interface.
            if kind != "wireguard":
                raise _not_wireguard(ifname, kind)
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise _failure("delete", ifname, exc) from None

    @staticmethod
    def _get(ifname: str) -> DeviceState:
        with _wireguard_socket() as sock:
            for _ in range(_DUMP_ATTEMPTS):
                try:
                    messages = tuple(
                        sock.nlm_request(
                            build_get_message(ifname),
                            msg_type=sock.prid,
                            msg_flags=NLM_F_REQUEST | NLM_F_DUMP,
                        )
                    )
                except NetlinkError as exc:
                    raise _failure("read", ifname, exc) from None
                # The peer list changed during the dump: the pieces may not fit together.
                if not any(msg["header"]["flags"] & NLM_F_DUMP_INTR for msg in messages):
                    return parse_device(messages)
        raise DriverError(f"cannot read {ifname}: its peers kept changing during the dump")

    @staticmethod
    def _send(ifname: str, messages: Sequence[Any]) -> None:
        with _wireguard_socket() as sock:
            for number, msg in enumerate(messages, 1):
                try:
                    # Waiting for each acknowledgement stops at the first failing message.
                    tuple(
                        sock.nlm_request(
                            msg, msg_type=sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK
                        )
                    )
                except NetlinkError as exc:
                    # Earlier messages stay applied; the caller's next reconcile diffs again.
                    failure = _failure("set", ifname, exc)
                    if len(messages) > 1:
                        failure = DriverError(f"{failure} (message {number} of {len(messages)})")
                    raise failure from None
