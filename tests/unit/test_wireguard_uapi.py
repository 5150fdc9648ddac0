"""The UAPI text protocol: `format_set` requests and `parse_get` replies (no device needed)."""

from __future__ import annotations

import base64

import pytest

from node_agent.backends.wireguard.driver import DriverError, PeerChange, PeerState
from node_agent.backends.wireguard.uapi import b64_to_hex, format_set, hex_to_b64, parse_get

PRIVATE_HEX = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a"
PEER1_HEX = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33"
PEER2_HEX = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376"
PSK_HEX = "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52"
ZERO_HEX = "0" * 64


def b64(hex_key: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_key)).decode()


def lines(request: bytes) -> list[str]:
    text = request.decode()
    assert text.endswith("\n\n"), "a request ends with a blank line"
    return text[:-2].split("\n")


def test_keys_convert_between_base64_and_lowercase_hex() -> None:
    assert b64_to_hex(b64(PEER1_HEX)) == PEER1_HEX
    assert hex_to_b64(PEER1_HEX) == b64(PEER1_HEX)
    assert hex_to_b64(PEER1_HEX.upper()) == b64(PEER1_HEX)


# --- format_set ---------------------------------------------------------------------------


def test_an_empty_set_is_just_the_header() -> None:
    assert format_set() == b"set=1\n\n"


def test_device_settings() -> None:
    request = format_set(private_key=b64(PRIVATE_HEX), listen_port=51820)

    assert lines(request) == ["set=1", f"private_key={PRIVATE_HEX}", "listen_port=51820"]


def test_a_new_peer_with_everything() -> None:
    change = PeerChange(
        public_key=b64(PEER1_HEX),
        preshared_key=b64(PSK_HEX),
        allowed_ips=("10.8.0.2/32", "fd00::2/128"),
        persistent_keepalive=25,
    )

    assert lines(format_set(peers=[change])) == [
        "set=1",
        f"public_key={PEER1_HEX}",
        f"preshared_key={PSK_HEX}",
        "persistent_keepalive_interval=25",
        "replace_allowed_ips=true",
        "allowed_ip=10.8.0.2/32",
        "allowed_ip=fd00::2/128",
    ]


def test_removal_is_only_the_key_and_remove() -> None:
    # Other fields of a removal are not sent: they would be meaningless after remove=true.
    change = PeerChange(public_key=b64(PEER1_HEX), remove=True, allowed_ips=("10.8.0.2/32",))

    assert lines(format_set(peers=[change])) == ["set=1", f"public_key={PEER1_HEX}", "remove=true"]


def test_update_only_changes_just_what_is_given() -> None:
    change = PeerChange(public_key=b64(PEER2_HEX), update_only=True, persistent_keepalive=0)

    assert lines(format_set(peers=[change])) == [
        "set=1",
        f"public_key={PEER2_HEX}",
        "update_only=true",
        "persistent_keepalive_interval=0",
    ]


def test_an_empty_preshared_key_clears_it_with_zeros() -> None:
    change = PeerChange(public_key=b64(PEER1_HEX), update_only=True, preshared_key="")

    assert f"preshared_key={ZERO_HEX}" in lines(format_set(peers=[change]))


def test_an_empty_allowed_ip_list_still_replaces() -> None:
    change = PeerChange(public_key=b64(PEER1_HEX), update_only=True, allowed_ips=())

    assert lines(format_set(peers=[change]))[-1] == "replace_allowed_ips=true"
    assert not any(line.startswith("allowed_ip=") for line in lines(format_set(peers=[change])))


def test_several_peers_keep_their_order() -> None:
    request = format_set(
        listen_port=51821,
        peers=[
            PeerChange(public_key=b64(PEER1_HEX), remove=True),
            PeerChange(public_key=b64(PEER2_HEX), allowed_ips=("10.8.0.3/32",)),
        ],
    )

    assert lines(request) == [
        "set=1",
        "listen_port=51821",
        f"public_key={PEER1_HEX}",
        "remove=true",
        f"public_key={PEER2_HEX}",
        "replace_allowed_ips=true",
        "allowed_ip=10.8.0.3/32",
    ]


# --- parse_get ----------------------------------------------------------------------------

# What wireguard-go answers to get=1 (device/uapi.go), without the final errno line.
GET_REPLY = f"""\
private_key={PRIVATE_HEX}
listen_port=51820
fwmark=0
public_key={PEER1_HEX}
preshared_key={PSK_HEX}
protocol_version=1
endpoint=203.0.113.7:51234
last_handshake_time_sec=1767268800
last_handshake_time_nsec=123456789
tx_bytes=38333
rx_bytes=2224
persistent_keepalive_interval=25
allowed_ip=10.8.0.2/32
allowed_ip=fd00::2/128
public_key={PEER2_HEX}
preshared_key={ZERO_HEX}
protocol_version=1
endpoint=[2001:db8::1]:51820
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
allowed_ip=10.8.0.3/32
"""


def test_parse_a_device_with_two_peers() -> None:
    device = parse_get(GET_REPLY)

    assert device.private_key == b64(PRIVATE_HEX)
    assert device.listen_port == 51820
    assert device.peers == {
        b64(PEER1_HEX): PeerState(
            public_key=b64(PEER1_HEX),
            preshared_key=b64(PSK_HEX),
            allowed_ips=("10.8.0.2/32", "fd00::2/128"),
            persistent_keepalive=25,
            endpoint="203.0.113.7:51234",
            last_handshake=1767268800,
            rx_bytes=2224,
            tx_bytes=38333,
        ),
        b64(PEER2_HEX): PeerState(
            public_key=b64(PEER2_HEX),
            preshared_key=None,
            allowed_ips=("10.8.0.3/32",),
            persistent_keepalive=0,
            endpoint="[2001:db8::1]:51820",
            last_handshake=0,
            rx_bytes=0,
            tx_bytes=0,
        ),
    }


def test_parse_a_fresh_device() -> None:
    # wireguard-go leaves out a zero private key and port, and a peer without an endpoint
    # has no endpoint line.
    device = parse_get(
        f"public_key={PEER1_HEX}\npreshared_key={ZERO_HEX}\nprotocol_version=1\n"
        "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
        "persistent_keepalive_interval=0\n"
    )

    assert (device.private_key, device.listen_port) == (None, 0)
    assert device.peers == {b64(PEER1_HEX): PeerState(public_key=b64(PEER1_HEX))}


def test_parse_an_empty_reply() -> None:
    device = parse_get("")

    assert (device.private_key, device.listen_port, device.peers) == (None, 0, {})


def test_parse_an_all_zero_private_key_as_none() -> None:
    assert parse_get(f"private_key={ZERO_HEX}\nlisten_port=1\n").private_key is None


def test_parse_round_trips_what_format_set_sends() -> None:
    change = PeerChange(
        public_key=b64(PEER2_HEX),
        preshared_key=b64(PSK_HEX),
        allowed_ips=("10.8.0.9/32",),
        persistent_keepalive=15,
    )
    sent = format_set(peers=[change]).decode().removeprefix("set=1\n")

    peer = parse_get(sent).peers[b64(PEER2_HEX)]

    assert (peer.preshared_key, peer.allowed_ips, peer.persistent_keepalive) == (
        b64(PSK_HEX),
        ("10.8.0.9/32",),
        15,
    )


def test_a_malformed_line_is_a_driver_error() -> None:
    with pytest.raises(DriverError, match="malformed UAPI line 'garbage'"):
        parse_get(f"listen_port=51820\ngarbage\npublic_key={PEER1_HEX}\n")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("listen_port=http\n", id="port"),
        pytest.param("public_key=not-hex\n", id="key"),
        pytest.param(f"public_key={PEER1_HEX}\nrx_bytes=lots\n", id="counter"),
    ],
)
def test_a_malformed_value_is_a_driver_error(text: str) -> None:
    with pytest.raises(DriverError, match="malformed UAPI"):
        parse_get(text)
