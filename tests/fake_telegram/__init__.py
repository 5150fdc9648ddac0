"""A faithful fake of the Telegram Bot API for tests.

A loopback HTTP server (aiohttp) in the test's own event loop that answers
``/bot<token>/<method>`` like api.telegram.org: parameters from a JSON, urlencoded or multipart
body or the query string, case-insensitive method names, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": ..., "description": ...}`` with telegram-bot-api's own texts, and
results that parse into aiogram's models. Bots run their real session, polling or webhook code
against it through ``TelegramAPIServer.from_base(tg.base_url)``; the test plays the users::

    async with FakeTelegram() as tg:
        bot = tg.add_bot("123456:ABC-token", username="vpn_test_bot")
        alice = tg.user(1001, first_name="Alice", language_code="ru")
        await alice.send("/start ref_abc")
        menu = await alice.wait_message(lambda m: "Тариф" in m.text)
        query_id = await alice.press(menu, "Купить")
        invoice = await alice.wait_message(lambda m: m.invoice is not None)
        result = await alice.pay(invoice)

Modelled as Telegram does it (from telegram-bot-api's and tdlib's sources): HTML parse mode,
trimming and limits of texts and captions, inline/reply keyboards and their limits, edits (an
edit without reply_markup drops the inline keyboard; an identical edit is "not modified"),
getUpdates offsets/limits/long polling/allowed_updates and the conflicts, webhooks with the
secret header and the method a webhook may answer with, Stars invoices and charges, forum
topics, privacy mode in groups, bots never seeing bots' messages.

Not modelled: Markdown/MarkdownV2 (kept as sent, no entities); entities Telegram detects in a
bot's text (urls, mentions); inline mode; users editing messages; channels and basic groups;
topics in private chats; payment providers (only "XTR"); media other than photos and documents;
files by URL; the public server's HTTPS/port rules for webhooks (plain http on loopback is
fine here); the 3-second delays telegram-bot-api adds to repeated short polls and conflicts.
"""

from .client import FakeUser
from .errors import ApiError, FakeTelegramUsageError
from .handles import FakeBot, FakeGroup
from .inbox import Inbox
from .server import FakeTelegram
from .state import PayResult, SentMessage, Topic, WebhookDelivery
from .world import Call

__all__ = [
    "ApiError",
    "Call",
    "FakeBot",
    "FakeGroup",
    "FakeTelegram",
    "FakeTelegramUsageError",
    "FakeUser",
    "Inbox",
    "PayResult",
    "SentMessage",
    "Topic",
    "WebhookDelivery",
]
