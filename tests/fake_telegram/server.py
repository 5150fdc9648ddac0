"""The loopback HTTP server that speaks the Bot API, and the test-facing ``FakeTelegram``."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from .args import Args, Upload, json_to_arg
from .client import FakeUser
from .errors import ApiError, not_found, unauthorized
from .handles import FakeBot, FakeGroup
from .inbox import BotRef, bot_state
from .methods import REGISTRY, Answer, Ctx, load
from .methods.updates import CLOSING, abort_long_poll
from .state import ChatState, UserState, WebhookDelivery, now
from .world import BotState, Call, Webhook, World

log = logging.getLogger(__name__)
load()

_TOKEN = re.compile(r"^(\d+):[A-Za-z0-9_-]+$")
# Methods telegram-bot-api refuses to run from a webhook's reply.
_NOT_FROM_WEBHOOK = ("deletewebhook", "setwebhook", "close", "logout")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def read_args(request: web.Request) -> Args:
    """Parameters from the query string and a JSON, urlencoded or multipart body."""
    values = dict(request.query)
    files: dict[str, Upload] = {}
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text())
            except ValueError:
                body = None
            if isinstance(body, dict):
                values.update({key: json_to_arg(value) for key, value in body.items()})
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = Upload(value.file.read(), value.filename, value.content_type)
                else:
                    values[key] = str(value)
    return Args(values, files)


class FakeTelegram(World):
    """A fake Telegram Bot API on 127.0.0.1 for tests (see the package docstring).

    ``webhook_timeout`` bounds each POST to a webhook; a failed delivery (a non-2xx answer or
    no answer) is retried after ``webhook_retry_delay`` seconds, in order, as Telegram does.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        webhook_timeout: float = 10.0,
        webhook_retry_delay: float = 0.5,
    ) -> None:
        super().__init__()
        self.host = host
        self.port = 0
        self.webhook_timeout = webhook_timeout
        self.webhook_retry_delay = webhook_retry_delay
        self.closing = False
        # Telegram answers 429 to a setWebhook with a URL sooner than this after the last one.
        self.set_webhook_interval = 1.0
        # Exceptions inside the fake itself: a test must never pass because the fake broke.
        self.internal_errors: list[BaseException] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pushers: dict[int, asyncio.Task[None]] = {}
        self._handles: dict[int, FakeUser] = {}

    # lifecycle

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        if exc_type is None and self.internal_errors:
            raise AssertionError(f"the fake Bot API failed internally: {self.internal_errors!r}")

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", r"/bot{token}/{method}", self._handle)
        app.router.add_get(r"/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        self.closing = True
        for bot in self.bots.values():
            abort_long_poll(bot, CLOSING)
        pushers = list(self._pushers.values())
        self._pushers.clear()
        for task in pushers:
            task.cancel()
        await asyncio.gather(*pushers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # the world a test sets up

    def add_bot(
        self,
        token: str,
        *,
        username: str | None = None,
        first_name: str = "Test Bot",
        can_join_groups: bool = True,
        can_read_all_group_messages: bool = False,
    ) -> FakeBot:
        """Register a bot; its id is the number before the token's ':'.

        Adding the same token again returns the same bot.
        """
        match = _TOKEN.match(token)
        if match is None:
            raise ValueError(f"not a bot token: {token!r} (expected '<id>:<secret>')")
        bot_id = int(match.group(1))
        if token in self.bots_by_token:
            return FakeBot(self, self.bots_by_token[token])  # the same bot, added again
        if bot_id in self.bots or bot_id in self.users:
            raise ValueError(f"bot id {bot_id} is already taken")
        user = UserState(bot_id, first_name, username=username or f"test{bot_id}_bot", is_bot=True)
        bot = BotState(
            bot_id,
            token,
            user,
            can_join_groups=can_join_groups,
            can_read_all_group_messages=can_read_all_group_messages,
        )
        self.bots[bot_id] = bot
        self.bots_by_token[token] = bot
        return FakeBot(self, bot)

    def user(
        self,
        user_id: int,
        first_name: str = "Test",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        is_premium: bool = False,
    ) -> FakeUser:
        """A Telegram user the test acts as (the same handle for the same id)."""
        if user_id in self._handles:
            return self._handles[user_id]
        if user_id <= 0 or user_id in self.bots:
            raise ValueError(f"not a free user id: {user_id}")
        state = UserState(user_id, first_name, last_name, username, language_code, is_premium)
        self.users[user_id] = state
        handle = FakeUser(self, state)
        self._handles[user_id] = handle
        return handle

    def supergroup(
        self,
        chat_id: int,
        title: str = "Group",
        *,
        forum: bool = False,
        admins: tuple[Any, ...] | list[Any] = (),
        members: tuple[Any, ...] | list[Any] = (),
        creator: Any = None,
        username: str | None = None,
    ) -> FakeGroup:
        """A supergroup (a forum when ``forum``); admins and members are bots, users or ids."""
        if chat_id >= 0 or chat_id in self.groups:
            raise ValueError(f"not a free supergroup id: {chat_id}")
        # Message 1 of a supergroup is its creation, which is also why General is topic 1.
        chat = ChatState(
            chat_id, "supergroup", title=title, username=username, is_forum=forum, next_message_id=2
        )
        self.groups[chat_id] = chat
        group = FakeGroup(self, chat)
        if creator is not None:
            group.add(creator, status="creator")
        for admin in admins:
            group.add(admin, status="administrator")
        for member in members:
            group.add(member)
        return group

    def member_state(self, who: Any) -> UserState:
        """The user behind a FakeUser, FakeBot or id."""
        if isinstance(who, FakeUser):
            return who.state
        if isinstance(who, FakeBot):
            return who.state.user
        if isinstance(who, int):
            if who in self.bots:
                return self.bots[who].user
            if who in self.users:
                return self.users[who]
        raise ValueError(f"unknown user or bot: {who!r}")

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls of ``method`` (by any bot) get 429 with this retry_after."""
        self.rate_limits[method.lower()] = [times, retry_after]

    def updates_confirmed(self, bot: BotRef) -> int:
        """The highest update_id the bot has confirmed (0 before any)."""
        return bot_state(self, bot).confirmed

    # hooks for the methods

    def webhook_changed(self, bot: BotState) -> None:
        task = self._pushers.pop(bot.id, None)
        if task is not None:
            task.cancel()
        if bot.webhook is not None and not self.closing:
            loop = asyncio.get_running_loop()
            self._pushers[bot.id] = loop.create_task(self._push(bot, bot.webhook))

    # HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        bot = self.bots_by_token.get(request.match_info["token"])
        if bot is None:
            error = unauthorized()
            return web.json_response(error.payload(), status=error.error_code, dumps=_dumps)
        args = await read_args(request)
        status, body = await self.execute(bot, request.match_info["method"], args)
        headers = {}
        if status == 429:
            headers["Retry-After"] = str(body["parameters"]["retry_after"])
        return web.json_response(body, status=status, headers=headers, dumps=_dumps)

    async def execute(self, bot: BotState, method: str, args: Args) -> tuple[int, dict[str, Any]]:
        """Run one Bot API call: (HTTP status, response body)."""
        entry = REGISTRY.get(method.lower())
        call = Call(entry[0] if entry else method, args.decoded())
        self.calls.append(call)
        bot.calls.append(call)
        try:
            if entry is None:
                raise not_found()
            limited = self.rate_limited(method)
            if limited is not None:
                raise limited
            result = entry[1](Ctx(self, bot, args))
            if inspect.isawaitable(result):
                result = await result
        except ApiError as exc:
            return exc.error_code, exc.payload()
        except Exception as exc:
            log.exception("fake Bot API failed on %s", method)
            self.internal_errors.append(exc)
            return 500, {
                "ok": False,
                "error_code": 500,
                "description": f"Internal Server Error: fake Bot API: {exc!r}",
            }
        if isinstance(result, Answer):
            body: dict[str, Any] = {"ok": True, "result": result.result}
            if result.description:
                body["description"] = result.description
            return 200, body
        return 200, {"ok": True, "result": result}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        bot = self.bots_by_token.get(request.match_info["token"])
        path = request.match_info["path"]
        if bot is not None:
            for stored in bot.files.values():
                if stored.file_path == path:
                    return web.Response(body=stored.data)
        error = not_found()
        return web.json_response(error.payload(), status=404, dumps=_dumps)

    # webhooks

    async def _push(self, bot: BotState, webhook: Webhook) -> None:
        """Deliver the bot's updates to its webhook one by one, in order, retrying failures."""
        assert self._session is not None
        url = webhook.url if "://" in webhook.url else f"https://{webhook.url}"
        headers = {"Content-Type": "application/json"}
        if webhook.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook.secret_token
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
        while bot.webhook is webhook and not self.closing:
            if not bot.updates:
                await bot.signal.wait(1.0)
                continue
            update = bot.updates[0]
            status: int | None = None
            error: str | None = None
            reply: Args | None = None
            try:
                async with self._session.post(
                    url, data=_dumps(update).encode(), headers=headers, timeout=timeout
                ) as response:
                    status = response.status
                    if 200 <= status < 300:
                        reply = await _webhook_reply(response)
                    else:
                        error = f"Wrong response from the webhook: {status} {response.reason}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = str(exc) or type(exc).__name__
            self.webhook_deliveries.append(
                WebhookDelivery(bot.id, update["update_id"], status, error)
            )
            if error is not None:
                bot.webhook_error = (now(), error)
                await asyncio.sleep(self.webhook_retry_delay)
                continue
            if bot.updates and bot.updates[0] is update:
                bot.confirm_before(update["update_id"] + 1)
            if reply is not None:
                method = reply.text("method")
                if method.lower() not in _NOT_FROM_WEBHOOK and not method.lower().startswith("get"):
                    await self.execute(bot, method, reply)


async def _webhook_reply(response: aiohttp.ClientResponse) -> Args | None:
    """A method call the webhook answered with (telegram-bot-api runs it), if any."""
    if response.content_type == "application/json":
        try:
            body = await response.json(content_type=None)
        except ValueError:
            return None
        if isinstance(body, dict) and body.get("method"):
            return Args({key: json_to_arg(value) for key, value in body.items()}, {})
        return None
    if response.content_type == "multipart/form-data":
        values: dict[str, str] = {}
        files: dict[str, Upload] = {}
        reader = aiohttp.MultipartReader.from_response(response)
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                continue
            if part.filename:
                data = await part.read()
                files[part.name] = Upload(
                    bytes(data), part.filename, part.headers.get("Content-Type", "")
                )
            else:
                values[part.name] = await part.text()
        return Args(values, files) if values.get("method") else None
    return None
