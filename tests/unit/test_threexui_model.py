"""The 3X-UI adapter's pure parts: desired-state validation, inbound JSON of both panel
generations, Reality parameters, the TOTP the panel checks."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from node_agent.backends.base import RealityPublicParams
from node_agent.backends.threexui.backend import ThreeXuiBackend
from node_agent.backends.threexui.inbound import parse_inbound, reality_params
from node_agent.backends.threexui.session import PanelError, totp
from node_agent.config import ThreeXuiConfig
from node_agent.errors import InvalidStateError
from node_agent.model import Client, OpenVpnClient, VlessUser
from tests.threexui_fake import reality_stream, totp_code

VISION = "xtls-rprx-vision"


def user_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def vless(client_id: str, n: int, flow: str = VISION, email: str | None = None) -> Client:
    return Client(client_id, VlessUser(user_id(n), flow, f"config-{n}" if email is None else email))


@pytest.fixture
def backend(tmp_path: Path) -> ThreeXuiBackend:
    spec = ThreeXuiConfig(
        type="threexui", url="http://127.0.0.1:1/", username="a", password="b", inbound_id=1
    )
    return ThreeXuiBackend("xui", spec, tmp_path)


# --- validation ----------------------------------------------------------------------------


def test_valid_users_pass_and_the_panel_email_is_prefix_plus_email(
    backend: ThreeXuiBackend,
) -> None:
    clients = [vless("a", 1), vless("b", 2, flow=""), vless("c", 3, email="")]

    backend.validate(clients)

    assert [backend.email_of(c) for c in clients] == [
        "vpnbot-config-1",
        "vpnbot-config-2",
        "vpnbot-c",
    ]


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ([Client("a", OpenVpnClient("cn"))], "VLESS users only"),
        ([Client("a", VlessUser("not-a-uuid"))], "is not a UUID"),
        ([Client("a", VlessUser(user_id(0xABCDEF).upper()))], f"as {user_id(0xABCDEF)}"),
        ([vless("a", 1, flow="xtls-rprx-direct")], "flow 'xtls-rprx-direct' is not one of"),
        ([vless("a", 1, email="bob smith")], "may not contain ' '"),
        ([vless("a", 1, email="a/b")], "may not contain '/'"),
        (
            [vless("a", 1, email="X"), vless("b", 2, email="x")],
            "is also 'a''s",
        ),  # the panel ignores case
        ([vless("a", 1), Client("b", VlessUser(user_id(1), "", "other"))], "UUID"),
        ([vless("a", 1), vless("a", 2)], "duplicate client id"),
        ([vless("", 1)], "client id ''"),
    ],
)
def test_bad_desired_states_are_refused_with_the_reason(
    backend: ThreeXuiBackend, clients: list[Client], message: str
) -> None:
    with pytest.raises(InvalidStateError) as info:
        backend.validate(clients)
    assert message in str(info.value)


def test_changes_are_validated_against_the_last_applied_clients(backend: ThreeXuiBackend) -> None:
    backend._desired = {"a": vless("a", 1)}  # what the last apply left

    backend.validate_changes([vless("b", 2)], [])
    backend.validate_changes([vless("b", 1, email="b")], ["a"])  # the UUID is free once "a" goes
    with pytest.raises(InvalidStateError, match="UUID"):
        backend.validate_changes([vless("b", 1, email="b")], [])
    with pytest.raises(InvalidStateError, match="duplicate client id"):
        backend.validate_changes([vless("b", 2), vless("b", 3)], [])


# --- inbound JSON --------------------------------------------------------------------------


def inbound(settings: object, stream: object, port: int = 443) -> dict[str, object]:
    return {
        "id": 7,
        "port": port,
        "protocol": "vless",
        "enable": True,
        "settings": settings,
        "streamSettings": stream,
    }


def test_settings_as_strings_and_as_objects_read_the_same() -> None:
    settings = {"clients": [{"id": user_id(1), "email": "e", "flow": VISION}], "decryption": "none"}
    stream = reality_stream("PUB")

    older = parse_inbound(inbound(json.dumps(settings, indent=2), json.dumps(stream)), 7, "read")
    newer = parse_inbound(inbound(settings, stream), 7, "read")

    assert older == newer
    assert older.clients[0]["email"] == "e"
    assert older.port == 443


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("html", "is not an object"),
        (inbound("{not json", {}), "settings is not valid JSON"),
        (inbound("[1]", {}), "settings is not a JSON object"),
        (inbound({"clients": "x"}, {}), "settings.clients is not a list"),
        (inbound({}, {}, port="x"), "port is not a number"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_inbound_is_a_panel_error(obj: object, message: str) -> None:
    with pytest.raises(PanelError, match=message):
        parse_inbound(obj, 7, "read inbound 7")


def test_reality_parameters_come_from_stream_settings() -> None:
    stream = reality_stream(
        "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw",
        short_ids=["6ba85179e30d4fc2", ""],
        server_names=["www.example.com", ""],
        fingerprint="firefox",
    )

    params = reality_params(parse_inbound(inbound({}, stream, port=8443), 7, "read"))

    assert params == RealityPublicParams(
        port=8443,
        public_key="Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw",
        short_ids=("6ba85179e30d4fc2", ""),  # an empty short id is valid in Xray
        server_names=("www.example.com",),
        flow=VISION,
        fingerprint="firefox",
    )


def test_no_reality_parameters_without_reality_or_its_public_key() -> None:
    tls = {"network": "tcp", "security": "tls", "tlsSettings": {}}
    no_key = reality_stream("")
    grpc = reality_stream("PUB", network="grpc")

    assert reality_params(parse_inbound(inbound({}, tls), 7, "read")) is None
    assert reality_params(parse_inbound(inbound({}, no_key), 7, "read")) is None
    grpc_params = reality_params(parse_inbound(inbound({}, grpc), 7, "read"))
    assert grpc_params is not None and grpc_params.flow == ""  # Vision needs raw TCP


# --- TOTP ----------------------------------------------------------------------------------


def test_totp_matches_rfc_6238_and_an_independent_implementation() -> None:
    rfc_secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of "12345678901234567890"
    assert totp(rfc_secret, now=59) == "287082"  # RFC 6238 appendix B (SHA-1), 6 digits
    assert totp(rfc_secret, now=1111111109) == "081804"
    for now in (0, 29, 30, 1_700_000_000):
        assert totp("JBSWY3DPEHPK3PXP", now=now) == totp_code("JBSWY3DPEHPK3PXP", now)
