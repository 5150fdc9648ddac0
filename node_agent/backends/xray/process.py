"""Running the core ourselves, when the config gives a ``command`` (else systemd runs it).

The core gets a session of its own, so it outlives the agent like a unit-managed core would:
an agent restart or upgrade drops no client, and the next agent adopts the running core
through its API. Its output is appended to a log file in the state directory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from node_agent.errors import BackendError

CONFIG_PLACEHOLDER = "{config}"


def command_argv(command: Sequence[str], config_path: Path) -> list[str]:
    return [arg.replace(CONFIG_PLACEHOLDER, str(config_path)) for arg in command]


class CoreProcess:
    def __init__(self, name: str, command: Sequence[str], config_path: Path, log_path: Path):
        self.name = name
        self.argv = command_argv(command, config_path)
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        """True while the core we started has not exited."""
        return self._process is not None and self._process.returncode is None

    def exit_status(self) -> int | None:
        """The exit code of the core we started, once it has exited."""
        return None if self._process is None else self._process.returncode

    async def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # No inherited environment: the agent's own settings stay out of the core.
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env={"PATH": os.environ.get("PATH", os.defpath)},
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"{self.name}: could not start {self.argv[0]}: {exc}") from None
        finally:
            os.close(fd)

    async def wait(self) -> int | None:
        """Wait for the core we started to exit; its status (None: we started none)."""
        return None if self._process is None else await self._process.wait()

    def log_tail(self, lines: int = 5, limit: int = 64 * 1024) -> str:
        """The last lines the core wrote, for error messages."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - limit))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())
