"""The management client: ``status 3`` parsed from output captured from openvpn 2.6.14, and
the line protocol (greeting, notifications between reply lines, SUCCESS/ERROR/END, deadlines)
against a local server that speaks it as documented (management-notes.txt). The real openvpn
is driven in tests/e2e/test_openvpn_backend_e2e.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from node_agent.backends.openvpn.management import (
    ManagementClient,
    ManagementError,
    NotRunningError,
    Session,
    parse_status3,
)

# `status 3` of openvpn 2.6.14 with two clients, as read from its management socket (CRLF).
CAPTURED = (
    "TITLE\tOpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [PKCS11] "
    "[MH/PKTINFO] [AEAD] [DCO]\r\n"
    "TIME\t2026-11-26 12:02:44\t1795694564\r\n"
    "HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\tVirtual IPv6 Address\t"
    "Bytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\t"
    "Client ID\tPeer ID\tData Channel Cipher\r\n"
    "CLIENT_LIST\talice\t10.99.0.2:49435\t10.9.0.2\t\t2524\t2440\t2026-11-26 12:02:44\t"
    "1795694564\tUNDEF\t0\t0\tAES-256-GCM\r\n"
    "CLIENT_LIST\tbob.phone_2\t10.99.0.2:44598\t10.9.0.3\t\t2314\t2224\t2026-11-26 12:02:44\t"
    "1795694564\tUNDEF\t1\t1\tAES-256-GCM\r\n"
    "HEADER\tROUTING_TABLE\tVirtual Address\tCommon Name\tReal Address\tLast Ref\t"
    "Last Ref (time_t)\r\n"
    "ROUTING_TABLE\t10.9.0.2\talice\t10.99.0.2:49435\t2026-11-26 12:02:44\t1795694564\r\n"
    "ROUTING_TABLE\t10.9.0.3\tbob.phone_2\t10.99.0.2:44598\t2026-11-26 12:02:44\t1795694564\r\n"
    "GLOBAL_STATS\tMax bcast/mcast queue length\t0\r\n"
    "GLOBAL_STATS\tdco_enabled\t0\r\n"
    "END\r\n"
)
GREETING = ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n"
ALICE = Session("alice", "10.99.0.2:49435", "10.9.0.2", 2524, 2440, 1795694564, 0)
BOB = Session("bob.phone_2", "10.99.0.2:44598", "10.9.0.3", 2314, 2224, 1795694564, 1)


def test_status3_as_openvpn_2_6_prints_it() -> None:
    lines = CAPTURED.split("\r\n")[:-2]  # what the client hands over: the lines before END
    assert parse_status3(lines) == [ALICE, BOB]


def test_status3_columns_are_found_by_name() -> None:
    lines = [
        "HEADER\tCLIENT_LIST\tClient ID\tCommon Name\tBytes Sent\tBytes Received\t"
        "Connected Since (time_t)\tVirtual Address\tReal Address\tSomething New",
        "CLIENT_LIST\t7\tcarol\t20\t10\t1700000000\t10.9.0.9\t192.0.2.1:1194\tx",
    ]
    assert parse_status3(lines) == [
        Session("carol", "192.0.2.1:1194", "10.9.0.9", 10, 20, 1700000000, 7)
    ]


def test_no_clients_is_an_empty_list() -> None:
    lines = [line for line in CAPTURED.split("\r\n")[:-2] if not line.startswith("CLIENT_LIST")]
    assert parse_status3(lines) == []


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (["TITLE\tx", "GLOBAL_STATS\tdco_enabled\t0"], "no CLIENT_LIST header"),
        (["CLIENT_LIST\talice"], "before its HEADER"),
        (["HEADER\tCLIENT_LIST\tCommon Name"], "unexpected CLIENT_LIST header"),
        ([*CAPTURED.split("\r\n")[2:3], "CLIENT_LIST\talice\tx\ty\t\tlots"], "malformed"),
    ],
)
def test_broken_status_replies_are_errors(lines: list[str], error: str) -> None:
    with pytest.raises(ManagementError, match=error):
        parse_status3(lines)


class ManagementServer:
    """A management interface on a unix socket: greets, answers scripted replies and puts a
    notification between reply lines, like openvpn's real-time messages can arrive."""

    def __init__(self, path: Path, replies: Mapping[str, str]) -> None:
        self.path = path
        self.replies = dict(replies)
        self.received: list[str] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING.encode())
        while line := await reader.readline():
            command = line.decode().strip()
            self.received.append(command)
            reply = self.replies.get(command, "ERROR: unknown command, enter 'help'\r\n")
            head, sep, rest = reply.partition("\r\n")
            writer.write(f"{head}{sep}>BYTECOUNT_CLI:0,100,200\r\n{rest}".encode())
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> ManagementServer:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ManagementServer]:
    replies = {
        "status 3": CAPTURED,
        "pid": "SUCCESS: pid=4242\r\n",
        "state": "1795692749,CONNECTED,SUCCESS,10.9.0.1,,,,\r\nEND\r\n",
        "client-kill 0": "SUCCESS: client-kill command succeeded\r\n",
        "kill 10.99.0.2:49435": "SUCCESS: 1 client(s) at address 10.99.0.2:49435 killed\r\n",
        "client-kill 1": "ERROR: client-kill command failed\r\n",
    }
    async with ManagementServer(tmp_path / "m.sock", replies) as server:
        yield server


async def test_commands_and_replies(served: ManagementServer) -> None:
    client = ManagementClient(served.path, timeout=5)
    assert await client.sessions() == [ALICE, BOB]
    async with client.connect() as conn:
        assert await conn.pid() == 4242
        assert await conn.state() == "CONNECTED"
        with pytest.raises(ManagementError, match="bogus: unknown command"):
            await conn.command("bogus")
    assert await client.answers()


async def test_kill_tells_the_client_then_removes_the_session(served: ManagementServer) -> None:
    client = ManagementClient(served.path, timeout=5)
    async with client.connect() as conn:
        # bob's session is already gone (client-kill fails): no address kill for it.
        assert await conn.kill([ALICE, BOB]) == 1
    assert served.received == ["client-kill 0", "client-kill 1", "kill 10.99.0.2:49435"]


async def test_nothing_listening_is_not_running(tmp_path: Path) -> None:
    missing = ManagementClient(tmp_path / "none.sock", timeout=5)
    with pytest.raises(NotRunningError, match="not running"):
        await missing.sessions()
    # A socket file left behind by a killed openvpn.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(NotRunningError):
        await ManagementClient(tmp_path / "stale.sock", timeout=5).sessions()
    assert not await missing.answers()


async def test_an_interface_that_never_answers_times_out(tmp_path: Path) -> None:
    # openvpn serves one management client at a time: the next one waits unanswered.
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_unix_server(hold, path=str(tmp_path / "busy.sock"))
    try:
        client = ManagementClient(tmp_path / "busy.sock", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ManagementError, match=r"no answer within 0\.3 s"):
            await client.sessions()
        assert time.monotonic() - started < 3
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_closed_mid_reply_is_an_error(tmp_path: Path) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING.encode() + b"TITLE\tx\r\n")
        await reader.readline()
        writer.close()

    server = await asyncio.start_unix_server(hang_up, path=str(tmp_path / "h.sock"))
    try:
        with pytest.raises(ManagementError, match="closed the connection"):
            await ManagementClient(tmp_path / "h.sock", timeout=5).sessions()
    finally:
        server.close()
        await server.wait_closed()
