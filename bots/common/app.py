"""One running bot: its aiogram Bot and Dispatcher, and how it gets updates.

Long polling is the default. With a public URL (VPNBOT_API__PUBLIC_URL) the bot registers a
webhook at ``<public url>/telegram/<name>/webhook`` with a secret token, and the FastAPI
app feeds the updates Telegram posts there (see :mod:`bots.common.webhook`). The secret is
derived from the master key and the bot token, so every controller process computes the
same one and nothing extra has to be stored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import structlog
from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.methods import Response, TelegramMethod
from aiogram.types import BotCommand, Update
from redis.asyncio import Redis

from bots.common.context import UserCache
from bots.common.middlewares import (
    ErrorMiddleware,
    ServicesMiddleware,
    ThrottlingMiddleware,
    UserMiddleware,
)
from bots.common.throttling import MemoryRateCounter, RateCounter, RedisRateCounter
from controller.crypto import SecretBox
from controller.services import Services

log = structlog.get_logger(__name__)

Mode = Literal["polling", "webhook"]
SHUTDOWN_GRACE_SECONDS = 10.0
START_RETRY_MAX_SECONDS = 60.0
MAX_CONCURRENT_UPDATES = 256


def webhook_secret(secrets: SecretBox, token: str) -> str:
    """A stable secret_token for this bot (Telegram allows 1-256 of A-Z a-z 0-9 _ -)."""
    digest = secrets.derive(b"telegram-webhook:" + token.encode())
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class BotSession(AiohttpSession):
    """aiogram's HTTP session, with the reply types kept alive.

    aiogram parses every Bot API reply as ``Response[<the method's result type>]``, a pydantic
    generic class made on first use. pydantic caches such classes weakly only, so once
    collected they are rebuilt (milliseconds of schema building each) again and again; in the
    bot benchmark that was a tenth of the CPU time of a button press. Holding every one made
    keeps it built once per process.
    """

    _reply_types: ClassVar[dict[Any, type[Any]]] = {}

    def check_response(
        self, bot: Bot, method: TelegramMethod[Any], status_code: int, content: str
    ) -> Response[Any]:
        returning = method.__returning__
        if returning not in self._reply_types:
            self._reply_types[returning] = Response[returning]  # type: ignore[valid-type]
        return super().check_response(bot, method, status_code, content)


def create_bot(token: str, api_url: str) -> Bot:
    session = BotSession(api=TelegramAPIServer.from_base(api_url))
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))


@dataclass
class BotApp:
    name: str
    bot: Bot
    dispatcher: Dispatcher
    secret: str
    mode: Mode
    webhook_url: str | None = None
    drop_pending_updates: bool = False
    commands: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    redis: Redis | None = None
    throttling: ThrottlingMiddleware | None = None
    closing: bool = False
    # Periodic work beside the updates (e.g. payment reconciliation), run while serving.
    jobs: Sequence[Callable[[Bot], Coroutine[Any, Any, None]]] = ()

    async def run(self) -> None:
        """Serve until cancelled."""
        jobs: list[asyncio.Task[None]] = []
        try:
            await self._start()
            jobs = [
                asyncio.create_task(job(self.bot), name=f"bot-{self.name}-job") for job in self.jobs
            ]
            if self.mode == "webhook":
                log.info("bot_webhook_set", bot=self.name, url=self.webhook_url)
                await asyncio.Event().wait()
            else:
                log.info("bot_polling", bot=self.name)
                await self._poll()
        finally:
            for task in jobs:
                task.cancel()
            for task in jobs:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.close()

    async def _start(self) -> None:
        """Tell Telegram how to reach us, waiting out an unreachable or busy Bot API (the
        rest of the controller keeps serving meanwhile); a refused token is fatal."""
        delay = 1.0
        while True:
            try:
                await self._announce_commands()
                if self.mode == "webhook":
                    assert self.webhook_url is not None
                    await self.bot.set_webhook(
                        self.webhook_url,
                        secret_token=self.secret,
                        allowed_updates=self.dispatcher.resolve_used_update_types(),
                        drop_pending_updates=self.drop_pending_updates,
                    )
                else:
                    await self.bot.delete_webhook(drop_pending_updates=self.drop_pending_updates)
                return
            except TelegramUnauthorizedError:
                raise RuntimeError(
                    f"Telegram refused the {self.name} bot's token "
                    f"(VPNBOT_TELEGRAM__{self.name.upper()}_BOT_TOKEN)"
                ) from None
            except TelegramRetryAfter as exc:
                wait = float(exc.retry_after)
            except (TelegramNetworkError, TelegramServerError) as exc:
                wait = delay
                delay = min(delay * 2, START_RETRY_MAX_SECONDS)
                log.warning("bot_api_unreachable", bot=self.name, reason=str(exc), retry_in=wait)
            await asyncio.sleep(wait)

    async def _poll(self) -> None:
        polling = asyncio.create_task(
            self.dispatcher.start_polling(
                self.bot,
                handle_signals=False,
                close_bot_session=False,
                allowed_updates=self.dispatcher.resolve_used_update_types(),
                # A backlog (after downtime) must not open more transactions at once than
                # the database pool can serve before its timeout.
                tasks_concurrency_limit=MAX_CONCURRENT_UPDATES,
            ),
            name=f"bot-{self.name}-polling",
        )
        try:
            # Shielded: cancelling start_polling from outside leaves its polling loop
            # running on its own; aiogram stops cleanly only through stop_polling().
            await asyncio.shield(polling)
        except asyncio.CancelledError:
            try:
                await self.dispatcher.stop_polling()
            except RuntimeError:  # not started yet
                polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            raise

    async def feed(self, update: dict[str, Any]) -> None:
        """Handle one update Telegram posted to the webhook."""
        parsed = Update.model_validate(update, context={"bot": self.bot})
        await self.dispatcher.feed_update(self.bot, parsed, redelivered_on_failure=True)

    async def _announce_commands(self) -> None:
        for language, commands in self.commands.items():
            await self.bot.set_my_commands(
                [BotCommand(command=c, description=d) for c, d in commands],
                language_code=None if language == "ru" else language,
            )

    async def close(self) -> None:
        # Updates already taken from Telegram are finished, not dropped: polling confirmed
        # them when it fetched the next batch, so Telegram will not send them again.
        self.closing = True
        in_flight = list(getattr(self.dispatcher, "_handle_update_tasks", ()))
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in late:  # stuck: stop it before its session goes away
                task.cancel()
            if late:
                log.warning("bot_updates_cut_short", bot=self.name, count=len(late))
                await asyncio.wait(late, timeout=1.0)
        if self.throttling is not None:
            await self.throttling.close()
        with contextlib.suppress(Exception):
            await self.dispatcher.storage.close()
        await self.bot.session.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()


def build_app(
    *,
    name: str,
    token: str,
    api_url: str,
    routers: Sequence[Router],
    services: Services,
    secrets: SecretBox,
    redis_url: str | None,
    throttle_updates: int,
    throttle_window: float,
    mode: Mode = "polling",
    webhook_url: str | None = None,
    drop_pending_updates: bool = False,
    commands: dict[str, list[tuple[str, str]]] | None = None,
    user_cache: UserCache | None = None,
    bot_factory: Callable[[str, str], Bot] = create_bot,
    jobs: Sequence[Callable[[Bot], Coroutine[Any, Any, None]]] = (),
    **workflow_data: Any,
) -> BotApp:
    """A dispatcher with the common middleware stack around ``routers``."""
    redis = Redis.from_url(redis_url) if redis_url else None
    storage: BaseStorage = (
        RedisStorage(redis, state_ttl=86400, data_ttl=86400) if redis else MemoryStorage()
    )
    counter: RateCounter = (
        RedisRateCounter(redis, throttle_updates, throttle_window, prefix=f"vpnbot:throttle:{name}")
        if redis
        else MemoryRateCounter(throttle_updates, throttle_window)
    )
    dispatcher = Dispatcher(storage=storage, **workflow_data)
    throttling = ThrottlingMiddleware(counter)
    dispatcher.update.outer_middleware(throttling)
    dispatcher.update.outer_middleware(ErrorMiddleware())
    dispatcher.update.outer_middleware(ServicesMiddleware(services))
    dispatcher.update.outer_middleware(UserMiddleware(services, user_cache or UserCache()))
    dispatcher.include_routers(*routers)
    return BotApp(
        name=name,
        bot=bot_factory(token, api_url),
        dispatcher=dispatcher,
        secret=webhook_secret(secrets, token),
        mode=mode,
        webhook_url=webhook_url,
        drop_pending_updates=drop_pending_updates,
        commands=commands or {},
        redis=redis,
        throttling=throttling,
        jobs=jobs,
    )
