"""`PeerIndex`: WireGuard peers are validated as a whole and per change, naming the client."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from node_agent.backends.wireguard.peers import PeerIndex
from node_agent.errors import InvalidStateError
from node_agent.model import Client, OpenVpnClient, WireGuardPeer

BACKEND = "wg"
SERVER = (ipaddress.ip_interface("10.8.0.1/24"), ipaddress.ip_interface("fd00::1/64"))


def key(n: int) -> str:
    return base64.b64encode(n.to_bytes(32, "big")).decode()


def peer(
    client_id: str,
    n: int,
    *allowed_ips: str,
    psk: str | None = None,
    keepalive: int = 0,
) -> Client:
    ips = allowed_ips or (f"10.8.0.{n + 1}/32",)
    return Client(client_id, WireGuardPeer(key(n), psk, ips, keepalive))


def build(*clients: Client) -> PeerIndex:
    return PeerIndex.build(BACKEND, clients, SERVER)


def test_valid_peers_build_an_index() -> None:
    index = build(
        peer("a", 1),
        peer("b", 2, "10.8.0.3/32", "fd00::3/128", psk=key(99), keepalive=25),
        peer("c", 3, "192.168.50.0/24"),
    )

    assert set(index.peers) == {"a", "b", "c"}
    assert index.key_owner == {key(1): "a", key(2): "b", key(3): "c"}


def test_an_empty_device_is_valid() -> None:
    assert build().peers == {}


# --- one peer on its own ----------------------------------------------------------------


def spec_with(**changes: object) -> WireGuardPeer:
    fields: dict[str, object] = {
        "public_key": key(7),
        "preshared_key": None,
        "allowed_ips": ("10.8.0.7/32",),
        "persistent_keepalive": 0,
    }
    fields.update(changes)
    return WireGuardPeer(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param(spec_with(public_key="not base64!!"), "not valid base64", id="bad-base64"),
        pytest.param(spec_with(public_key=key(7)[:-1]), "not valid base64", id="truncated"),
        pytest.param(
            spec_with(public_key=base64.b64encode(b"x" * 31).decode()),
            "must be 32 bytes, got 31",
            id="short-key",
        ),
        pytest.param(
            spec_with(public_key=base64.b64encode(b"x" * 33).decode()),
            "must be 32 bytes, got 33",
            id="long-key",
        ),
        pytest.param(spec_with(preshared_key="%%%"), "preshared key: not valid base64", id="psk"),
        pytest.param(
            spec_with(preshared_key=base64.b64encode(b"k" * 16).decode()),
            "preshared key: a key must be 32 bytes",
            id="short-psk",
        ),
        pytest.param(spec_with(allowed_ips=("10.8.0.1/24",)), "not a valid CIDR", id="host-bits"),
        pytest.param(spec_with(allowed_ips=("10.9.0.7",)), "needs a prefix length", id="no-prefix"),
        pytest.param(spec_with(allowed_ips=("hello/32",)), "not a valid CIDR", id="not-an-ip"),
        pytest.param(spec_with(allowed_ips=("10.9.0.7/33",)), "not a valid CIDR", id="prefix-33"),
        pytest.param(spec_with(allowed_ips=()), "at least one allowed IP", id="no-allowed-ips"),
        pytest.param(spec_with(persistent_keepalive=-1), "keepalive", id="keepalive-negative"),
        pytest.param(spec_with(persistent_keepalive=65536), "keepalive", id="keepalive-too-big"),
        pytest.param(
            spec_with(allowed_ips=("10.8.0.0/24",)), "server's own address 10.8.0.1", id="own-v4"
        ),
        pytest.param(
            spec_with(allowed_ips=("10.8.0.1/32",)), "server's own address", id="own-v4-host"
        ),
        pytest.param(
            spec_with(allowed_ips=("0.0.0.0/0",)), "server's own address", id="own-v4-default"
        ),
        pytest.param(
            spec_with(allowed_ips=("fd00::/64",)), "server's own address fd00::1", id="own-v6"
        ),
        pytest.param(OpenVpnClient("cn"), "WireGuard peers only", id="not-wireguard"),
    ],
)
def test_an_invalid_peer_is_rejected_naming_the_client(spec: object, problem: str) -> None:
    client = Client("bad-one", spec)  # type: ignore[arg-type]

    with pytest.raises(InvalidStateError) as error:
        build(peer("good", 1), client)

    assert "'bad-one'" in str(error.value)
    assert problem in str(error.value)


def test_keepalive_bounds_are_inclusive() -> None:
    index = build(peer("a", 1, keepalive=0), peer("b", 2, keepalive=65535))

    assert index.peers["b"].persistent_keepalive == 65535


def test_an_allowed_ip_outside_the_server_network_family_is_fine() -> None:
    # The server has fd00::1/64; a v6 block elsewhere and a v4 block elsewhere are both fine.
    assert set(build(peer("a", 1, "fd01::/64", "172.16.0.0/12")).peers) == {"a"}


# --- peers against each other -------------------------------------------------------------


def test_duplicate_public_key_is_rejected() -> None:
    a = peer("a", 1)
    b = Client("b", WireGuardPeer(key(1), None, ("10.8.0.50/32",)))

    with pytest.raises(InvalidStateError, match=r"client 'b': public key already used by .*'a'"):
        build(a, b)


def test_duplicate_client_id_is_rejected() -> None:
    with pytest.raises(InvalidStateError, match="duplicate client id 'a'"):
        build(peer("a", 1), peer("a", 2))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("10.8.0.2/32", "10.8.0.2/32", id="same-host"),
        pytest.param("10.20.0.0/24", "10.20.0.9/32", id="net-then-host"),
        pytest.param("10.20.0.9/32", "10.20.0.0/24", id="host-then-net"),
        pytest.param("10.20.0.0/16", "10.20.5.0/24", id="wide-then-narrow"),
        pytest.param("10.20.5.0/24", "10.20.0.0/16", id="narrow-then-wide"),
        pytest.param("fd01::2/128", "fd01::2/128", id="v6-same-host"),
        pytest.param("fd01::/64", "fd01::9/128", id="v6-net-then-host"),
        pytest.param("fd01::9/128", "fd01::/64", id="v6-host-then-net"),
    ],
)
def test_overlapping_allowed_ips_are_rejected(first: str, second: str) -> None:
    with pytest.raises(InvalidStateError, match=rf"client 'b'.*{second}.*client 'a'"):
        build(peer("a", 1, first), peer("b", 2, second))


def test_an_overlap_with_a_later_allowed_ip_of_a_peer_is_found() -> None:
    # "b" overlaps a's second block only, with other peers' blocks sorted in between.
    with pytest.raises(InvalidStateError, match=r"client 'c'.*client 'a'"):
        build(
            peer("a", 1, "10.20.0.1/32", "10.30.0.0/24"),
            peer("b", 2, "10.25.0.0/24"),
            peer("c", 3, "10.30.0.200/32"),
        )


def test_adjacent_blocks_and_other_families_do_not_overlap() -> None:
    index = build(
        peer("a", 1, "10.20.0.0/25"),
        peer("b", 2, "10.20.0.128/25"),
        peer("c", 3, "10.20.1.0/24"),
        peer("d", 4, "fd01::/64"),
        peer("e", 5, "fd01:0:0:1::/64"),
    )

    assert len(index.peers) == 5


# --- changes against an index -------------------------------------------------------------


@pytest.fixture
def index() -> PeerIndex:
    return build(
        peer("a", 1, "10.8.0.2/32"),
        peer("b", 2, "10.8.0.3/32", "fd00::3/128"),
        peer("c", 3, "10.50.0.0/24"),
    )


def snapshot(index: PeerIndex) -> tuple[object, ...]:
    return (
        dict(index.peers),
        dict(index.key_owner),
        {v: (list(r.starts), list(r.ends), list(r.owners)) for v, r in index._routes.items()},
    )


def test_a_new_peer_that_clashes_with_nobody_is_allowed(index: PeerIndex) -> None:
    index.check_changes([peer("d", 4, "10.8.0.4/32", "fd00::4/128")], [])


def test_a_new_peer_with_an_existing_key_is_refused(index: PeerIndex) -> None:
    newcomer = Client("d", WireGuardPeer(key(1), None, ("10.8.0.4/32",)))

    with pytest.raises(InvalidStateError, match=r"client 'd': public key already used .*'a'"):
        index.check_changes([newcomer], [])


@pytest.mark.parametrize(
    ("route", "owner"),
    [
        pytest.param("10.8.0.2/32", "a", id="same-host"),
        pytest.param("fd00::3/128", "b", id="same-v6-host"),
        pytest.param("10.50.0.7/32", "c", id="inside-existing-net"),
        pytest.param("10.50.0.0/16", "c", id="around-existing-net"),
    ],
)
def test_a_new_peer_with_an_existing_route_is_refused(
    index: PeerIndex, route: str, owner: str
) -> None:
    with pytest.raises(InvalidStateError, match=rf"client 'd'.*{route}.*client '{owner}'"):
        index.check_changes([peer("d", 4, route)], [])


def test_a_clash_with_a_removed_client_is_allowed(index: PeerIndex) -> None:
    taker = Client("d", WireGuardPeer(key(1), None, ("10.8.0.2/32",)))

    index.check_changes([taker], ["a"])


def test_a_clash_with_a_replaced_client_is_allowed(index: PeerIndex) -> None:
    # "a" moves to a new key and address in the same change; "d" takes over the old ones.
    moved = peer("a", 11, "10.8.0.20/32")
    taker = Client("d", WireGuardPeer(key(1), None, ("10.8.0.2/32",)))

    index.check_changes([moved, taker], [])


def test_a_client_may_keep_its_own_key_and_route_when_updated(index: PeerIndex) -> None:
    index.check_changes([peer("a", 1, "10.8.0.2/32", keepalive=25)], [])


def test_clashes_among_the_upserts_are_refused(index: PeerIndex) -> None:
    same_key = [peer("d", 4), Client("e", WireGuardPeer(key(4), None, ("10.8.0.40/32",)))]
    same_route = [peer("d", 4, "10.60.0.0/24"), peer("e", 5, "10.60.0.5/32")]
    same_id = [peer("d", 4), peer("d", 5)]

    with pytest.raises(InvalidStateError, match=r"client 'e': public key already used .*'d'"):
        index.check_changes(same_key, [])
    with pytest.raises(InvalidStateError, match=r"client 'e'.*overlaps.*client 'd'"):
        index.check_changes(same_route, [])
    with pytest.raises(InvalidStateError, match="duplicate client id 'd'"):
        index.check_changes(same_id, [])


def test_an_upsert_is_checked_on_its_own_too(index: PeerIndex) -> None:
    with pytest.raises(InvalidStateError, match=r"client 'd'.*not a valid CIDR"):
        index.check_changes([peer("d", 4, "10.8.0.4/24")], [])
    with pytest.raises(InvalidStateError, match=r"client 'd'.*server's own address"):
        index.check_changes([peer("d", 4, "10.8.0.0/30")], [])


def test_check_changes_has_no_side_effects(index: PeerIndex) -> None:
    before = snapshot(index)

    index.check_changes([peer("a", 11, "10.8.0.20/32"), peer("d", 4)], ["c"])
    with pytest.raises(InvalidStateError):
        index.check_changes([peer("d", 4), peer("e", 5, "10.8.0.2/32")], ["b"])

    assert snapshot(index) == before


def test_apply_changes_moves_ownership(index: PeerIndex) -> None:
    taker = Client("d", WireGuardPeer(key(1), None, ("10.8.0.2/32",)))
    index.check_changes([taker], ["a"])

    index.apply_changes([taker], ["a"])

    assert set(index.peers) == {"b", "c", "d"}
    assert index.key_owner[key(1)] == "d"
    # A later change sees the new owner of the key and of the route.
    with pytest.raises(InvalidStateError, match=r"client 'e': public key already used .*'d'"):
        index.check_changes([Client("e", WireGuardPeer(key(1), None, ("10.8.0.99/32",)))], [])
    with pytest.raises(InvalidStateError, match=r"client 'e'.*client 'd'"):
        index.check_changes([peer("e", 5, "10.8.0.2/32")], [])
    # The removed client's name no longer frees anything.
    with pytest.raises(InvalidStateError, match=r"client 'e'.*client 'd'"):
        index.check_changes([peer("e", 5, "10.8.0.2/32")], ["a"])


def test_apply_changes_releases_the_old_routes_of_an_updated_client(index: PeerIndex) -> None:
    index.apply_changes([peer("c", 3, "10.51.0.0/24")], [])

    assert index.peers["c"].allowed_ips == ("10.51.0.0/24",)
    index.check_changes([peer("d", 4, "10.50.0.0/24")], [])  # c's old block is free now
    with pytest.raises(InvalidStateError, match=r"client 'd'.*client 'c'"):
        index.check_changes([peer("d", 4, "10.51.0.128/25")], [])


def test_apply_changes_ignores_unknown_removals(index: PeerIndex) -> None:
    index.apply_changes([], ["nobody"])

    assert set(index.peers) == {"a", "b", "c"}


def test_ten_thousand_peers_build() -> None:
    base = int(ipaddress.IPv4Address("10.100.0.0"))
    clients = [
        Client(
            f"client-{i}",
            WireGuardPeer(key(i + 1), None, (f"{ipaddress.IPv4Address(base + i)}/32",)),
        )
        for i in range(10_000)
    ]

    index = build(*clients)

    assert len(index.peers) == 10_000
    assert len(index.key_owner) == 10_000
    with pytest.raises(InvalidStateError, match="client-5000"):
        index.check_changes([peer("late", 0, "10.100.19.136/32")], [])


def noncanonical(b64_key: str) -> str:
    """The same 32 bytes in other base64: the last character's two unused bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(b64_key[42])
    return b64_key[:42] + alphabet[last | 0b11] + "="


def test_the_same_key_in_other_base64_is_a_duplicate() -> None:
    twin = noncanonical(key(1))
    assert twin != key(1) and base64.b64decode(twin) == base64.b64decode(key(1))

    with pytest.raises(InvalidStateError, match=r"client 'b'.*not canonical"):
        build(peer("a", 1), Client("b", WireGuardPeer(twin, None, ("10.8.0.50/32",))))
