"""The Xray API client: our mirror messages carry the upstream field numbers, and the client
speaks to a real core (v2ray 4.34, prefix ``v2ray.core.``) on loopback."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from node_agent.backends.xray import xray_config
from node_agent.backends.xray.api import (
    XrayApi,
    XrayApiError,
    XrayUnavailable,
    encode_add_vless_user,
    encode_remove_user,
    parse_user_traffic,
)
from node_agent.backends.xray.users import CoreUser
from proto.xrayapi import xray_api_pb2 as pb
from tests.conftest import need

UUID = "0b4a3a3e-9a57-4b57-9c38-7d3b0a7c3e11"
TAG = "vless-in"

# --- the wire format, decoded by hand -------------------------------------------------------


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints as int, the rest as bytes."""
    out: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 2:
            length = varint()
            out.append((number, data[i : i + length]))
            i += length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def as_dict(data: bytes | int) -> dict[int, int | bytes]:
    assert isinstance(data, bytes)
    return dict(fields(data))


@pytest.mark.parametrize("prefix", ["xray.", "v2ray.core."])
def test_add_user_request_has_the_upstream_field_numbers(prefix: str) -> None:
    request = encode_add_vless_user(
        prefix, TAG, email="config-1.abc", uuid=UUID, flow="xtls-rprx-vision", level=0
    )
    # AlterInboundRequest: tag = 1, operation (TypedMessage) = 2
    alter = as_dict(request.SerializeToString())
    assert alter[1] == TAG.encode()
    operation = as_dict(alter[2])
    # TypedMessage: type = 1, value = 2
    assert operation[1] == f"{prefix}app.proxyman.command.AddUserOperation".encode()
    # AddUserOperation: user = 1
    add = as_dict(operation[2])
    # User: level = 1 (0 is not sent), email = 2, account = 3
    user = as_dict(add[1])
    assert 1 not in user
    assert user[2] == b"config-1.abc"
    account = as_dict(user[3])
    assert account[1] == f"{prefix}proxy.vless.Account".encode()
    # vless.Account: id = 1, flow = 2
    assert as_dict(account[2]) == {1: UUID.encode(), 2: b"xtls-rprx-vision"}


def test_a_level_is_field_one_of_user() -> None:
    request = encode_add_vless_user("xray.", TAG, email="e", uuid=UUID, level=3)
    user = as_dict(as_dict(as_dict(as_dict(request.SerializeToString())[2])[2])[1])
    assert user[1] == 3


def test_remove_user_request() -> None:
    alter = as_dict(encode_remove_user("xray.", TAG, "config-1.abc").SerializeToString())
    operation = as_dict(alter[2])
    assert operation[1] == b"xray.app.proxyman.command.RemoveUserOperation"
    assert as_dict(operation[2]) == {1: b"config-1.abc"}  # RemoveUserOperation: email = 1


def test_stats_messages() -> None:
    assert fields(pb.QueryStatsRequest(pattern="user>>>", reset=True).SerializeToString()) == [
        (1, b"user>>>"),
        (2, 1),
    ]
    # QueryStatsResponse: stat = 1, a Stat of name = 1 ("a>>>b") and value = 2 (42)
    answer = pb.QueryStatsResponse.FromString(b"\x0a\x09\x0a\x05a>>>b\x10\x2a")
    assert [(s.name, s.value) for s in answer.stat] == [("a>>>b", 42)]
    assert pb.SysStatsResponse.FromString(bytes([0x50, 0x07])).Uptime == 7  # Uptime = 10


# Xray-core's own .proto files (XTLS/Xray-core: common/serial/typed_message.proto,
# common/protocol/user.proto, proxy/vless/account.proto, app/proxyman/command/command.proto,
# app/stats/command/command.proto): message -> {field: (number, type)} for what we mirror.
XRAY = {
    "TypedMessage": ("common.serial.TypedMessage", {"type": 1, "value": 2}),
    "User": ("common.protocol.User", {"level": 1, "email": 2, "account": 3}),
    "VlessAccount": ("proxy.vless.Account", {"id": 1, "flow": 2, "encryption": 3}),
    "AddUserOperation": ("app.proxyman.command.AddUserOperation", {"user": 1}),
    "RemoveUserOperation": ("app.proxyman.command.RemoveUserOperation", {"email": 1}),
    "AlterInboundRequest": ("app.proxyman.command.AlterInboundRequest", {"tag": 1, "operation": 2}),
    "AlterInboundResponse": ("app.proxyman.command.AlterInboundResponse", {}),
    "GetStatsRequest": ("app.stats.command.GetStatsRequest", {"name": 1, "reset": 2}),
    "Stat": ("app.stats.command.Stat", {"name": 1, "value": 2}),
    "GetStatsResponse": ("app.stats.command.GetStatsResponse", {"stat": 1}),
    "QueryStatsRequest": ("app.stats.command.QueryStatsRequest", {"pattern": 1, "reset": 2}),
    "QueryStatsResponse": ("app.stats.command.QueryStatsResponse", {"stat": 1}),
    "SysStatsRequest": ("app.stats.command.SysStatsRequest", {}),
    "SysStatsResponse": (
        "app.stats.command.SysStatsResponse",
        {
            "NumGoroutine": 1,
            "NumGC": 2,
            "Alloc": 3,
            "TotalAlloc": 4,
            "Sys": 5,
            "Mallocs": 6,
            "Frees": 7,
            "LiveObjects": 8,
            "PauseTotalNs": 9,
            "Uptime": 10,
        },
    ),
}


def test_every_mirrored_message_matches_xray_core() -> None:
    ours = {m.name: m for m in pb.DESCRIPTOR.message_types_by_name.values()}
    assert set(ours) == set(XRAY)
    for name, (_, numbers) in XRAY.items():
        assert {f.name: f.number for f in ours[name].fields} == numbers, name


def _v2ray_descriptors(binary: Path) -> dict[str, descriptor_pb2.DescriptorProto]:
    """The message descriptors compiled into a v2ray binary (gzipped FileDescriptorProtos, as
    golang/protobuf registers them), by full name."""
    data = binary.read_bytes()
    found: dict[str, descriptor_pb2.DescriptorProto] = {}
    for match in re.finditer(b"\x1f\x8b\x08", data):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(
                data[match.start() : match.start() + (1 << 20)]
            )
            descriptor = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except (zlib.error, DecodeError):  # not a descriptor
            continue
        for message in descriptor.message_type:
            found[f"{descriptor.package}.{message.name}"] = message
    return found


def test_every_mirrored_message_matches_the_v2ray_binary_here() -> None:
    binary = shutil.which("v2ray")
    need(binary is not None, "v2ray is not installed (apt-get install v2ray)")
    assert binary is not None
    theirs = _v2ray_descriptors(Path(binary))
    ours = pb.DESCRIPTOR.message_types_by_name
    for name, (upstream, _) in XRAY.items():
        message = theirs.get(f"v2ray.core.{upstream}")
        assert message is not None, f"v2ray.core.{upstream} is not in {binary}"
        mine = descriptor_pb2.DescriptorProto()
        ours[name].CopyToProto(mine)
        assert {(f.name, f.number, f.type, f.label) for f in mine.field} == {
            (f.name, f.number, f.type, f.label) for f in message.field
        }, name


def test_user_traffic_is_parsed_per_email() -> None:
    answer = pb.QueryStatsResponse(
        stat=[
            pb.Stat(name="user>>>a.1>>>traffic>>>uplink", value=10),
            pb.Stat(name="user>>>a.1>>>traffic>>>downlink", value=200),
            pb.Stat(name="user>>>b@x>>>traffic>>>downlink", value=5),
            pb.Stat(name="inbound>>>api>>>traffic>>>uplink", value=99),
        ]
    )
    traffic = parse_user_traffic(answer)
    assert {e: (t.uplink, t.downlink) for e, t in traffic.items()} == {
        "a.1": (10, 200),
        "b@x": (0, 5),
    }


def test_method_paths_carry_the_prefix() -> None:
    assert (
        XrayApi("127.0.0.1:1", "xray.").method("app.stats.command.StatsService", "QueryStats")
        == "/xray.app.stats.command.StatsService/QueryStats"
    )
    assert (
        XrayApi("127.0.0.1:1", "v2ray.core.").method(
            "app.proxyman.command.HandlerService", "AlterInbound"
        )
        == "/v2ray.core.app.proxyman.command.HandlerService/AlterInbound"
    )
    with pytest.raises(ValueError, match="prefix"):
        XrayApi("127.0.0.1:1", "v2fly.")  # type: ignore[arg-type]


# --- against a real v2ray ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def v2ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A v2ray core on loopback with one VLESS inbound and the API; yields the API target."""
    need(shutil.which("v2ray") is not None, "v2ray is not installed (apt-get install v2ray)")
    directory = tmp_path_factory.mktemp("v2ray")
    api_port, port = free_port(), free_port()
    settings = xray_config.CoreSettings("127.0.0.1", api_port, TAG, "127.0.0.1", port, None)
    config = directory / "config.json"
    xray_config.write(config, settings, [CoreUser("known.1", UUID, "")])
    with (directory / "v2ray.log").open("wb") as log:
        process = subprocess.Popen(
            ["v2ray", "-config", str(config)], stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", api_port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (directory / "v2ray.log").read_text()
                assert time.monotonic() < deadline, "v2ray's API never opened"
                time.sleep(0.05)
        yield f"127.0.0.1:{api_port}"
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
async def api(v2ray: str) -> AsyncIterator[XrayApi]:
    client = XrayApi(v2ray, "v2ray.core.", timeout=5)
    try:
        yield client
    finally:
        await client.close()


async def test_add_and_remove_are_idempotent(api: XrayApi) -> None:
    email, user_uuid = f"u.{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    assert await api.add_vless_user(TAG, email=email, uuid=user_uuid) is True
    assert await api.add_vless_user(TAG, email=email, uuid=user_uuid) is False  # exists
    assert await api.remove_user(TAG, email) is True
    assert await api.remove_user(TAG, email) is False  # not found
    # A user from the config file is there too.
    assert await api.add_vless_user(TAG, email="known.1", uuid=UUID) is False


async def test_a_missing_inbound_is_an_error_not_a_missing_user(api: XrayApi) -> None:
    with pytest.raises(XrayApiError, match="handler not found") as removing:
        await api.remove_user("no-such-inbound", "x.1")
    assert not isinstance(removing.value, XrayUnavailable)
    with pytest.raises(XrayApiError, match="handler not found"):
        await api.add_vless_user("no-such-inbound", email="x.1", uuid=UUID)


async def test_a_bad_uuid_is_refused_with_the_cores_reason(api: XrayApi) -> None:
    with pytest.raises(XrayApiError, match="invalid UUID"):
        await api.add_vless_user(TAG, email="bad.1", uuid="not-a-uuid")


async def test_the_wrong_prefix_says_so(v2ray: str) -> None:
    client = XrayApi(v2ray, "xray.", timeout=5)
    try:
        with pytest.raises(XrayApiError, match=r"prefix 'xray\.'") as error:
            await client.sys_stats()
        assert not isinstance(error.value, XrayUnavailable)
    finally:
        await client.close()


async def test_stats_and_uptime(api: XrayApi) -> None:
    stats = await api.sys_stats()
    assert stats.uptime >= 0 and stats.goroutines > 0
    assert await api.user_traffic() == {}  # no traffic yet: no user counters


async def test_an_absent_core_is_unavailable_within_the_timeout() -> None:
    client = XrayApi(f"127.0.0.1:{free_port()}", "v2ray.core.", timeout=1)
    try:
        started = time.monotonic()
        with pytest.raises(XrayUnavailable, match="did not answer"):
            await client.sys_stats()
        assert time.monotonic() - started < 5
    finally:
        await client.close()
