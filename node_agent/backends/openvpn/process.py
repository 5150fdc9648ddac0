"""Supervision of one daemonized openvpn server.

openvpn is started through ``common.proc.run_command`` in a session of its own and
daemonizes (``daemon`` in its config), so it outlives the agent: an agent restart or upgrade
drops no client. Which process is ours is known from its pid file, checked against
``/proc/PID/cmdline`` (a reused pid is not ours); that it works is known from its
management interface, which reports CONNECTED once the server finished initialising.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from common.proc import CommandError, run_command
from node_agent.backends.openvpn.management import ManagementClient, ManagementError
from node_agent.errors import BackendError

log = structlog.get_logger("node_agent.openvpn")

STOP_TIMEOUT = 10.0
LOG_MAX_BYTES = 8 * 2**20  # openvpn.log is rotated (once, to .1) past this size
_LOG_TAIL = 5
_TAIL_BYTES = 8192


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # "pid (comm) S ...": the state follows the last ')'; a zombie has exited.
            state = handle.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


class OpenVpnProcess:
    def __init__(
        self,
        *,
        name: str,
        command: Sequence[str],
        config_path: Path,
        pid_path: Path,
        log_path: Path,
        management: ManagementClient,
        start_timeout: float,
    ) -> None:
        self.name = name
        self.command = list(command)  # prefix and program: ["ip", "netns", "exec", "x", "openvpn"]
        self.config_path = config_path
        self.pid_path = pid_path
        self.log_path = log_path
        self.management = management
        self.start_timeout = start_timeout

    def pid(self) -> int | None:
        """The pid of our openvpn when it is alive (from the pid file, checked against its
        command line, so a reused pid is never taken for ours)."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if str(self.config_path).encode() not in cmdline or not _alive(pid):
            return None
        return pid

    async def ready(self) -> bool:
        """True when the management interface answers and the server finished starting."""
        try:
            async with self.management.connect() as conn:
                return await conn.state() == "CONNECTED"
        except ManagementError:
            return False

    def log_tail(self, lines: int = _LOG_TAIL) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(handle.seek(0, os.SEEK_END) - _TAIL_BYTES, 0))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def rotate_log(self, max_bytes: int = LOG_MAX_BYTES) -> bool:
        """Keep the log below ``max_bytes``: copy it to ``.1`` and truncate it in place
        (openvpn appends, so it writes on at the new end). True when it rotated."""
        try:
            if self.log_path.stat().st_size <= max_bytes:
                return False
            old = self.log_path.with_name(self.log_path.name + ".1")
            shutil.copyfile(self.log_path, old)
            os.truncate(self.log_path, 0)
        except FileNotFoundError:
            return False
        return True

    async def start(self) -> None:
        """Start openvpn and wait until it serves; BackendError with the reason otherwise
        (a process that started but does not come up is stopped again)."""
        argv = [*self.command, "--config", str(self.config_path)]
        try:
            # A bare environment: the agent's own settings (and secrets) are not openvpn's.
            result = await run_command(
                argv,
                timeout=self.start_timeout,
                env={"PATH": os.environ.get("PATH", os.defpath)},
                inherit_env=False,
                new_session=True,
            )
        except CommandError as exc:
            raise BackendError(f"{self.name}: could not start openvpn: {exc}") from None
        if result.returncode != 0:
            # Option errors are reported before daemonizing, on stdout.
            detail = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise BackendError(
                f"{self.name}: openvpn refused to start (exit {result.returncode}): "
                f"{' | '.join(detail.splitlines()[-_LOG_TAIL:])}"
            )
        started = time.monotonic()
        while not await self.ready():
            elapsed = time.monotonic() - started
            # The pid file appears as it daemonizes: still none a second later, it died.
            if elapsed > self.start_timeout or (elapsed > 1.0 and self.pid() is None):
                await self.stop()
                reason = self.log_tail() or "no log"
                raise BackendError(f"{self.name}: openvpn did not come up: {reason}")
            await asyncio.sleep(0.05)
        log.info("openvpn_started", backend=self.name, pid=self.pid())

    async def stop(self) -> None:
        """Stop our openvpn (SIGTERM: clients are told; SIGKILL if it lingers)."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.05)
        log.info("openvpn_stopped", backend=self.name, pid=pid)
