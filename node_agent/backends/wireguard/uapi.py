"""The userspace driver: speaks the WireGuard cross-platform configuration protocol (UAPI)
over ``/var/run/wireguard/<ifname>.sock`` to wireguard-go or any other implementation.

Keys are hex on the UAPI (base64 in our interface). A ``set`` is not atomic: lines before a
bad one stay applied, so the backend validates everything before calling ``set``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Sequence
from pathlib import Path

from common.proc import CommandError, run_command
from node_agent.backends.wireguard.driver import (
    DeviceState,
    DriverError,
    PeerBuilder,
    PeerChange,
    PeerState,
)

DEFAULT_SOCKET_DIR = Path("/var/run/wireguard")
_ZERO_KEY = "0" * 64
_IO_TIMEOUT = 10.0


def b64_to_hex(key: str) -> str:
    return base64.b64decode(key).hex()


def hex_to_b64(key: str) -> str:
    return base64.b64encode(bytes.fromhex(key)).decode()


def parse_get(text: str) -> DeviceState:
    """Parse a ``get=1`` reply (without its errno line) into a DeviceState."""
    private_key: str | None = None
    listen_port = 0
    peers: dict[str, PeerState] = {}
    peer: PeerBuilder | None = None
    try:
        for line in text.splitlines():
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise DriverError(f"malformed UAPI line {line!r}")
            if key == "public_key":
                if peer is not None:
                    peers[peer.public_key] = peer.build()
                peer = PeerBuilder(hex_to_b64(value))
            elif peer is None:
                if key == "private_key":
                    private_key = None if value == _ZERO_KEY else hex_to_b64(value)
                elif key == "listen_port":
                    listen_port = int(value)
            elif key == "preshared_key":
                peer.preshared_key = None if value == _ZERO_KEY else hex_to_b64(value)
            elif key == "allowed_ip":
                peer.allowed_ips.append(value)
            elif key == "persistent_keepalive_interval":
                peer.persistent_keepalive = int(value)
            elif key == "endpoint":
                peer.endpoint = value
            elif key == "last_handshake_time_sec":
                peer.last_handshake = int(value)
            elif key == "rx_bytes":
                peer.rx_bytes = int(value)
            elif key == "tx_bytes":
                peer.tx_bytes = int(value)
    except ValueError as exc:
        raise DriverError(f"malformed UAPI reply: {exc}") from None
    if peer is not None:
        peers[peer.public_key] = peer.build()
    return DeviceState(private_key=private_key, listen_port=listen_port, peers=peers)


def format_set(
    *,
    private_key: str | None = None,
    listen_port: int | None = None,
    peers: Sequence[PeerChange] = (),
) -> bytes:
    """The ``set=1`` request for these changes."""
    lines = ["set=1"]
    if private_key is not None:
        lines.append(f"private_key={b64_to_hex(private_key)}")
    if listen_port is not None:
        lines.append(f"listen_port={listen_port}")
    for peer in peers:
        lines.append(f"public_key={b64_to_hex(peer.public_key)}")
        if peer.remove:
            lines.append("remove=true")
            continue
        if peer.update_only:
            lines.append("update_only=true")
        if peer.preshared_key is not None:
            psk = b64_to_hex(peer.preshared_key) if peer.preshared_key else _ZERO_KEY
            lines.append(f"preshared_key={psk}")
        if peer.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        if peer.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            lines.extend(f"allowed_ip={ip}" for ip in peer.allowed_ips)
    return ("\n".join(lines) + "\n\n").encode()


class UapiDriver:
    name = "uapi"

    def __init__(
        self,
        *,
        socket_dir: Path = DEFAULT_SOCKET_DIR,
        wireguard_go: str = "wireguard-go",
        start_timeout: float = 10.0,
    ) -> None:
        self.socket_dir = socket_dir
        self.wireguard_go = wireguard_go
        self.start_timeout = start_timeout

    def socket_path(self, ifname: str) -> Path:
        return self.socket_dir / f"{ifname}.sock"

    async def exists(self, ifname: str) -> bool:
        try:
            _, writer = await asyncio.open_unix_connection(self.socket_path(ifname))
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def ensure_device(self, ifname: str) -> bool:
        if await self.exists(ifname):
            return False
        try:
            # wireguard-go daemonizes: the device outlives the agent, so an agent restart or
            # upgrade drops no client. A session of its own keeps it out of the agent's
            # process group (Ctrl+C, a group kill); a bare environment keeps LOG_LEVEL away,
            # which would hand the daemon our pipes and make this call wait for it.
            result = await run_command(
                [self.wireguard_go, ifname],
                timeout=self.start_timeout,
                env={"PATH": os.environ.get("PATH", os.defpath)},
                inherit_env=False,
                new_session=True,
            )
        except CommandError as exc:
            raise DriverError(f"could not start wireguard-go for {ifname}: {exc}") from None
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise DriverError(f"wireguard-go {ifname} failed: {detail or result.returncode}")
        deadline = time.monotonic() + self.start_timeout
        while not await self.exists(ifname):
            if time.monotonic() > deadline:
                raise DriverError(
                    f"wireguard-go started but {self.socket_path(ifname)} never opened"
                )
            await asyncio.sleep(0.02)
        return True

    async def get(self, ifname: str) -> DeviceState:
        return parse_get(await self._request(ifname, b"get=1\n\n"))

    async def set(
        self,
        ifname: str,
        *,
        private_key: str | None = None,
        listen_port: int | None = None,
        peers: Sequence[PeerChange] = (),
    ) -> None:
        if private_key is None and listen_port is None and not peers:
            return
        await self._request(
            ifname, format_set(private_key=private_key, listen_port=listen_port, peers=peers)
        )

    async def delete_device(self, ifname: str) -> None:
        from node_agent.backends.wireguard.link import delete_link

        # wireguard-go exits when its tun device goes away.
        await asyncio.to_thread(delete_link, ifname)

    async def _request(self, ifname: str, payload: bytes) -> str:
        path = self.socket_path(ifname)
        try:
            async with asyncio.timeout(_IO_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(path, limit=2**20)
                try:
                    writer.write(payload)
                    await writer.drain()
                    chunks: list[bytes] = []
                    while True:
                        line = await reader.readline()
                        if not line:
                            raise DriverError(f"{path}: connection closed mid-reply")
                        if line.startswith(b"errno="):
                            errno = int(line[6:].strip() or b"0")
                            break
                        chunks.append(line)
                finally:
                    writer.close()
        except TimeoutError:
            raise DriverError(f"{path}: no reply within {_IO_TIMEOUT:g} s") from None
        except (OSError, ValueError) as exc:
            if isinstance(exc, DriverError):
                raise
            raise DriverError(f"{path}: {exc}") from None
        if errno != 0:
            raise DriverError(f"{ifname}: the device refused the change (errno={errno})")
        return b"".join(chunks).decode()
