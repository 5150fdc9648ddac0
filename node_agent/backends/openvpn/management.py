"""A client of OpenVPN's management interface on a unix socket.

The protocol is line based (CRLF). On connect the server greets with ``>INFO:...``; lines
starting with ``>`` are notifications and may arrive at any time, so they are skipped. A
command answers with one ``SUCCESS: ...`` or ``ERROR: ...`` line, or with several lines ended
by ``END`` (``status``, ``state``).

OpenVPN serves **one** management client at a time: a second connection waits in the listen
backlog, unanswered, until the first one closes. So every operation opens a connection, does
its work and closes it at once; our own operations are serialised by a lock, and everything
has a deadline (someone else holding the interface must not hang the agent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT = 5.0
KILL_GRACE = 0.3  # seconds for openvpn to send queued RESTART messages before a hard kill
_LIMIT = 2**24  # `status 3` with thousands of clients is a few MB


class ManagementError(Exception):
    """The management interface is not there, did not answer, or refused a command."""


class NotRunningError(ManagementError):
    """Nothing listens on the socket: openvpn is not running (so no client is connected)."""


@dataclass(frozen=True, slots=True)
class Session:
    """One connected client, as a CLIENT_LIST row of ``status 3`` shows it."""

    common_name: str
    real_address: str
    virtual_address: str
    bytes_received: int  # by the server from the client
    bytes_sent: int  # by the server to the client
    connected_since: int  # unix time
    client_id: int


_COLUMNS = {
    "common_name": "Common Name",
    "real_address": "Real Address",
    "virtual_address": "Virtual Address",
    "bytes_received": "Bytes Received",
    "bytes_sent": "Bytes Sent",
    "connected_since": "Connected Since (time_t)",
    "client_id": "Client ID",
}


def parse_status3(lines: Sequence[str]) -> list[Session]:
    """Sessions from the lines of a ``status 3`` reply (tab separated).

    Columns are found by the names in the ``HEADER CLIENT_LIST`` line, so versions that add
    or move columns still parse; a reply without that header is an error.
    """
    index: dict[str, int] | None = None
    sessions: list[Session] = []
    for line in lines:
        fields = line.rstrip("\r\n").split("\t")
        if fields[:2] == ["HEADER", "CLIENT_LIST"]:
            names = fields[1:]  # rows carry CLIENT_LIST in field 0, like the header's field 1
            try:
                index = {key: names.index(title) for key, title in _COLUMNS.items()}
            except ValueError as exc:
                raise ManagementError(f"unexpected CLIENT_LIST header: {exc}") from None
        elif fields[0] == "CLIENT_LIST":
            if index is None:
                raise ManagementError("CLIENT_LIST row before its HEADER line")
            try:
                sessions.append(
                    Session(
                        common_name=fields[index["common_name"]],
                        real_address=fields[index["real_address"]],
                        virtual_address=fields[index["virtual_address"]],
                        bytes_received=int(fields[index["bytes_received"]]),
                        bytes_sent=int(fields[index["bytes_sent"]]),
                        connected_since=int(fields[index["connected_since"]]),
                        client_id=int(fields[index["client_id"]]),
                    )
                )
            except (IndexError, ValueError):
                raise ManagementError(f"malformed CLIENT_LIST row {line!r}") from None
    if index is None:
        raise ManagementError("no CLIENT_LIST header in the status reply")
    return sessions


class ManagementConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def _line(self) -> str:
        raw = await self._reader.readline()
        if not raw.endswith(b"\n"):
            raise ManagementError("the management interface closed the connection")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    async def command(self, command: str) -> list[str]:
        """Send one command; return its reply lines (``SUCCESS:``/``ERROR:`` alone, or the
        lines before ``END``). ERROR becomes ManagementError."""
        if "\n" in command or "\r" in command:
            raise ValueError("one command per line")
        self._writer.write(command.encode() + b"\n")
        await self._writer.drain()
        lines: list[str] = []
        while True:
            line = await self._line()
            if line.startswith(">"):
                continue  # a notification, not part of the reply
            if not lines and line.startswith("SUCCESS:"):
                return [line]
            if not lines and line.startswith("ERROR:"):
                raise ManagementError(f"{command.split()[0]}: {line[6:].strip()}")
            if line == "END":
                return lines
            lines.append(line)

    async def sessions(self) -> list[Session]:
        return parse_status3(await self.command("status 3"))

    async def kill(self, sessions: Sequence[Session]) -> int:
        """End these sessions now; return how many were still there.

        ``client-kill`` queues a RESTART message to the client (which reconnects, and is
        refused if revoked) and keeps the session 5 more seconds; ``kill ADDRESS`` removes it
        at once. Killed by address too early, the queued message never leaves and the client
        only notices at its ping-restart, so the address kill waits ``KILL_GRACE`` for the
        messages to go out.
        """
        killed: list[Session] = []
        for session in sessions:
            try:
                await self.command(f"client-kill {int(session.client_id)}")
            except ManagementError:
                continue  # already gone
            killed.append(session)
        if killed:
            await asyncio.sleep(KILL_GRACE)
        for session in killed:
            # Gone meanwhile, or an address form `kill` does not take: then it goes in 5 s.
            with contextlib.suppress(ManagementError):
                await self.command(f"kill {session.real_address}")
        return len(killed)

    async def pid(self) -> int:
        reply = (await self.command("pid"))[0]
        _, _, value = reply.partition("pid=")
        try:
            return int(value.strip())
        except ValueError:
            raise ManagementError(f"unexpected pid reply {reply!r}") from None

    async def state(self) -> str:
        """The daemon's state name, e.g. CONNECTED once a server finished initialising."""
        for line in await self.command("state"):
            fields = line.split(",")
            if len(fields) > 1:
                return fields[1]
        raise ManagementError("empty state reply")


class ManagementClient:
    def __init__(self, path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[ManagementConnection]:
        """A connection for a few commands, all within ``timeout`` seconds."""
        async with self._lock:
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_unix_connection(self.path, limit=_LIMIT)
                    yield ManagementConnection(reader, writer)
            except TimeoutError:
                raise ManagementError(
                    f"{self.path}: no answer within {self.timeout:g} s (another management "
                    "client connected, or openvpn is stuck)"
                ) from None
            except (FileNotFoundError, ConnectionRefusedError):
                raise NotRunningError(f"{self.path}: openvpn is not running") from None
            except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
                raise ManagementError(f"{self.path}: {exc}") from None
            finally:
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

    async def sessions(self) -> list[Session]:
        async with self.connect() as conn:
            return await conn.sessions()

    async def answers(self) -> bool:
        """True when openvpn answers on the socket (finished initialising or not)."""
        try:
            async with self.connect() as conn:
                await conn.pid()
        except ManagementError:
            return False
        return True
