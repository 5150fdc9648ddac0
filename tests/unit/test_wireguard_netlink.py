"""The kernel WireGuard driver, at the level of the netlink messages it builds and parses.

No kernel module is needed: messages are encoded to bytes and decoded again with pyroute2's
``wgmsg``, as the kernel would receive them, and dumps are built the way the kernel builds them.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyroute2.netlink import NLM_F_MULTI
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.generic.wireguard import (
    WG_CMD_GET_DEVICE,
    WG_CMD_SET_DEVICE,
    WGDEVICE_F_REPLACE_PEERS,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    wgmsg,
)

from node_agent.backends.wireguard.driver import (
    DeviceState,
    DriverError,
    PeerChange,
    PeerState,
    WireGuardDriver,
)
from node_agent.backends.wireguard.netlink import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MODULE_MISSING,
    NetlinkDriver,
    build_get_message,
    build_set_messages,
    parse_device,
)
from tests.conftest import need

ZERO_KEY = bytes(32)


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def wire(msg: Any) -> Any:
    """The message as the other side sees it: encoded to bytes, decoded by a fresh wgmsg."""
    msg.encode()
    decoded = wgmsg(msg.data)
    decoded.decode()
    return decoded


def wire_all(messages: Iterable[Any]) -> list[Any]:
    return [wire(msg) for msg in messages]


def peers_of(msg: Any) -> list[Any]:
    return list(msg.get_attr("WGDEVICE_A_PEERS") or ())


def raw_key(nla: Any, name: str) -> bytes | None:
    value = nla.get_attr(name)
    return None if value is None else base64.b64decode(value)


def public_key(nla: Any) -> str:
    return base64.b64encode(raw_key(nla, "WGPEER_A_PUBLIC_KEY") or b"").decode()


def allowed_ips(nla: Any) -> list[str]:
    result = []
    for entry in nla.get_attr("WGPEER_A_ALLOWEDIPS") or ():
        family = entry.get_attr("WGALLOWEDIP_A_FAMILY")
        packed = bytes.fromhex(entry.get_attr("WGALLOWEDIP_A_IPADDR").replace(":", ""))
        assert len(packed) == (4 if family == socket.AF_INET else 16)
        result.append(f"{ipaddress.ip_address(packed)}/{entry.get_attr('WGALLOWEDIP_A_CIDR_MASK')}")
    return result


# --- set messages -------------------------------------------------------------------------


def test_set_message_carries_each_kind_of_peer_change() -> None:
    private = new_key()
    added, updated, removed, cleared = new_key(), new_key(), new_key(), new_key()
    psk = new_key()
    messages = build_set_messages(
        "wg0",
        private_key=private,
        listen_port=51820,
        peers=[
            PeerChange(
                added,
                preshared_key=psk,
                allowed_ips=("10.8.0.2/32", "fd00:8::2/128", "10.9.0.7/24"),
                persistent_keepalive=25,
            ),
            PeerChange(updated, update_only=True, allowed_ips=("10.8.0.3/32",)),
            PeerChange(removed, remove=True, allowed_ips=("10.8.0.4/32",)),
            PeerChange(cleared, preshared_key="", persistent_keepalive=0),
        ],
    )
    assert len(messages) == 1
    msg = wire(messages[0])
    assert msg["cmd"] == WG_CMD_SET_DEVICE
    assert msg.get_attr("WGDEVICE_A_IFNAME") == "wg0"
    assert raw_key(msg, "WGDEVICE_A_PRIVATE_KEY") == base64.b64decode(private)
    assert msg.get_attr("WGDEVICE_A_LISTEN_PORT") == 51820
    assert msg.get_attr("WGDEVICE_A_FLAGS") is None  # never WGDEVICE_F_REPLACE_PEERS

    first, second, third, fourth = peers_of(msg)
    assert raw_key(first, "WGPEER_A_PUBLIC_KEY") == base64.b64decode(added)
    assert first.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REPLACE_ALLOWEDIPS
    assert raw_key(first, "WGPEER_A_PRESHARED_KEY") == base64.b64decode(psk)
    assert first.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") == 25
    # The kernel masks the address anyway; the network address is what is sent.
    assert allowed_ips(first) == ["10.8.0.2/32", "fd00:8::2/128", "10.9.0.0/24"]

    assert public_key(second) == updated
    assert second.get_attr("WGPEER_A_FLAGS") == WGPEER_F_UPDATE_ONLY | WGPEER_F_REPLACE_ALLOWEDIPS
    assert second.get_attr("WGPEER_A_PRESHARED_KEY") is None
    assert second.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") is None
    assert allowed_ips(second) == ["10.8.0.3/32"]

    # A removal carries nothing but the key and the flag.
    assert public_key(third) == removed
    assert third.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REMOVE_ME
    assert third.get_attr("WGPEER_A_ALLOWEDIPS") is None

    # "" clears the preshared key: 32 zero bytes. No allowed_ips: the list is left alone.
    assert public_key(fourth) == cleared
    assert raw_key(fourth, "WGPEER_A_PRESHARED_KEY") == ZERO_KEY
    assert fourth.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") == 0
    assert fourth.get_attr("WGPEER_A_FLAGS") is None
    assert fourth.get_attr("WGPEER_A_ALLOWEDIPS") is None


def test_empty_allowed_ips_replaces_the_list_with_nothing() -> None:
    key = new_key()
    (msg,) = wire_all(build_set_messages("wg0", peers=[PeerChange(key, allowed_ips=())]))
    (peer,) = peers_of(msg)
    assert peer.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REPLACE_ALLOWEDIPS
    assert allowed_ips(peer) == []


def test_device_settings_alone_make_one_message() -> None:
    (msg,) = wire_all(build_set_messages("wg0", listen_port=0))
    assert msg.get_attr("WGDEVICE_A_IFNAME") == "wg0"
    assert msg.get_attr("WGDEVICE_A_LISTEN_PORT") == 0
    assert msg.get_attr("WGDEVICE_A_PRIVATE_KEY") is None
    assert peers_of(msg) == []


def test_get_message_names_the_device() -> None:
    msg = wire(build_get_message("wg-vpn"))
    assert msg["cmd"] == WG_CMD_GET_DEVICE
    assert msg.get_attr("WGDEVICE_A_IFNAME") == "wg-vpn"


def test_many_peers_are_split_across_bounded_messages() -> None:
    private = new_key()
    changes = [
        PeerChange(
            new_key(), preshared_key=new_key(), allowed_ips=(f"10.{i // 250}.{i % 250}.2/32",)
        )
        for i in range(2500)
    ]
    built = build_set_messages("wg0", private_key=private, listen_port=51820, peers=changes)
    assert len(built) > 1
    messages = []
    for msg in built:
        msg.encode()
        assert len(msg.data) <= DEFAULT_MAX_MESSAGE_BYTES
        decoded = wgmsg(msg.data)
        decoded.decode()
        messages.append(decoded)

    assert raw_key(messages[0], "WGDEVICE_A_PRIVATE_KEY") == base64.b64decode(private)
    assert messages[0].get_attr("WGDEVICE_A_LISTEN_PORT") == 51820
    for msg in messages:
        assert msg.get_attr("WGDEVICE_A_IFNAME") == "wg0"
        assert msg.get_attr("WGDEVICE_A_FLAGS") is None
    for msg in messages[1:]:
        assert msg.get_attr("WGDEVICE_A_PRIVATE_KEY") is None
        assert msg.get_attr("WGDEVICE_A_LISTEN_PORT") is None

    seen = [public_key(peer) for msg in messages for peer in peers_of(msg)]
    assert seen == [change.public_key for change in changes]  # each once, in order
    by_key = {public_key(peer): peer for msg in messages for peer in peers_of(msg)}
    for i, change in enumerate(changes):
        peer = by_key[change.public_key]
        assert peer.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REPLACE_ALLOWEDIPS
        assert allowed_ips(peer) == [f"10.{i // 250}.{i % 250}.2/32"]


def test_peer_count_per_message_is_bounded() -> None:
    changes = [PeerChange(new_key(), remove=True) for _ in range(25)]
    messages = wire_all(build_set_messages("wg0", peers=changes, max_peers_per_message=10))
    assert [len(peers_of(msg)) for msg in messages] == [10, 10, 5]


@pytest.mark.parametrize("update_only", [False, True])
def test_peer_with_many_allowed_ips_continues_in_the_next_messages(update_only: bool) -> None:
    key, other = new_key(), new_key()
    ips = tuple(f"10.{i // 256}.{i % 256}.1/32" for i in range(2000)) + tuple(
        f"fd00::{i + 1:x}/128" for i in range(1000)
    )
    built = build_set_messages(
        "wg0",
        peers=[
            PeerChange(key, update_only=update_only, allowed_ips=ips, persistent_keepalive=25),
            PeerChange(other, allowed_ips=("192.0.2.1/32",)),
        ],
    )
    messages = wire_all(built)
    assert len(messages) > 2
    assert all(len(msg.data) <= DEFAULT_MAX_MESSAGE_BYTES for msg in built)

    parts = [peer for msg in messages for peer in peers_of(msg) if public_key(peer) == key]
    head, *continuations = parts
    # Each continuation opens the next message, as wg(8) sends them.
    assert [peers_of(msg)[0] for msg in messages[1 : len(parts)]] == continuations
    only = WGPEER_F_UPDATE_ONLY if update_only else 0
    assert head.get_attr("WGPEER_A_FLAGS") == WGPEER_F_REPLACE_ALLOWEDIPS | only
    assert head.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") == 25
    for part in continuations:
        # Replacing again would drop what the previous message added.
        assert (part.get_attr("WGPEER_A_FLAGS") or 0) == only
        assert part.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") is None
    assert [ip for part in parts for ip in allowed_ips(part)] == list(ips)
    assert sum(public_key(peer) == other for msg in messages for peer in peers_of(msg)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"private_key": "not base64!"}, "private key .* not base64"),
        ({"private_key": base64.b64encode(b"short").decode()}, "private key .* 32 bytes"),
        ({"listen_port": 65536}, "listen port"),
        ({"peers": [PeerChange("x")]}, "public key"),
        ({"peers": [PeerChange(new_key(), allowed_ips=("10.0.0.300/32",))]}, "allowed IP"),
        ({"peers": [PeerChange(new_key(), preshared_key="AAAA")]}, "preshared key"),
        ({"peers": [PeerChange(new_key(), persistent_keepalive=-1)]}, "keepalive"),
    ],
)
def test_bad_input_is_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_set_messages("wg0", **kwargs)


def test_bad_interface_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="interface name"):
        build_set_messages("a-very-long-ifname")


# A model of the kernel's set_peer(): what the messages do, not only what they contain.


@dataclass
class KernelPeer:
    preshared_key: bytes = ZERO_KEY
    keepalive: int = 0
    allowed_ips: list[str] = field(default_factory=list)


def kernel_apply(peers: dict[str, KernelPeer], messages: Sequence[Any]) -> None:
    for msg in wire_all(messages):
        flags = msg.get_attr("WGDEVICE_A_FLAGS") or 0
        if flags & WGDEVICE_F_REPLACE_PEERS:
            peers.clear()
        for nla in peers_of(msg):
            key = public_key(nla)
            flags = nla.get_attr("WGPEER_A_FLAGS") or 0
            peer = peers.get(key)
            if peer is None:
                if flags & (WGPEER_F_REMOVE_ME | WGPEER_F_UPDATE_ONLY):
                    continue
                peer = peers[key] = KernelPeer()
            if flags & WGPEER_F_REMOVE_ME:
                del peers[key]
                continue
            psk = raw_key(nla, "WGPEER_A_PRESHARED_KEY")
            if psk is not None:
                peer.preshared_key = psk
            keepalive = nla.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
            if keepalive is not None:
                peer.keepalive = keepalive
            if flags & WGPEER_F_REPLACE_ALLOWEDIPS:
                peer.allowed_ips = []
            peer.allowed_ips.extend(allowed_ips(nla))


def test_split_messages_apply_like_one_change() -> None:
    kept, grown, removed, cleared, ghost, added = (new_key() for _ in range(6))
    old_psk, new_psk = new_key(), new_key()
    peers = {
        kept: KernelPeer(allowed_ips=["10.0.0.1/32"]),
        grown: KernelPeer(keepalive=25, allowed_ips=["10.0.0.2/32"]),
        removed: KernelPeer(allowed_ips=["10.0.0.3/32"]),
        cleared: KernelPeer(preshared_key=base64.b64decode(old_psk)),
    }
    many = [f"fd00::{i + 1:x}/128" for i in range(1500)]
    changes = [
        PeerChange(grown, update_only=True, allowed_ips=tuple(many)),
        PeerChange(removed, remove=True),
        PeerChange(cleared, preshared_key=""),
        PeerChange(ghost, update_only=True, allowed_ips=tuple(many)),  # absent: stays absent
        PeerChange(added, preshared_key=new_psk, allowed_ips=("10.0.0.9/32",)),
    ]
    kernel_apply(peers, build_set_messages("wg0", peers=changes))
    assert peers == {
        kept: KernelPeer(allowed_ips=["10.0.0.1/32"]),
        grown: KernelPeer(keepalive=25, allowed_ips=many),
        cleared: KernelPeer(),
        added: KernelPeer(preshared_key=base64.b64decode(new_psk), allowed_ips=["10.0.0.9/32"]),
    }


# --- dumps --------------------------------------------------------------------------------


def allowed_ip_nla(text: str) -> dict[str, Any]:
    network = ipaddress.ip_network(text)
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    return {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", network.network_address.packed],
            ["WGALLOWEDIP_A_CIDR_MASK", network.prefixlen],
        ]
    }


def endpoint_value(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.rpartition(":")
    if host.startswith("["):
        return {"addr": host[1:-1], "port": int(port), "flowinfo": 0, "scope_id": 0}
    return {"addr": host, "port": int(port)}


def kernel_peer(peer: PeerState, ips: Sequence[str], *, continued: bool = False) -> dict[str, Any]:
    """A peer as the kernel's get_peer() writes it; a continuation has only key and IPs."""
    attrs: list[list[Any]] = [["WGPEER_A_PUBLIC_KEY", peer.public_key]]
    if not continued:
        psk = peer.preshared_key or base64.b64encode(ZERO_KEY).decode()
        attrs += [
            ["WGPEER_A_PRESHARED_KEY", psk],
            ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": peer.last_handshake, "tv_nsec": 123}],
            ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.persistent_keepalive],
            ["WGPEER_A_TX_BYTES", peer.tx_bytes],
            ["WGPEER_A_RX_BYTES", peer.rx_bytes],
            ["WGPEER_A_PROTOCOL_VERSION", 1],
        ]
        if peer.endpoint is not None:
            attrs.append(["WGPEER_A_ENDPOINT", endpoint_value(peer.endpoint)])
    attrs.append(["WGPEER_A_ALLOWEDIPS", [allowed_ip_nla(ip) for ip in ips]])
    return {"attrs": attrs}


def kernel_message(peers: list[dict[str, Any]], device: DeviceState | None = None) -> Any:
    msg = wgmsg()
    msg["cmd"] = WG_CMD_GET_DEVICE
    msg["version"] = 1
    msg["header"]["flags"] = NLM_F_MULTI
    attrs: list[list[Any]] = []
    if device is not None:  # only the first message of a dump describes the device
        attrs += [
            ["WGDEVICE_A_LISTEN_PORT", device.listen_port],
            ["WGDEVICE_A_FWMARK", 0],
            ["WGDEVICE_A_IFINDEX", 7],
            ["WGDEVICE_A_IFNAME", "wg0"],
        ]
        if device.private_key is not None:
            attrs += [
                ["WGDEVICE_A_PRIVATE_KEY", device.private_key],
                ["WGDEVICE_A_PUBLIC_KEY", new_key()],
            ]
    attrs.append(["WGDEVICE_A_PEERS", peers])
    msg["attrs"] = attrs
    return wire(msg)


def kernel_dump(device: DeviceState, *, ips_per_message: int) -> list[Any]:
    """The dump of ``device``, each message holding at most ``ips_per_message`` allowed IPs
    (and a peer each at least), cutting peers at message boundaries as the kernel does."""
    messages: list[Any] = []
    current: list[dict[str, Any]] = []
    room = ips_per_message
    for peer in device.peers.values():
        ips = list(peer.allowed_ips)
        continued = False
        while True:
            if room <= 0 and current:
                messages.append(kernel_message(current, None if messages else device))
                current, room = [], ips_per_message
            part, ips = ips[:room], ips[room:]
            current.append(kernel_peer(peer, part, continued=continued))
            room -= max(len(part), 1)
            if not ips:
                break
            continued = True
    messages.append(kernel_message(current, None if messages else device))
    return messages


def test_parse_device_merges_every_message_of_a_dump() -> None:
    private = new_key()
    a, b, c, d = (new_key() for _ in range(4))
    psk = new_key()
    device = DeviceState(private_key=private, listen_port=51820)
    peer_a = PeerState(
        a,
        preshared_key=psk,
        allowed_ips=("10.8.0.2/32",),
        persistent_keepalive=25,
        endpoint="198.51.100.7:40000",
        last_handshake=1_700_000_000,
        rx_bytes=1 << 40,
        tx_bytes=12345,
    )
    peer_b = PeerState(
        b,
        allowed_ips=("10.8.0.3/32", "fd00:8::3/128", "10.9.0.0/24"),
        endpoint="[2001:db8::7]:51000",
        last_handshake=1_700_000_100,
        rx_bytes=5,
        tx_bytes=6,
    )
    peer_c = PeerState(c, allowed_ips=("10.8.0.4/32",))
    peer_d = PeerState(d)
    # Three messages; b is cut after its first allowed IP and continues in the second.
    b_head = kernel_peer(peer_b, ["10.8.0.3/32"])
    b_rest = kernel_peer(peer_b, ["fd00:8::3/128", "10.9.0.0/24"], continued=True)
    messages = [
        kernel_message([kernel_peer(peer_a, peer_a.allowed_ips), b_head], device),
        kernel_message([b_rest]),
        kernel_message([kernel_peer(peer_c, peer_c.allowed_ips), kernel_peer(peer_d, [])]),
    ]

    state = parse_device(messages)
    # pyroute2's info()[0] would stop after the first message (#1212).
    assert set(state.peers) == {a, b, c, d}
    assert state.private_key == private
    assert state.listen_port == 51820
    assert state.peers[a] == peer_a
    assert state.peers[b] == peer_b  # both halves of its allowed IPs, counters of the head
    assert state.peers[b].preshared_key is None  # all zeros on the wire
    assert state.peers[b].endpoint == "[2001:db8::7]:51000"
    assert state.peers[c] == peer_c
    assert state.peers[d] == PeerState(d)


def test_parse_device_without_private_key_or_peers() -> None:
    state = parse_device([kernel_message([], DeviceState(listen_port=0))])
    assert state == DeviceState()


def test_parse_device_of_an_empty_dump_fails() -> None:
    with pytest.raises(DriverError):
        parse_device([])


def test_dump_round_trip_of_a_large_device() -> None:
    peers = {}
    for i in range(300):
        key = new_key()
        v4 = [f"10.{j}.{i % 256}.{i // 256}/32" for j in range(i % 7)]
        ips = (*v4, f"fd00::{i + 1:x}/128")
        peers[key] = PeerState(
            key,
            preshared_key=new_key() if i % 3 else None,
            allowed_ips=ips,
            persistent_keepalive=25 if i % 2 else 0,
            endpoint=f"203.0.113.{i % 250}:{1024 + i}" if i % 5 else None,
            last_handshake=1_700_000_000 + i if i % 4 else 0,
            rx_bytes=i * 1000,
            tx_bytes=i * 7,
        )
    device = DeviceState(private_key=new_key(), listen_port=443, peers=peers)
    messages = kernel_dump(device, ips_per_message=50)
    assert len(messages) > 10
    assert sum(len(peers_of(msg)) for msg in messages) > len(peers)  # some peers were cut
    assert parse_device(messages) == device


# --- the driver on this machine ---------------------------------------------------------


def wireguard_family_status() -> str:
    """Whether the family is "missing" or "present", or why we cannot tell. Blocking."""
    sock = GenericNetlinkSocket()
    try:
        sock.bind("wireguard", wgmsg)
    except NetlinkError as exc:
        return "missing" if exc.code == errno.ENOENT else f"generic netlink failed: {exc}"
    finally:
        sock.close()
    return "present"


def test_netlink_driver_is_a_wireguard_driver() -> None:
    driver: WireGuardDriver = NetlinkDriver()
    assert driver.name == "netlink"


async def test_driver_explains_a_missing_kernel_module() -> None:
    # pyroute2's sync sockets run their own event loop: not from inside this one.
    status = await asyncio.to_thread(wireguard_family_status)
    need(status == "missing", f"cannot check the missing-module message: WireGuard family {status}")
    driver = NetlinkDriver()
    ifname = "wgt" + uuid.uuid4().hex[:8]
    with pytest.raises(DriverError, match="kernel module not loaded") as caught:
        await driver.ensure_device(ifname)
    assert str(caught.value) == MODULE_MISSING
    assert 'driver = "uapi"' in str(caught.value)
    with pytest.raises(DriverError, match="kernel module not loaded"):
        await driver.get(ifname)
    with pytest.raises(DriverError, match="kernel module not loaded"):
        await driver.set(ifname, peers=[PeerChange(new_key(), remove=True)])
    assert not await driver.exists(ifname)


async def test_driver_rejects_bad_input_before_touching_the_kernel() -> None:
    with pytest.raises(DriverError, match="public key"):
        await NetlinkDriver().set("wg0", peers=[PeerChange("not a key")])


async def test_driver_leaves_other_kinds_of_interface_alone() -> None:
    driver = NetlinkDriver()
    assert not await driver.exists("lo")
    with pytest.raises(DriverError, match="not a kernel WireGuard device"):
        await driver.ensure_device("lo")
    with pytest.raises(DriverError, match="not a kernel WireGuard device"):
        await driver.delete_device("lo")


async def test_deleting_a_missing_device_is_a_no_op() -> None:
    await NetlinkDriver().delete_device("wgt" + uuid.uuid4().hex[:8])
