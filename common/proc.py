"""The one way vpnbot runs other programs: an argv list, never a shell string, with a timeout."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class CommandError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float,  # noqa: ASYNC109 - on timeout the child is killed too
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    new_session: bool = False,
) -> CommandResult:
    """Run ``argv``; kill it when ``timeout`` seconds pass.

    ``env`` entries are added to the current environment, or with ``inherit_env=False`` are
    the child's whole environment (so vpnbot's own secrets do not leak into it). Pass secrets
    such as PGPASSWORD this way, never in argv. ``new_session`` starts the child in a session
    of its own, so a daemon it leaves behind outlives signals sent to our process group.
    """
    if inherit_env:
        full_env: dict[str, str] | None = {**os.environ, **env} if env else None
    else:
        full_env = dict(env or {})
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            start_new_session=new_session,
        )
    except FileNotFoundError:
        raise CommandError(f"{argv[0]} not found") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise CommandError(f"{argv[0]} did not finish within {timeout:g} s") from None
    assert process.returncode is not None
    return CommandResult(process.returncode, stdout, stderr)
