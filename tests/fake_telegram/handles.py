"""Handles on what a test set up: a bot registered with the fake, a supergroup."""

from __future__ import annotations

# The waiting helpers take timeout= (the shape tests are written against), like asyncio.wait_for.
# ruff: noqa: ASYNC109
from typing import TYPE_CHECKING, Any

from .inbox import BotRef, Inbox, Predicate, bot_state
from .state import ChatState, Member, SentMessage, Topic
from .world import BotState, Call

if TYPE_CHECKING:
    from .server import FakeTelegram


class FakeBot:
    """A bot registered with the fake (what ``FakeTelegram.add_bot`` returns)."""

    def __init__(self, tg: FakeTelegram, state: BotState) -> None:
        self._tg = tg
        self.state = state

    @property
    def id(self) -> int:
        return self.state.id

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def username(self) -> str:
        return self.state.user.username or ""

    @property
    def calls(self) -> list[Call]:
        return self.state.calls

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        return list(self.state.updates)

    @property
    def updates_confirmed(self) -> int:
        return self.state.confirmed

    @property
    def webhook_url(self) -> str | None:
        return self.state.webhook.url if self.state.webhook else None

    def commands(self, scope: str = "default", language_code: str = "") -> list[dict[str, str]]:
        """The commands setMyCommands stored for a scope type without a chat (or "chat:<id>")."""
        kind, _, chat = scope.partition(":")
        return list(self.state.commands.get((kind, chat, language_code), []))


class FakeGroup:
    """A supergroup (maybe a forum) that bots and users share."""

    def __init__(self, tg: FakeTelegram, state: ChatState) -> None:
        self._tg = tg
        self.state = state
        self.inbox = Inbox(tg, lambda: [state])

    @property
    def id(self) -> int:
        return self.state.id

    @property
    def topics(self) -> dict[int, Topic]:
        return self.state.topics

    @property
    def messages(self) -> list[SentMessage]:
        """Messages bots posted here (service messages included), in order."""
        return self.inbox.views()

    def add(self, who: Any, status: str = "member", *, can_manage_topics: bool = True) -> None:
        user = self._tg.member_state(who)
        self.state.members[user.id] = Member(user, status, can_manage_topics=can_manage_topics)

    def remove(self, who: Any) -> None:
        user = self._tg.member_state(who)
        self.state.members[user.id] = Member(user, "left")

    async def wait_message(
        self,
        predicate: Predicate | None = None,
        timeout: float = 5.0,
        *,
        bot: BotRef = None,
        thread_id: int | None = None,
    ) -> SentMessage:
        bot_id = bot_state(self._tg, bot).id if bot is not None else None
        return await self.inbox.wait(predicate, timeout, bot_id, thread_id)

    async def wait_edit(self, message: SentMessage, timeout: float = 5.0) -> SentMessage:
        return await self.inbox.wait_edit(message, timeout)
