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

What is modelled and what is not is listed in README-like detail in the module docstrings:
``formatting`` (HTML is parsed exactly, Markdown is not), ``methods.payments`` (Stars only),
``methods.updates`` (long polling, webhooks).
"""

from .client import FakeBot, FakeGroup, FakeUser, Inbox
from .errors import ApiError, FakeTelegramUsageError
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
