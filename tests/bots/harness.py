"""The client bot under test: real aiogram dispatch and session against the fake Bot API.

async with running_client_bot(services, tg) as app:     # long polling, like production
    alice = tg.user(1001, first_name="Alice")
    await alice.send("/start")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import uvicorn
from aiogram import Bot
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from bots import client
from bots.common.app import BotApp, Mode, build_app
from controller.crypto import SecretBox
from controller.services import Services
from tests.fake_telegram import FakeTelegram

TOKEN = "123456:TEST-client-bot-token"


def client_app(
    services: Services,
    tg: FakeTelegram,
    *,
    token: str = TOKEN,
    redis_url: str | None = None,
    throttle_updates: int = 1000,
    throttle_window: float = 1.0,
    mode: Mode = "polling",
    webhook_url: str | None = None,
    secrets: SecretBox | None = None,
    jobs: Sequence[Callable[[Bot], Coroutine[Any, Any, None]]] = (),
) -> BotApp:
    return build_app(
        name="client",
        token=token,
        api_url=tg.base_url,
        routers=client.get_routers(),
        services=services,
        secrets=secrets or SecretBox(os.urandom(32)),
        redis_url=redis_url,
        throttle_updates=throttle_updates,
        throttle_window=throttle_window,
        mode=mode,
        webhook_url=webhook_url,
        commands=client.COMMANDS,
        jobs=jobs,
    )


@contextlib.asynccontextmanager
async def running(app: BotApp) -> AsyncIterator[BotApp]:
    task = asyncio.create_task(app.run(), name=f"bot-{app.name}")
    try:
        yield app
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running_client_bot(
    services: Services, tg: FakeTelegram, **kwargs: object
) -> AsyncIterator[BotApp]:
    tg.add_bot(TOKEN, username="vpn_test_bot", first_name="VPN")  # the same bot if known
    async with running(client_app(services, tg, **kwargs)) as app:  # type: ignore[arg-type]
        yield app


def free_port() -> int:
    """A loopback port nobody listens on now (for a webhook endpoint under test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[None]:
    """Serve ``app`` on loopback for the block (Telegram's webhook target in tests)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


class Flaky:
    """The payment service with its database failing for the first ``failures`` confirms."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real, self.failures, self.calls = real, failures, 0

    async def confirm(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("UPDATE payments", {}, ConnectionError("server closed"))
        return await self.real.confirm(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
