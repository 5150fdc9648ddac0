"""The test's side of Telegram: users who write, press buttons, pay and block bots."""

# The waiting helpers take timeout= (the shape tests are written against), like asyncio.wait_for.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import re
import secrets
from typing import TYPE_CHECKING, Any

from .errors import FakeTelegramUsageError
from .formatting import utf16_len
from .handles import FakeGroup
from .inbox import BotRef, Inbox, Predicate, bot_state
from .state import (
    Charge,
    ChatState,
    PayResult,
    SentMessage,
    StoredMessage,
    UserState,
    now,
    random_id,
)
from .world import BotState, QueryState

if TYPE_CHECKING:
    from .server import FakeTelegram

_COMMAND = re.compile(r"(?<![^\s])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")


def _entities(text: str) -> list[dict[str, Any]]:
    """The bot_command entities a Telegram client marks in what a user types."""
    entities = []
    for match in _COMMAND.finditer(text):
        entities.append(
            {
                "type": "bot_command",
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group()),
            }
        )
    return entities


class FakeUser:
    """A Telegram user driven by the test."""

    def __init__(self, tg: FakeTelegram, state: UserState) -> None:
        self._tg = tg
        self.state = state
        self.inbox = Inbox(tg, self._chats)

    def _chats(self) -> list[ChatState]:
        return [chat for (_, user_id), chat in self._tg.private_chats.items() if user_id == self.id]

    @property
    def id(self) -> int:
        return self.state.id

    @property
    def messages(self) -> list[SentMessage]:
        """Messages bots sent to this user, in order, kept current on edits and deletes."""
        return self.inbox.views()

    def _bot(self, bot: BotRef) -> BotState:
        return bot_state(self._tg, bot)

    def _started_chat(self, bot: BotState) -> ChatState:
        if bot.id not in self.state.started:
            raise FakeTelegramUsageError(f"user {self.id} has not started bot {bot.id}")
        return self._tg.private_chat(bot, self.state)

    # writing

    async def send(
        self, text: str, *, bot: BotRef = None, reply_to: int | None = None
    ) -> dict[str, Any]:
        """Write to the bot in private (opening the chat); returns the message as bots see it."""
        state = self._bot(bot)
        if state.id in self.state.blocked:
            raise FakeTelegramUsageError(f"user {self.id} blocked bot {state.id}; unblock() first")
        chat = self._tg.private_chat(state, self.state)
        self.state.started.add(state.id)
        return self._post(chat, text, None, reply_to)

    async def send_to(
        self,
        group: FakeGroup,
        text: str,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """Write in a supergroup (in a forum topic with ``thread_id``)."""
        chat = group.state
        member = chat.members.get(self.id)
        if member is None or member.status == "left":
            raise FakeTelegramUsageError(f"user {self.id} is not a member of {chat.id}")
        if thread_id is not None and chat.is_forum:
            topic = chat.topics.get(thread_id)
            if topic is None:
                raise FakeTelegramUsageError(f"no topic {thread_id} in {chat.id}")
            if topic.closed and not member.is_admin:
                raise FakeTelegramUsageError(f"topic {thread_id} is closed (TOPIC_CLOSED)")
        return self._post(chat, text, thread_id, reply_to)

    def _post(
        self, chat: ChatState, text: str, thread_id: int | None, reply_to: int | None
    ) -> dict[str, Any]:
        if not text.strip():
            raise FakeTelegramUsageError("Telegram clients do not send empty messages")
        content: dict[str, Any] = {"text": text}
        entities = _entities(text)
        if entities:
            content["entities"] = entities
        replied = self._tg.find_message(chat, reply_to) if reply_to else None
        if replied is not None and thread_id is None and chat.is_forum:
            thread_id = replied.thread_id
        message = self._tg.store(chat, self.state, content, thread_id=thread_id, reply_to=replied)
        self._tg.deliver(message)
        return message.json()

    # buttons

    async def press(
        self, message: SentMessage, text: str | None = None, *, data: str | None = None
    ) -> str:
        """Press an inline button (by text fragment or exact callback_data); the query id."""
        stored = self._visible(message)
        buttons = [
            b for row in (stored.inline_markup() or {}).get("inline_keyboard", []) for b in row
        ]
        for button in buttons:
            if data is not None and button.get("callback_data") == data:
                break
            if data is None and text is not None and text in button.get("text", ""):
                break
        else:
            raise FakeTelegramUsageError(
                f"no button {text or data!r} on message {stored.message_id}: "
                f"{[(b.get('text'), b.get('callback_data') or b.get('url')) for b in buttons]}"
            )
        if "callback_data" not in button:
            raise FakeTelegramUsageError(f"button {button.get('text')!r} sends no callback")
        return self._callback(stored, button["callback_data"])

    async def forge_callback(self, message: SentMessage, data: str) -> str:
        """A callback query with any ``data`` on one of this user's messages: what a modified
        client, or a keyboard the bot has since replaced, sends. The bot must not trust it."""
        return self._callback(self._visible(message), data)

    def _callback(self, stored: StoredMessage, data: str) -> str:
        bot = self._tg.bots[stored.bot_id]
        query_id = random_id()
        loop = asyncio.get_running_loop()
        self._tg.callback_queries[query_id] = QueryState(bot.id, self.id, loop.time())
        bot.add_update(
            "callback_query",
            {
                "id": query_id,
                "from": self.state.json(),
                "message": stored.json(),
                "chat_instance": stored.chat.chat_instance,
                "data": data,
            },
        )
        return query_id

    async def wait_callback_answer(self, query_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The answerCallbackQuery parameters the bot answered this query with."""
        query = self._tg.callback_queries[query_id]
        await asyncio.wait_for(query.answered.wait(), timeout)
        assert query.answer is not None
        return query.answer

    def _visible(self, message: SentMessage) -> StoredMessage:
        chat: ChatState | None
        if message.chat_id == self.id:
            chat = self._tg.private_chats.get((message.bot_id, self.id))
        else:
            chat = self._tg.groups.get(message.chat_id)
            if chat is not None and self.id not in chat.members:
                chat = None
        stored = chat.messages.get(message.message_id) if chat is not None else None
        if stored is None or stored.deleted:
            raise FakeTelegramUsageError(f"user {self.id} cannot see message {message.message_id}")
        return stored

    # waiting for the bot

    async def wait_message(
        self,
        predicate: Predicate | None = None,
        timeout: float = 5.0,
        *,
        bot: BotRef = None,
    ) -> SentMessage:
        """The next bot message (or edited version) not taken by an earlier wait that matches."""
        bot_id = bot_state(self._tg, bot).id if bot is not None else None
        return await self.inbox.wait(predicate, timeout, bot_id)

    async def wait_edit(self, message: SentMessage, timeout: float = 5.0) -> SentMessage:
        """The next version of this message after the last one a wait returned."""
        return await self.inbox.wait_edit(message, timeout)

    # payments

    async def pay(self, invoice: SentMessage, *, timeout: float = 10.0) -> PayResult:
        """Pay an invoice: pre_checkout_query, and if the bot says ok, successful_payment."""
        stored = self._visible(invoice)
        if "invoice" not in stored.content or stored.payload is None:
            raise FakeTelegramUsageError(f"message {stored.message_id} is not an invoice")
        if self.id in stored.paid_by:
            raise FakeTelegramUsageError(f"invoice {stored.message_id} is already paid")
        bot = self._tg.bots[stored.bot_id]
        details = stored.content["invoice"]
        answer = await self._pre_checkout(
            bot, stored.payload, details["total_amount"], details["currency"], timeout
        )
        if answer is None:
            return PayResult(False, None, None, None, answered=False)
        if not answer["ok"]:
            return PayResult(False, answer["error_message"], None, None)
        stored.paid_by.add(self.id)
        return self._paid(bot, stored.payload, details["total_amount"], details["currency"], None)

    async def deliver_successful_payment(
        self,
        invoice_payload: str,
        total_amount: int,
        currency: str = "XTR",
        charge_id: str | None = None,
        *,
        bot: BotRef = None,
    ) -> PayResult:
        """A successful_payment message as Telegram would send it, without a pre-checkout.

        Without ``charge_id`` the fake makes a new charge (refundable); an existing charge id
        repeats that payment; an unknown one is a forgery that refundStarPayment will not find.
        """
        state = self._bot(bot)
        self._started_chat(state)
        return self._paid(state, invoice_payload, total_amount, currency, charge_id)

    async def send_pre_checkout(
        self,
        invoice_payload: str,
        total_amount: int,
        currency: str = "XTR",
        *,
        bot: BotRef = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """A raw pre_checkout_query; the bot's answer ({"ok", "error_message"})."""
        state = self._bot(bot)
        self._started_chat(state)
        answer = await self._pre_checkout(state, invoice_payload, total_amount, currency, timeout)
        if answer is None:
            raise TimeoutError(f"bot {state.id} did not answer the pre-checkout query")
        return answer

    async def _pre_checkout(
        self, bot: BotState, payload: str, total_amount: int, currency: str, timeout: float
    ) -> dict[str, Any] | None:
        query_id = random_id()
        loop = asyncio.get_running_loop()
        query = QueryState(bot.id, self.id, loop.time())
        self._tg.pre_checkout_queries[query_id] = query
        bot.add_update(
            "pre_checkout_query",
            {
                "id": query_id,
                "from": self.state.json(),
                "currency": currency,
                "total_amount": total_amount,
                "invoice_payload": payload,
            },
        )
        try:
            await asyncio.wait_for(query.answered.wait(), timeout)
        except TimeoutError:
            return None
        return query.answer

    def _paid(
        self,
        bot: BotState,
        payload: str,
        total_amount: int,
        currency: str,
        charge_id: str | None,
    ) -> PayResult:
        if charge_id is None:
            charge_id = "stx" + secrets.token_urlsafe(40)
            self._tg.charges[charge_id] = Charge(
                charge_id, self.id, bot.id, currency, total_amount, payload
            )
            self._tg.star_transactions.append(("in", self._tg.charges[charge_id]))
        chat = self._tg.private_chat(bot, self.state)
        payment = {
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": f"{self.id}_{len(self._tg.charges)}",
        }
        message = self._tg.store(chat, self.state, {"successful_payment": payment})
        updates = self._tg.deliver(message)
        return PayResult(True, None, charge_id, updates[0] if updates else None)

    # blocking

    def block(self, bot: BotRef = None) -> None:
        """Block the bot: its sends fail with 403 and it gets a my_chat_member update."""
        self._membership(self._bot(bot), blocked=True)

    def unblock(self, bot: BotRef = None) -> None:
        self._membership(self._bot(bot), blocked=False)

    def _membership(self, bot: BotState, *, blocked: bool) -> None:
        if (bot.id in self.state.blocked) == blocked:
            return
        if blocked:
            self.state.blocked.add(bot.id)
        else:
            self.state.blocked.discard(bot.id)
        if bot.id not in self.state.started:
            return
        member = {"user": bot.user.json(), "status": "member"}
        kicked = {"user": bot.user.json(), "status": "kicked", "until_date": 0}
        bot.add_update(
            "my_chat_member",
            {
                "chat": self._tg.private_chat(bot, self.state).json(),
                "from": self.state.json(),
                "date": now(),
                "old_chat_member": member if blocked else kicked,
                "new_chat_member": kicked if blocked else member,
            },
        )
