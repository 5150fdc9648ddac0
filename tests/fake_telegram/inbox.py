"""Waiting for what bots post: each version of a message is handed to a waiting test once."""

from __future__ import annotations

# The waiting helpers take timeout= (the shape tests are written against), like asyncio.wait_for.
# ruff: noqa: ASYNC109
import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import FakeTelegramUsageError
from .state import ChatState, SentMessage, StoredMessage
from .world import BotState

if TYPE_CHECKING:
    from .server import FakeTelegram

Predicate = Callable[[SentMessage], bool]
# A FakeBot, an aiogram Bot, a token or a bot id (None: the only bot).
BotRef = Any


def bot_state(tg: FakeTelegram, bot: BotRef) -> BotState:
    """The bot a helper means: a FakeBot, an aiogram Bot, a token or an id.

    None is fine while the fake has exactly one bot.
    """
    if isinstance(bot, BotState):
        return bot
    if isinstance(getattr(bot, "state", None), BotState):
        return bot.state  # type: ignore[no-any-return]
    if isinstance(getattr(bot, "token", None), str):
        bot = bot.token
    if isinstance(bot, int) and bot in tg.bots:
        return tg.bots[bot]
    if isinstance(bot, str) and bot in tg.bots_by_token:
        return tg.bots_by_token[bot]
    if bot is None and len(tg.bots) == 1:
        return next(iter(tg.bots.values()))
    if bot is None:
        raise FakeTelegramUsageError(f"{len(tg.bots)} bots: say which one (bot=...)")
    raise FakeTelegramUsageError(f"unknown bot: {bot!r}")


def _key(message: StoredMessage) -> tuple[int, int, int]:
    return (message.chat.bot_id, message.chat.id, message.message_id)


class Inbox:
    """Waiting for what bots post in some chats; each version of a message is taken once."""

    def __init__(self, tg: FakeTelegram, chats: Callable[[], Iterable[ChatState]]) -> None:
        self._tg = tg
        self._chats = chats
        self._taken: dict[tuple[int, int, int], int] = {}

    def stored(self, bot_id: int | None = None) -> list[StoredMessage]:
        found = [
            message
            for chat in self._chats()
            for message in chat.messages.values()
            if message.bot_id and (bot_id is None or message.bot_id == bot_id)
        ]
        return sorted(found, key=lambda m: m.created)

    def views(self) -> list[SentMessage]:
        return [m.view for m in self.stored() if m.view is not None]

    def find(self, view: SentMessage) -> StoredMessage:
        for message in self.stored():
            if message.view is view or (
                (message.bot_id, message.chat.id, message.message_id)
                == (view.bot_id, view.chat_id, view.message_id)
            ):
                return message
        raise FakeTelegramUsageError(f"message {view.message_id} is not in this chat")

    async def wait(
        self,
        predicate: Predicate | None,
        timeout: float,
        bot_id: int | None = None,
        thread_id: int | None = None,
    ) -> SentMessage:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            candidates = sorted(self.stored(bot_id), key=lambda m: m.seq)
            for message in candidates:
                if message.version <= self._taken.get(_key(message), -1):
                    continue
                if thread_id is not None and message.thread_id != thread_id:
                    continue
                assert message.view is not None
                if predicate is None or predicate(message.view):
                    self._taken[_key(message)] = message.version
                    return message.view
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [(m.message_id, m.text[:60], m.version) for m in candidates]
                raise TimeoutError(f"no matching bot message within {timeout} s; seen: {seen}")
            await self._tg.changed.wait(remaining)

    async def wait_edit(self, view: SentMessage, timeout: float) -> SentMessage:
        message = self.find(view)
        baseline = max(self._taken.get(_key(message), 0), 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while message.version <= baseline:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"message {message.message_id} was not edited within {timeout} s"
                )
            await self._tg.changed.wait(remaining)
        self._taken[_key(message)] = message.version
        assert message.view is not None
        return message.view
