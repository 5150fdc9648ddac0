"""Helpers shared by the CLI commands: settings, the container, async running, output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import click

from common.logging import configure_logging
from controller.bootstrap import Container, open_container
from controller.settings import Settings, load_settings

T = TypeVar("T")


def settings_from(ctx: click.Context) -> Settings:
    """Settings are loaded once per invocation, lazily, so ``--help`` works without them."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        settings = load_settings()
        configure_logging(settings.log.level, settings.log.format, dev=settings.is_dev)
        obj["settings"] = settings
    settings_obj: Settings = obj["settings"]
    return settings_obj


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@asynccontextmanager
async def container(settings: Settings) -> AsyncIterator[Container]:
    async with open_container(settings) as c:
        yield c


def with_container(ctx: click.Context, action: Callable[[Container], Awaitable[T]]) -> T:
    settings = settings_from(ctx)

    async def _main() -> T:
        async with container(settings) as c:
            return await action(c)

    return run(_main())


def confirm_destructive(yes: bool, question: str) -> None:
    """Ask before destroying data; without a terminal, require --yes instead of guessing."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("this replaces or drops data: pass --yes to confirm")
    click.confirm(question, abort=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in cells
    ]
    return "\n".join(lines)
