"""The fake's state and the rules that do not depend on HTTP: chats, update queues, messages."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import BLOCKED, CHAT_NOT_FOUND, ApiError, bad_request, forbidden, too_many_requests
from .state import (
    DEFAULT_UPDATES,
    Charge,
    ChatState,
    SentMessage,
    StoredFile,
    StoredMessage,
    UserState,
    WebhookDelivery,
    now,
)


class Call(NamedTuple):
    """One Bot API call a bot made: the canonical method name and its decoded parameters."""

    method: str
    params: dict[str, Any]


class Signal:
    """Wakes every waiter once per change (an Event that re-arms itself)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        return True


@dataclass
class Webhook:
    url: str
    secret_token: str
    max_connections: int


@dataclass
class BotState:
    id: int
    token: str
    user: UserState
    can_join_groups: bool = True
    can_read_all_group_messages: bool = False
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = field(
        default_factory=lambda: 100_000_000 + secrets.randbelow(800_000_000)
    )
    confirmed: int = 0
    allowed: frozenset[str] = DEFAULT_UPDATES
    webhook: Webhook | None = None
    webhook_error: tuple[int, str] | None = None
    last_set_webhook_at: float = float("-inf")
    long_poll: asyncio.Future[str] | None = None
    commands: dict[tuple[str, str, str], list[dict[str, str]]] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    signal: Signal = field(default_factory=Signal)

    def add_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Queue an update unless the bot's allowed_updates filter it out (as Telegram does)."""
        if kind not in self.allowed:
            return None
        update = {"update_id": self.next_update_id, kind: payload}
        self.next_update_id += 1
        self.updates.append(update)
        self.signal.fire()
        return update

    def confirm_before(self, update_id: int) -> None:
        kept = [u for u in self.updates if u["update_id"] >= update_id]
        for update in self.updates[: len(self.updates) - len(kept)]:
            self.confirmed = max(self.confirmed, update["update_id"])
        self.updates = kept

    def drop_pending(self) -> None:
        self.updates.clear()


@dataclass
class QueryState:
    """A callback or pre-checkout query waiting for the bot's answer."""

    bot_id: int
    user_id: int
    created: float
    answer: dict[str, Any] | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    payload: dict[str, Any] = field(default_factory=dict)


class World:
    """Bots, users, chats and the traffic between them."""

    def __init__(self) -> None:
        self.bots: dict[int, BotState] = {}
        self.bots_by_token: dict[str, BotState] = {}
        self.users: dict[int, UserState] = {}
        self.private_chats: dict[tuple[int, int], ChatState] = {}
        self.groups: dict[int, ChatState] = {}
        self.charges: dict[str, Charge] = {}
        # The bots' Star transactions in chronological order: ("in", charge) for a payment,
        # ("out", charge) for its refund (getStarTransactions).
        self.star_transactions: list[tuple[str, Charge]] = []
        self.callback_queries: dict[str, QueryState] = {}
        self.pre_checkout_queries: dict[str, QueryState] = {}
        self.calls: list[Call] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.rate_limits: dict[str, list[int]] = {}
        self.changed = Signal()
        self._seq = 0

    # chats

    def private_chat(self, bot: BotState, user: UserState) -> ChatState:
        key = (bot.id, user.id)
        chat = self.private_chats.get(key)
        if chat is None:
            chat = ChatState(id=user.id, type="private", user=user, bot_id=bot.id)
            self.private_chats[key] = chat
        return chat

    def knows_user(self, bot: BotState, user_id: int) -> bool:
        if (bot.id, user_id) in self.private_chats:
            return True
        return any(
            bot.id in group.members and user_id in group.members for group in self.groups.values()
        )

    def chat_for(self, bot: BotState, chat_id: str, *, write: bool) -> ChatState:
        """The chat a bot names, with the errors Telegram gives when it may not use it."""
        if not chat_id:
            raise bad_request("chat_id is empty")
        if chat_id.startswith("@"):
            wanted = chat_id[1:].lower()
            for group in self.groups.values():
                if group.username and group.username.lower() == wanted:
                    return self._group_access(bot, group)
            raise bad_request(CHAT_NOT_FOUND)
        try:
            numeric = int(chat_id)
        except ValueError:
            raise bad_request(CHAT_NOT_FOUND) from None
        if numeric > 0:
            user = self.users.get(numeric)
            chat = self.private_chats.get((bot.id, numeric))
            if user is None or chat is None or bot.id not in user.started:
                if user is not None and self.knows_user(bot, numeric) and write:
                    raise forbidden("bot can't initiate conversation with a user")
                raise bad_request(CHAT_NOT_FOUND)
            if write and bot.id in user.blocked:
                raise forbidden(BLOCKED)
            return chat
        found = self.groups.get(numeric)
        if found is None:
            raise bad_request(CHAT_NOT_FOUND)
        return self._group_access(bot, found)

    @staticmethod
    def _group_access(bot: BotState, group: ChatState) -> ChatState:
        member = group.members.get(bot.id)
        if member is None or member.status == "left":
            raise forbidden("bot is not a member of the supergroup chat")
        return group

    # messages

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def store(
        self,
        chat: ChatState,
        sender: UserState,
        content: dict[str, Any],
        *,
        bot: BotState | None = None,
        **extra: Any,
    ) -> StoredMessage:
        message = StoredMessage(
            chat=chat,
            message_id=chat.allocate_message_id(),
            sender=sender.json(),
            date=now(),
            content=content,
            bot_id=bot.id if bot is not None else 0,
            **extra,
        )
        message.seq = message.created = self.next_seq()
        chat.messages[message.message_id] = message
        if bot is not None:
            message.view = SentMessage(message.message_id, chat.id, bot.id)
            message.refresh_view()
        self.changed.fire()
        return message

    def touched(self, message: StoredMessage, *, edited: bool) -> None:
        """A bot changed a message: a new version for waiters, and the test's view follows."""
        if edited:
            message.version += 1
            message.edit_date = now()
            message.seq = self.next_seq()
        message.refresh_view()
        self.changed.fire()

    def deliver(self, message: StoredMessage, kind: str = "message") -> list[dict[str, Any]]:
        """Hand a message that a user (or a service action) produced to the bots of its chat.

        Bots never see their own messages, nor (in groups) those of other bots.
        """
        payload = message.json()
        if message.chat.type == "private":
            update = self.bots[message.chat.bot_id].add_update(kind, payload)
            return [update] if update is not None else []
        if message.bot_id:
            return []
        updates = []
        for member_id, member in message.chat.members.items():
            bot = self.bots.get(member_id)
            if bot is None or member.status == "left":
                continue
            if not (member.is_admin or bot.can_read_all_group_messages or _meant_for(bot, message)):
                continue  # privacy mode
            update = bot.add_update(kind, payload)
            if update is not None:
                updates.append(update)
        return updates

    def user_for_bot(self, bot: BotState) -> Callable[[int], dict[str, Any] | None]:
        """What a bot may mention by id: users it has met."""

        def lookup(user_id: int) -> dict[str, Any] | None:
            user = self.users.get(user_id)
            if user is None or not self.knows_user(bot, user_id):
                return None
            return user.json()

        return lookup

    def find_message(self, chat: ChatState, message_id: int) -> StoredMessage | None:
        message = chat.messages.get(message_id)
        if message is None or message.deleted:
            return None
        return message

    def rate_limited(self, method: str) -> ApiError | None:
        limit = self.rate_limits.get(method.lower())
        if not limit or limit[0] <= 0:
            return None
        limit[0] -= 1
        return too_many_requests(limit[1])


def _meant_for(bot: BotState, message: StoredMessage) -> bool:
    """What a bot in privacy mode still gets in a group: commands, replies to it, service."""
    if "text" not in message.content:
        return True
    if message.reply_to is not None and message.reply_to.bot_id == bot.id:
        return True
    text = str(message.content["text"])
    username = (bot.user.username or "").lower()
    for entity in message.content.get("entities", []):
        if entity["type"] != "bot_command":
            continue
        command = text.encode("utf-16-le")[
            2 * entity["offset"] : 2 * (entity["offset"] + entity["length"])
        ]
        _, _, target = command.decode("utf-16-le").partition("@")
        if not target or target.lower() == username:
            return True
    return False
