"""VLESS user validation and the core email each user gets (no core needed)."""

from __future__ import annotations

import uuid

import pytest

from node_agent.backends.xray.users import VISION, UserIndex, core_email, uuid_key
from node_agent.errors import InvalidStateError
from node_agent.model import Client, OpenVpnClient, VlessUser

U1, U2, U3 = (str(uuid.UUID(int=n, version=4)) for n in (1, 2, 3))


def vless(client_id: str, user_uuid: str, *, flow: str = "", email: str = "") -> Client:
    return Client(client_id, VlessUser(uuid=user_uuid, flow=flow, email=email))


def build(*clients: Client, reality: bool = True) -> UserIndex:
    return UserIndex.build("vless", clients, allow_vision=reality)


def test_a_valid_set_is_indexed_by_client_and_core_email() -> None:
    index = build(vless("a", U1, email="config-1", flow=VISION), vless("b", U2))
    users = index.users()
    assert {u.uuid for u in users.values()} == {U1, U2}
    a = index.entries["a"].user
    assert a.email.startswith("config-1.") and a.flow == VISION
    assert index.email_owner[a.email] == "a"


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (vless("", U1), "client id"),
        (vless("a" * 129, U1), "client id"),
        (vless("a", "not-a-uuid"), "is not a UUID"),
        (vless("a", U1.replace("-", "")), "is not a UUID"),
        (vless("a", U1, flow="xtls-rprx-direct"), "flow 'xtls-rprx-direct' is not supported"),
        (vless("a", U1, email="has space"), "email 'has space'"),
        (vless("a", U1, email="a>>>b"), "email 'a>>>b'"),
        (vless("a", U1, email="x" * 65), "email"),
        (Client("a", OpenVpnClient("cn")), "VLESS users only"),
    ],
)
def test_bad_users_are_refused(client: Client, message: str) -> None:
    with pytest.raises(InvalidStateError, match=message):
        build(client)


def test_vision_needs_reality() -> None:
    build(vless("a", U1, flow=VISION), reality=True)
    with pytest.raises(InvalidStateError, match="needs a Reality inbound"):
        build(vless("a", U1, flow=VISION), reality=False)


def test_duplicates_are_refused() -> None:
    with pytest.raises(InvalidStateError, match="duplicate client id 'a'"):
        build(vless("a", U1), vless("a", U2))
    with pytest.raises(InvalidStateError, match=f"uuid {U1} is already used by client 'a'"):
        build(vless("a", U1), vless("b", U1))
    with pytest.raises(InvalidStateError, match=r"uuid .* already used"):
        build(vless("a", U1), vless("b", U1.upper()))  # the same UUID, another spelling
    with pytest.raises(InvalidStateError, match="email 'Config-1' is already used by client 'a'"):
        build(vless("a", U1, email="config-1"), vless("b", U2, email="Config-1"))


def test_uuids_the_core_cannot_tell_apart_are_duplicates() -> None:
    # Xray and v2ray zero bytes 6 and 7 of a UUID before indexing users by it.
    raw = bytearray(uuid.UUID(U1).bytes)
    raw[6] ^= 0x0F
    twin = str(uuid.UUID(bytes=bytes(raw)))
    assert twin != U1 and uuid_key(twin) == uuid_key(U1)
    with pytest.raises(InvalidStateError, match="already used"):
        build(vless("a", U1), vless("b", twin))


def test_uppercase_uuids_are_stored_canonically() -> None:
    index = build(vless("a", U1.upper()))
    assert index.entries["a"].user.uuid == U1


def test_the_core_email() -> None:
    email = core_email("a", "config-1", U1, "")
    assert email == core_email("a", "config-1", U1, "")  # stable
    label, _, digest = email.rpartition(".")
    assert label == "config-1" and len(digest) == 12
    # Any change of who or what the user is makes another core user (a fresh counter).
    assert core_email("b", "config-1", U1, "") != email
    assert core_email("a", "config-1", U2, "") != email
    assert core_email("a", "config-1", U1, VISION) != email
    # Without an email: the client id when it is a plain name, else "client".
    assert core_email(U1, "", U1, "").startswith(f"{U1}.")
    assert core_email("odd id>>>x", "", U1, "").startswith("client.")


def test_changes_are_checked_against_the_index() -> None:
    index = build(vless("a", U1, email="config-1"), vless("b", U2))
    index.check_changes([vless("c", U3)], [])
    # A UUID or email may move from a client that leaves in the same change.
    index.check_changes([vless("c", U1, email="config-1")], ["a"])
    index.check_changes([vless("a", U3, email="config-1")], [])  # replacing its own user
    with pytest.raises(InvalidStateError, match="already used by client 'a'"):
        index.check_changes([vless("c", U1)], [])
    with pytest.raises(InvalidStateError, match="email 'CONFIG-1' is already used"):
        index.check_changes([vless("c", U3, email="CONFIG-1")], [])
    with pytest.raises(InvalidStateError, match="already used by client 'c'"):
        index.check_changes([vless("c", U3), vless("d", U3)], [])  # a clash among upserts
    with pytest.raises(InvalidStateError, match="is not a UUID"):
        index.check_changes([vless("c", "nope")], [])


def test_apply_changes_and_copy() -> None:
    index = build(vless("a", U1), vless("b", U2))
    before = index.copy()
    index.apply_changes([vless("c", U1)], ["a"])
    assert set(index.entries) == {"b", "c"}
    assert index.uuid_owner[uuid_key(U1)] == "c"
    assert set(before.entries) == {"a", "b"}  # the copy is independent
    assert before.uuid_owner[uuid_key(U1)] == "a"
