"""The desired-state builder: which configs reach a node, in which backend and with which
peer fields; the proto it sends; and the delta between two states (which, applied to the old
state, must give the new one)."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import pytest

from controller.domain.enums import SubscriptionStatus, VpnProtocol
from controller.nodes.desired import (
    ConfigRow,
    NodeState,
    build_state,
    count_clients,
    diff,
    to_proto,
)
from proto.nodeapi.v1 import node_agent_pb2 as pb

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
WG = VpnProtocol.WIREGUARD
BACKENDS = {WG: "wg0", VpnProtocol.VLESS: "xray"}


def key(n: int) -> str:
    return base64.b64encode(n.to_bytes(32, "big")).decode()


def wg_row(n: int, **changes: object) -> ConfigRow:
    fields: dict[str, object] = {
        "config_id": n,
        "protocol": WG,
        "client_id": key(n),
        "config_active": True,
        "status": SubscriptionStatus.ACTIVE,
        "expires_at": LATER,
        "banned": False,
        "address": f"10.8.0.{n + 1}",
        "preshared_key": key(1000 + n),
    }
    fields.update(changes)
    return ConfigRow(**fields)  # type: ignore[arg-type]


def vless_row(n: int, **changes: object) -> ConfigRow:
    fields: dict[str, object] = {
        "config_id": n,
        "protocol": VpnProtocol.VLESS,
        "client_id": f"00000000-0000-4000-8000-{n:012d}",
        "config_active": True,
        "status": SubscriptionStatus.ACTIVE,
        "expires_at": LATER,
        "banned": False,
        "extra": {"flow": "xtls-rprx-vision"},
    }
    fields.update(changes)
    return ConfigRow(**fields)  # type: ignore[arg-type]


def wg_client(n: int, *, psk: str | None = None, address: str | None = None) -> pb.Client:
    return pb.Client(
        id=key(n),
        wireguard=pb.WireGuardPeer(
            public_key=key(n),
            preshared_key=key(1000 + n) if psk is None else psk,
            allowed_ips=[(address or f"10.8.0.{n + 1}") + "/32"],
        ),
    )


# --- build_state: who is entitled -------------------------------------------------------------


def test_an_entitled_config_is_in_its_backend() -> None:
    state = build_state(BACKENDS, [wg_row(1)], NOW)
    assert state == {"wg0": {key(1): wg_client(1)}, "xray": {}}


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"config_active": False}, "config deactivated"),
        ({"status": SubscriptionStatus.EXPIRED}, "subscription expired"),
        ({"status": SubscriptionStatus.SUSPENDED}, "subscription suspended"),
        ({"status": SubscriptionStatus.PENDING}, "subscription pending"),
        ({"expires_at": None}, "no expiry date"),
        ({"expires_at": NOW}, "expires exactly now"),
        ({"expires_at": NOW - timedelta(seconds=1)}, "expired but not swept yet"),
        ({"banned": True}, "owner banned"),
    ],
)
def test_configs_without_access_are_left_out(changes: dict[str, object], why: str) -> None:
    state = build_state(BACKENDS, [wg_row(1), wg_row(2, **changes)], NOW)
    assert list(state["wg0"]) == [key(1)], why


def test_expiry_is_judged_against_now() -> None:
    row = wg_row(1, expires_at=NOW + timedelta(seconds=1))
    assert key(1) in build_state(BACKENDS, [row], NOW)["wg0"]
    assert build_state(BACKENDS, [row], NOW + timedelta(seconds=1))["wg0"] == {}


def test_each_protocol_goes_to_its_mapped_backend() -> None:
    state = build_state(BACKENDS, [wg_row(1), vless_row(2), wg_row(3)], NOW)
    assert sorted(state["wg0"]) == sorted([key(1), key(3)])
    assert list(state["xray"]) == [vless_row(2).client_id]
    vless = state["xray"][vless_row(2).client_id]
    assert vless.WhichOneof("spec") == "vless"
    assert vless.vless.uuid == vless_row(2).client_id
    assert vless.vless.flow == "xtls-rprx-vision"
    assert vless.vless.email == "config-2"


def test_the_backend_name_is_the_mapped_one() -> None:
    state = build_state({WG: "wg-eu"}, [wg_row(1)], NOW)
    assert state == {"wg-eu": {key(1): wg_client(1)}}


def test_every_mapped_backend_is_present_even_when_empty() -> None:
    backends = {WG: "wg0", VpnProtocol.VLESS: "xray", VpnProtocol.OPENVPN: "ovpn"}
    assert build_state(backends, [], NOW) == {"wg0": {}, "xray": {}, "ovpn": {}}
    # A row without access still leaves its backend present and empty.
    state = build_state(backends, [wg_row(1, banned=True)], NOW)
    assert state == {"wg0": {}, "xray": {}, "ovpn": {}}


def test_protocols_without_a_backend_are_skipped() -> None:
    state = build_state({WG: "wg0"}, [wg_row(1), vless_row(2)], NOW)
    assert state == {"wg0": {key(1): wg_client(1)}}
    assert count_clients(state) == 1


def test_no_backends_means_an_empty_state() -> None:
    assert build_state({}, [wg_row(1), vless_row(2)], NOW) == {}


def test_openvpn_clients_carry_their_common_name() -> None:
    row = wg_row(5, protocol=VpnProtocol.OPENVPN, client_id="client-5", address=None)
    state = build_state({VpnProtocol.OPENVPN: "ovpn"}, [row], NOW)
    assert state == {
        "ovpn": {
            "client-5": pb.Client(id="client-5", openvpn=pb.OpenVpnClient(common_name="client-5"))
        }
    }


# --- build_state: WireGuard peers -------------------------------------------------------------


def test_wireguard_peer_fields() -> None:
    client = build_state(BACKENDS, [wg_row(7)], NOW)["wg0"][key(7)]
    assert client.id == key(7)
    assert client.WhichOneof("spec") == "wireguard"
    assert client.wireguard.public_key == key(7)
    assert client.wireguard.preshared_key == key(1007)
    assert list(client.wireguard.allowed_ips) == ["10.8.0.8/32"]
    assert client.wireguard.persistent_keepalive == 0


def test_ipv6_addresses_get_a_128_prefix() -> None:
    client = build_state(BACKENDS, [wg_row(1, address="fd00:8::2")], NOW)["wg0"][key(1)]
    assert list(client.wireguard.allowed_ips) == ["fd00:8::2/128"]


def test_no_preshared_key_is_sent_as_empty() -> None:
    client = build_state(BACKENDS, [wg_row(1, preshared_key=None)], NOW)["wg0"][key(1)]
    assert client.wireguard.preshared_key == ""


@pytest.mark.parametrize("address", [None, ""])
def test_wireguard_rows_without_an_address_are_skipped(address: str | None) -> None:
    state = build_state(BACKENDS, [wg_row(1, address=address), wg_row(2)], NOW)
    assert list(state["wg0"]) == [key(2)]


# --- to_proto ---------------------------------------------------------------------------------


def test_to_proto_is_sorted_and_deterministic() -> None:
    rows = [wg_row(n) for n in range(1, 9)] + [vless_row(n) for n in range(20, 25)]
    shuffled = rows[:]
    random.Random(4).shuffle(shuffled)
    a = to_proto(build_state(BACKENDS, rows, NOW))
    b = to_proto(build_state(BACKENDS, shuffled, NOW))
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    assert [backend.name for backend in a.backends] == ["wg0", "xray"]
    for backend in a.backends:
        ids = [client.id for client in backend.clients]
        assert ids == sorted(ids)
    assert len(a.backends[0].clients) == 8
    assert len(a.backends[1].clients) == 5


def test_to_proto_keeps_empty_backends() -> None:
    message = to_proto({"b": {}, "a": {key(1): wg_client(1)}})
    assert [(b.name, len(b.clients)) for b in message.backends] == [("a", 1), ("b", 0)]


# --- diff -------------------------------------------------------------------------------------


def apply(state: NodeState, deltas: list[pb.BackendDelta]) -> NodeState:
    """What an agent does with a delta: upsert by id, remove ids (unknown ids ignored)."""
    result = {name: dict(clients) for name, clients in state.items()}
    for delta in deltas:
        clients = result.setdefault(delta.name, {})
        for client in delta.upsert:
            clients[client.id] = client
        for client_id in delta.remove:
            clients.pop(client_id, None)
    return result


def test_equal_states_have_no_delta() -> None:
    state = build_state(BACKENDS, [wg_row(1), vless_row(2)], NOW)
    again = build_state(BACKENDS, [vless_row(2), wg_row(1)], NOW)
    assert diff(state, again) == []
    assert diff({}, {}) == []
    assert diff({"wg0": {}}, {"wg0": {}}) == []


def test_additions_are_upserts() -> None:
    old = build_state(BACKENDS, [wg_row(1)], NOW)
    new = build_state(BACKENDS, [wg_row(1), wg_row(2), vless_row(3)], NOW)
    assert diff(old, new) == [
        pb.BackendDelta(name="wg0", upsert=[wg_client(2)]),
        pb.BackendDelta(name="xray", upsert=[new["xray"][vless_row(3).client_id]]),
    ]


def test_removals_are_listed_by_id() -> None:
    old = build_state(BACKENDS, [wg_row(1), wg_row(2), wg_row(3)], NOW)
    new = build_state(BACKENDS, [wg_row(1), wg_row(2, banned=True), wg_row(3)], NOW)
    assert diff(old, new) == [pb.BackendDelta(name="wg0", remove=[key(2)])]


def test_changed_clients_are_upserted() -> None:
    old = build_state(BACKENDS, [wg_row(1), wg_row(2)], NOW)
    new = build_state(BACKENDS, [wg_row(1), wg_row(2, preshared_key=key(77))], NOW)
    assert diff(old, new) == [pb.BackendDelta(name="wg0", upsert=[wg_client(2, psk=key(77))])]


def test_a_changed_address_is_upserted() -> None:
    old = build_state(BACKENDS, [wg_row(1)], NOW)
    new = build_state(BACKENDS, [wg_row(1, address="10.8.0.200")], NOW)
    assert diff(old, new) == [
        pb.BackendDelta(name="wg0", upsert=[wg_client(1, address="10.8.0.200")])
    ]


def test_removing_all_of_a_backends_clients() -> None:
    old = build_state(BACKENDS, [wg_row(1), wg_row(2), vless_row(3)], NOW)
    new = build_state(BACKENDS, [vless_row(3)], NOW)
    assert new["wg0"] == {}
    assert diff(old, new) == [pb.BackendDelta(name="wg0", remove=sorted([key(1), key(2)]))]


def test_a_backend_missing_on_one_side() -> None:
    # A backend that appears: all its clients are upserts; one that disappears: removals.
    clients = {key(1): wg_client(1), key(2): wg_client(2)}
    assert diff({}, {"wg0": clients}) == [
        pb.BackendDelta(name="wg0", upsert=[clients[c] for c in sorted(clients)])
    ]
    assert diff({"wg0": clients}, {}) == [pb.BackendDelta(name="wg0", remove=sorted(clients))]


def test_deltas_are_sorted_by_backend_and_client() -> None:
    old: NodeState = {"b": {}, "a": {}}
    new: NodeState = {
        "b": {key(3): wg_client(3), key(1): wg_client(1)},
        "a": {key(2): wg_client(2)},
    }
    deltas = diff(old, new)
    assert [d.name for d in deltas] == ["a", "b"]
    assert [c.id for c in deltas[1].upsert] == sorted([key(1), key(3)])


def test_applying_the_diff_gives_the_new_state() -> None:
    rng = random.Random(12)
    for _ in range(200):
        old_rows = _random_rows(rng)
        new_rows = _random_rows(rng)
        old = build_state(BACKENDS, old_rows, NOW)
        new = build_state(BACKENDS, new_rows, NOW)
        deltas = diff(old, new)
        assert apply(old, deltas) == new
        assert (deltas == []) == (old == new)
        # Nothing is re-sent that the agent already has.
        for delta in deltas:
            for client in delta.upsert:
                assert old[delta.name].get(client.id) != client


def _random_rows(rng: random.Random) -> list[ConfigRow]:
    rows: list[ConfigRow] = []
    for n in rng.sample(range(1, 16), rng.randint(0, 12)):
        make = wg_row if n % 3 else vless_row
        rows.append(
            make(
                n,
                banned=rng.random() < 0.15,
                config_active=rng.random() > 0.1,
                **({"preshared_key": key(rng.choice([1, 2]))} if make is wg_row else {}),
            )
        )
    return rows


def test_the_applier_in_this_test_can_tell_states_apart() -> None:
    # Guards the property test: a wrong delta does not yield the new state.
    old = build_state(BACKENDS, [wg_row(1)], NOW)
    new = build_state(BACKENDS, [wg_row(2)], NOW)
    assert apply(old, []) != new
    assert apply(old, [pb.BackendDelta(name="wg0", upsert=[wg_client(2)])]) != new
