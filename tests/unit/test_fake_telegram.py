"""The fake Bot API, driven by a real aiogram Bot so that aiogram parses every result.

A request middleware also walks each parsed result and fails the test on any field aiogram does
not know (a misspelt field would otherwise be silently accepted as "extra").
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.methods import SendMessage
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    BufferedInputFile,
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    ReplyParameters,
    TelegramObject,
    TransactionPartnerUser,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from PIL import Image

from tests.fake_telegram import FakeTelegram, FakeTelegramUsageError, FakeUser

TOKEN = "123456:ABC-token"
# Fields telegram-bot-api still sends for old clients that aiogram no longer models.
LEGACY_FIELDS = {"can_manage_voice_chats", "can_send_media_messages"}


def unknown_fields(value: Any, path: str) -> list[str]:
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in unknown_fields(item, f"{path}[{i}]")]
    if not isinstance(value, TelegramObject):
        return []
    found = [f"{path}.{name}" for name in value.model_extra or {} if name not in LEGACY_FIELDS]
    for name in type(value).model_fields:
        found += unknown_fields(getattr(value, name), f"{path}.{name}")
    return found


class SchemaGuard(BaseRequestMiddleware):
    def __init__(self) -> None:
        self.problems: list[str] = []

    async def __call__(self, make_request: Any, bot: Bot, method: Any) -> Any:
        result = await make_request(bot, method)
        self.problems += unknown_fields(result, method.__api_method__)
        return result


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(webhook_retry_delay=0.05) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    tg.add_bot(TOKEN, username="vpn_test_bot")
    guard = SchemaGuard()
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
    session.middleware(guard)
    client = Bot(TOKEN, session=session)
    yield client
    await session.close()
    assert guard.problems == []


@pytest.fixture
async def alice(tg: FakeTelegram, bot: Bot) -> FakeUser:
    user = tg.user(1001, first_name="Alice", language_code="ru", username="alice")
    await user.send("/start")
    return user


def png(width: int = 400, height: int = 300) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def keyboard(*buttons: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d)] for t, d in buttons]
    )


async def raw(tg: FakeTelegram, method: str, token: str = TOKEN, **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            kwargs.pop("http_method", "POST"), f"{tg.base_url}/bot{token}/{method}", **kwargs
        ) as response,
    ):
        return response.status, await response.json()


# the HTTP surface


async def test_tokens_methods_and_transports(tg: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123456, True, "vpn_test_bot")
    assert me.can_join_groups is True

    assert await raw(tg, "getMe", token="999:nope") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    with pytest.raises(TelegramUnauthorizedError):
        await Bot("999:nope", session=bot.session).get_me()
    assert await raw(tg, "sendMessagee") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found"},
    )
    status, body = await raw(tg, "GETME", http_method="GET")
    assert status == 200 and body["result"]["id"] == 123456

    alice = tg.user(1001, first_name="Alice")
    await alice.send("hi")
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    as_json = await raw(
        tg, "sendMessage", json={"chat_id": 1001, "text": "j", "reply_markup": markup}
    )
    as_form = await raw(
        tg, "sendMessage", data={"chat_id": "1001", "text": "f", "reply_markup": json.dumps(markup)}
    )
    as_query = await raw(
        tg, "sendMessage", http_method="GET", params={"chat_id": "1001", "text": "q"}
    )
    for (status, body), text in zip((as_json, as_form, as_query), "jfq", strict=True):
        assert status == 200 and body["ok"] is True and body["result"]["text"] == text
    assert as_form[1]["result"]["reply_markup"] == markup
    assert [m.text for m in alice.messages] == ["j", "f", "q"]
    assert tg.calls[-1] == ("sendMessage", {"chat_id": "1001", "text": "q"})
    assert tg.calls[-2].params["reply_markup"] == markup


# sending and formatting


async def test_html_is_parsed_into_entities(bot: Bot, alice: FakeUser) -> None:
    sent = await bot.send_message(
        1001,
        '<b>Тариф</b> «Год» — <i>1 200 ₽</i> &amp; <a href="https://example.com">сайт</a> '
        "<tg-spoiler>x</tg-spoiler> &#128512; a & b > c <code>k</code>",
        parse_mode="HTML",
    )
    assert sent.text == "Тариф «Год» — 1 200 ₽ & сайт x 😀 a & b > c k"
    kinds = [(e.type, e.offset, e.length) for e in sent.entities or []]
    assert kinds == [
        ("bold", 0, 5),
        ("italic", 14, 7),
        ("text_link", 24, 4),
        ("spoiler", 29, 1),
        ("code", 44, 1),  # the emoji is two UTF-16 code units
    ]
    assert sent.entities is not None and sent.entities[2].url == "https://example.com/"
    view = await alice.wait_message()
    assert view.text == sent.text and view.parse_mode == "HTML"


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("<b>bold", "can't parse entities: Can't find end tag corresponding to start tag b"),
        ("<foo>x</foo>", 'can\'t parse entities: Unsupported start tag "foo" at byte offset 0'),
        ("1 < 2", 'can\'t parse entities: Unsupported start tag "" at byte offset 2'),
        (
            "<b>x</i>",
            "can't parse entities: Unmatched end tag at byte offset 4, "
            'expected "</b>", found "</i>"',
        ),
        ("x</b>", "can't parse entities: Unexpected end tag at byte offset 1"),
        (
            '<span class="x">y</span>',
            'can\'t parse entities: Tag "span" must have class "tg-spoiler" at byte offset 0',
        ),
        ("Привет <b", "can't parse entities: Unclosed start tag at byte offset 13"),
    ],
)
async def test_bad_html_is_refused(bot: Bot, alice: FakeUser, html: str, error: str) -> None:
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_message(1001, html, parse_mode="HTML")
    assert caught.value.message == f"Bad Request: {error}"
    assert alice.messages == []


async def test_text_limits_and_unknown_chats(tg: FakeTelegram, bot: Bot, alice: FakeUser) -> None:
    for text, error in [
        ("", "Bad Request: message text is empty"),
        ("   \n", "Bad Request: message must be non-empty"),
        ("я" * 4097, "Bad Request: message is too long"),
    ]:
        with pytest.raises(TelegramBadRequest) as caught:
            await bot.send_message(1001, text)
        assert caught.value.message == error
    assert (await bot.send_message(1001, "  я" * 1365 + "я ")).text == ("  я" * 1365).strip() + "я"

    tg.user(2002, first_name="Bob")  # exists, but never started the bot
    for chat_id in (2002, 3003):
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await bot.send_message(chat_id, "hi")
    with pytest.raises(TelegramBadRequest, match="unsupported parse_mode"):
        await bot.send_message(1001, "x", parse_mode="HTMl5")


async def test_keyboards_and_callback_data_limit(bot: Bot, alice: FakeUser) -> None:
    limit = "ж" * 32  # 64 bytes
    sent = await bot.send_message(1001, "ok", reply_markup=keyboard(("A", limit)))
    assert sent.reply_markup is not None
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_message(1001, "no", reply_markup=keyboard(("A", limit + "x")))
    assert caught.value.message == "Bad Request: BUTTON_DATA_INVALID"
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_message(1001, "no", reply_markup=keyboard(("A", "")))
    assert caught.value.message == (
        "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the "
        "inline keyboard"
    )

    reply = ReplyKeyboardMarkup(keyboard=[[KeyboardButton(text="Меню")]], resize_keyboard=True)
    sent = await bot.send_message(1001, "menu", reply_markup=reply)
    assert sent.reply_markup is None  # Message.reply_markup only ever holds inline keyboards
    await bot.send_message(1001, "bye", reply_markup=ReplyKeyboardRemove())
    await bot.send_message(1001, "?", reply_markup=ForceReply())
    views = alice.messages
    assert views[0].buttons == [("A", limit)]
    assert views[1].reply_markup == {"keyboard": [[{"text": "Меню"}]], "resize_keyboard": True}
    assert views[2].reply_markup == {"remove_keyboard": True}
    assert views[3].reply_markup == {"force_reply": True}


async def test_edits_and_deletes(bot: Bot, alice: FakeUser) -> None:
    sent = await bot.send_message(
        1001, "<b>Plan</b>", parse_mode="HTML", reply_markup=keyboard(("Buy", "buy"))
    )
    view = await alice.wait_message()
    assert view.version == 0 and view.buttons == [("Buy", "buy")]

    with pytest.raises(TelegramBadRequest) as caught:
        await bot.edit_message_text(
            text="<b>Plan</b>",
            chat_id=1001,
            message_id=sent.message_id,
            parse_mode="HTML",
            reply_markup=keyboard(("Buy", "buy")),
        )
    assert caught.value.message == (
        "Bad Request: message is not modified: specified new message content and reply markup "
        "are exactly the same as a current content and reply markup of the message"
    )
    # The same text without the keyboard is a change: an edit without reply_markup removes it.
    edited = await bot.edit_message_text(
        text="<b>Plan</b>", chat_id=1001, message_id=sent.message_id, parse_mode="HTML"
    )
    assert edited.edit_date is not None and edited.reply_markup is None
    assert (await alice.wait_edit(view)).buttons == []
    assert view.edited and view.version == 1

    edited = await bot.edit_message_reply_markup(
        chat_id=1001, message_id=sent.message_id, reply_markup=keyboard(("Pay", "pay"))
    )
    assert edited.reply_markup is not None
    again = await alice.wait_message(lambda m: m.buttons == [("Pay", "pay")])
    assert again is view and view.text == "Plan"

    with pytest.raises(TelegramBadRequest, match="there is no caption in the message to edit"):
        await bot.edit_message_caption(chat_id=1001, message_id=sent.message_id, caption="c")
    user_message = await alice.send("mine")
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text(text="x", chat_id=1001, message_id=user_message["message_id"])

    assert await bot.delete_message(1001, sent.message_id) is True
    assert view.deleted
    for call in (
        bot.delete_message(1001, sent.message_id),
        bot.edit_message_text(text="x", chat_id=1001, message_id=sent.message_id),
    ):
        with pytest.raises(TelegramBadRequest, match="not found"):
            await call
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(text="x", chat_id=1001, message_id=999)


async def test_replies_copies_forwards_and_actions(bot: Bot, alice: FakeUser) -> None:
    original = await bot.send_message(1001, "original")
    reply = await bot.send_message(
        1001, "reply", reply_parameters=ReplyParameters(message_id=original.message_id)
    )
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.message_id == original.message_id
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(1001, "x", reply_parameters=ReplyParameters(message_id=999))

    copied = await bot.copy_message(1001, 1001, original.message_id)
    assert copied.message_id == reply.message_id + 1
    forwarded = await bot.forward_message(1001, 1001, original.message_id)
    assert forwarded.forward_origin is not None and forwarded.forward_origin.type == "user"
    assert [m.text for m in alice.messages] == ["original", "reply", "original", "original"]
    with pytest.raises(TelegramBadRequest, match="message to copy not found"):
        await bot.copy_message(1001, 1001, 999)

    assert await bot.send_chat_action(1001, "typing") is True
    with pytest.raises(TelegramBadRequest, match="wrong parameter action in request"):
        await bot.send_chat_action(1001, "dancing")


async def test_photos_documents_and_files(tg: FakeTelegram, bot: Bot, alice: FakeUser) -> None:
    image = png(1000, 500)
    photo = await bot.send_photo(
        1001, BufferedInputFile(image, "qr.png"), caption="<b>QR</b>", parse_mode="HTML"
    )
    assert photo.photo is not None
    assert [(p.width, p.height) for p in photo.photo] == [
        (90, 45),
        (320, 160),
        (800, 400),
        (1000, 500),
    ]
    assert photo.caption == "QR" and photo.caption_entities is not None
    assert len({p.file_unique_id for p in photo.photo}) == 4
    again = await bot.send_photo(1001, photo.photo[0].file_id)
    assert again.photo is not None and again.photo[-1].file_id == photo.photo[-1].file_id

    config = b"[Interface]\nPrivateKey = x\n"
    document = await bot.send_document(1001, BufferedInputFile(config, "wg0.conf"), caption="cfg")
    assert document.document is not None
    assert (document.document.file_name, document.document.file_size) == ("wg0.conf", len(config))
    assert document.document.mime_type

    views = alice.messages
    assert views[0].photo == image and views[0].text == "QR"
    assert views[2].document is not None and views[2].document["data"] == config
    assert views[2].document["file_name"] == "wg0.conf"

    file = await bot.get_file(document.document.file_id)
    assert file.file_path and file.file_size == len(config)
    downloaded = await bot.download(document.document.file_id)
    assert downloaded is not None and downloaded.read() == config

    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_photo(1001, document.document.file_id)
    assert caught.value.message == "Bad Request: can't use file of type Document as Photo"
    with pytest.raises(TelegramBadRequest, match="wrong file identifier/HTTP URL specified"):
        await bot.send_document(1001, "no-such-file-id")
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(1001, BufferedInputFile(b"not an image", "x.png"))
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_document(1001, BufferedInputFile(b"x", "x.txt"), caption="c" * 1025)
    with pytest.raises(TelegramBadRequest, match="there is no text in the message to edit"):
        await bot.edit_message_text(text="t", chat_id=1001, message_id=photo.message_id)
    edited = await bot.edit_message_caption(
        chat_id=1001, message_id=photo.message_id, caption="new"
    )
    assert edited.caption == "new" and alice.messages[0].text == "new"


# getting updates


async def test_get_updates_offsets_limits_and_filters(tg: FakeTelegram, bot: Bot) -> None:
    alice = tg.user(1001, first_name="Alice")
    for text in ("1", "2", "3"):
        await alice.send(text)
    first = await bot.get_updates(limit=2)
    assert [u.message.text for u in first if u.message] == ["1", "2"]
    assert tg.updates_confirmed(TOKEN) == 0
    rest = await bot.get_updates(offset=first[1].update_id + 1)
    assert [u.message.text for u in rest if u.message] == ["3"]
    assert tg.updates_confirmed(TOKEN) == first[1].update_id

    await alice.send("4")
    last = await bot.get_updates(offset=-1)
    assert [u.message.text for u in last if u.message] == ["4"]
    assert tg.updates_confirmed(TOKEN) == rest[0].update_id

    # allowed_updates is remembered; updates of other kinds are never queued.
    await bot.get_updates(offset=last[0].update_id + 1, allowed_updates=["callback_query"])
    await alice.send("ignored")
    assert await bot.get_updates() == []
    sent = await bot.send_message(1001, "m", reply_markup=keyboard(("A", "a")))
    await alice.press(await alice.wait_message(), data="a")
    [update] = await bot.get_updates(allowed_updates=[])
    assert update.callback_query is not None and update.callback_query.message is not None
    assert update.callback_query.message.message_id == sent.message_id
    await alice.send("back to defaults")
    assert [
        u.message.text for u in await bot.get_updates(offset=update.update_id + 1) if u.message
    ] == ["back to defaults"]


async def test_long_poll_answers_on_arrival_and_conflicts(tg: FakeTelegram, bot: Bot) -> None:
    alice = tg.user(1001, first_name="Alice")
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.05)
    await alice.send("wake up")
    updates = await asyncio.wait_for(poll, 2)
    assert [u.message.text for u in updates if u.message] == ["wake up"]
    assert loop.time() - started < 2

    offset = updates[0].update_id + 1
    first = asyncio.create_task(bot.get_updates(offset=offset, timeout=10))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(bot.get_updates(offset=offset, timeout=10))
    with pytest.raises(TelegramConflictError) as caught:
        await asyncio.wait_for(first, 2)
    assert caught.value.message == (
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
        "is running"
    )
    await alice.send("second")
    assert [u.message.text for u in await asyncio.wait_for(second, 2) if u.message] == ["second"]


async def test_dispatcher_polling_round_trip(tg: FakeTelegram, bot: Bot) -> None:
    router = Router()

    @router.message(F.text.startswith("/start"))
    async def start(message: Message) -> None:
        await message.answer("Тариф: 50 ⭐", reply_markup=keyboard(("Купить", "plan:1")))

    @router.callback_query(F.data == "plan:1")
    async def buy(query: CallbackQuery) -> None:
        await query.answer("Счёт")
        assert query.message is not None
        await bot.send_invoice(
            query.message.chat.id,
            title="VPN 30 дней",
            description="Доступ к VPN",
            payload="plan:1:u1001",
            currency="XTR",
            prices=[LabeledPrice(label="30 дней", amount=50)],
        )

    @router.pre_checkout_query()
    async def checkout(query: PreCheckoutQuery) -> None:
        await query.answer(ok=query.invoice_payload.startswith("plan:"))

    @router.message(F.successful_payment)
    async def paid(message: Message) -> None:
        assert message.successful_payment is not None
        await message.answer(f"Оплачено {message.successful_payment.total_amount} ⭐")

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
    )
    try:
        alice = tg.user(1001, first_name="Alice", language_code="ru")
        await alice.send("/start ref_abc")
        menu = await alice.wait_message(lambda m: "Тариф" in m.text)
        query_id = await alice.press(menu, "Купить")
        assert (await alice.wait_callback_answer(query_id))["text"] == "Счёт"
        invoice = await alice.wait_message(lambda m: m.invoice is not None)
        assert invoice.invoice == {
            "title": "VPN 30 дней",
            "description": "Доступ к VPN",
            "start_parameter": "",
            "currency": "XTR",
            "total_amount": 50,
        }
        result = await alice.pay(invoice)
        assert result.ok and result.charge_id and result.charge_id.startswith("stx")
        assert (await alice.wait_message()).text == "Оплачено 50 ⭐"
        with pytest.raises(FakeTelegramUsageError, match="already paid"):
            await alice.pay(invoice)
    finally:
        await dispatcher.stop_polling()
        await polling
    sent = {call.method for call in tg.calls}
    assert {
        "getMe",
        "getUpdates",
        "sendMessage",
        "answerCallbackQuery",
        "sendInvoice",
        "answerPreCheckoutQuery",
    } <= sent
    assert tg.updates_confirmed(TOKEN) > 0


async def test_webhook_push_with_secret(tg: FakeTelegram, bot: Bot) -> None:
    seen: list[str] = []
    router = Router()

    @router.message()
    async def echo(message: Message) -> SendMessage:
        seen.append(message.text or "")
        return message.answer(f"echo {message.text}")  # answered in the webhook's reply

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    app = web.Application()
    SimpleRequestHandler(dispatcher, bot, secret_token="s3cr3t_-Token").register(app, "/hook")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        with pytest.raises(TelegramBadRequest, match="secret token contains unallowed characters"):
            await bot.set_webhook(url, secret_token="no spaces")
        with pytest.raises(TelegramRetryAfter):  # a second setWebhook within a second
            await bot.set_webhook(url, secret_token="s3cr3t_-Token")
        tg.set_webhook_interval = 0.0
        assert await bot.set_webhook(url, secret_token="s3cr3t_-Token") is True
        with pytest.raises(
            TelegramConflictError, match="can't use getUpdates method while webhook"
        ):
            await bot.get_updates()
        alice = tg.user(1001, first_name="Alice")
        await alice.send("ping")
        assert (await alice.wait_message()).text == "echo ping"
        assert seen == ["ping"]
        [delivery] = tg.webhook_deliveries
        assert delivery.status == 200 and delivery.error is None
        assert tg.updates_confirmed(TOKEN) == delivery.update_id
        info = await bot.get_webhook_info()
        assert (info.url, info.pending_update_count) == (url, 0)

        # A wrong secret: aiogram answers 401 and the fake keeps retrying the same update.
        await bot.set_webhook(url, secret_token="wrong")
        await alice.send("again")
        for _ in range(100):
            if len(tg.webhook_deliveries) >= 3:
                break
            await asyncio.sleep(0.02)
        assert {d.status for d in tg.webhook_deliveries[1:]} == {401}
        assert len({d.update_id for d in tg.webhook_deliveries[1:]}) == 1
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 1
        assert info.last_error_message == "Wrong response from the webhook: 401 Unauthorized"

        assert await bot.delete_webhook(drop_pending_updates=True) is True
        assert (await bot.get_webhook_info()).url == ""
        assert await bot.get_updates() == []
        assert seen == ["ping"]
    finally:
        await runner.cleanup()


# blocking, rate limits


async def test_blocked_user_and_rate_limit(tg: FakeTelegram, bot: Bot, alice: FakeUser) -> None:
    alice.block()
    with pytest.raises(TelegramForbiddenError) as caught:
        await bot.send_message(1001, "promo")
    assert caught.value.message == "Forbidden: bot was blocked by the user"
    assert (await bot.get_chat(1001)).id == 1001  # reading the chat still works
    alice.unblock()
    kinds = [
        u.my_chat_member.new_chat_member.status for u in await bot.get_updates() if u.my_chat_member
    ]
    assert kinds == ["kicked", "member"]
    await bot.send_message(1001, "welcome back")

    tg.rate_limit("sendMessage", times=1, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as retry:
        await bot.send_message(1001, "flood")
    assert retry.value.retry_after == 3
    assert retry.value.message.endswith("Original description: Too Many Requests: retry after 3")
    await bot.send_message(1001, "after the wait")
    assert [m.text for m in alice.messages] == ["welcome back", "after the wait"]


# payments


async def test_stars_invoice_rules(bot: Bot, alice: FakeUser) -> None:
    good: dict[str, Any] = {
        "chat_id": 1001,
        "title": "VPN",
        "description": "30 days",
        "payload": "p1",
        "currency": "XTR",
        "prices": [LabeledPrice(label="30 days", amount=100)],
    }
    for change, error in [
        (
            {"prices": [LabeledPrice(label="a", amount=50), LabeledPrice(label="b", amount=50)]},
            "STARS_INVOICE_INVALID",
        ),
        ({"provider_token": "123:TEST"}, "STARS_INVOICE_INVALID"),
        ({"currency": "RUB"}, "PAYMENT_PROVIDER_INVALID"),
        ({"payload": "p" * 129}, "INVOICE_PAYLOAD_INVALID"),
        ({"title": "t" * 33}, "TITLE_INVALID"),
        ({"prices": [LabeledPrice(label="x", amount=0)]}, "total price must be positive"),
        ({"prices": []}, "there must be at least one price"),
    ]:
        with pytest.raises(TelegramBadRequest) as caught:
            await bot.send_invoice(**{**good, **change})
        assert caught.value.message == f"Bad Request: {error}", change
    assert alice.messages == []
    message = await bot.send_invoice(**good)
    assert message.invoice is not None and message.invoice.total_amount == 100


async def test_pre_checkout_payments_and_refunds(
    tg: FakeTelegram, bot: Bot, alice: FakeUser
) -> None:
    await bot.send_invoice(1001, "VPN", "30 days", "p1", "XTR", [LabeledPrice(label="x", amount=7)])
    invoice = await alice.wait_message(lambda m: m.invoice is not None)
    paying = asyncio.create_task(alice.pay(invoice))
    [query] = [
        u.pre_checkout_query for u in await bot.get_updates(timeout=2) if u.pre_checkout_query
    ]
    assert (query.invoice_payload, query.total_amount, query.currency) == ("p1", 7, "XTR")
    with pytest.raises(TelegramBadRequest, match='parameter "error_message" is required'):
        await bot.answer_pre_checkout_query(query.id, ok=False)
    await bot.answer_pre_checkout_query(query.id, ok=False, error_message="Нет мест")
    declined = await paying
    assert (declined.ok, declined.error_message, declined.charge_id) == (False, "Нет мест", None)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_pre_checkout_query(query.id, ok=True)

    paying = asyncio.create_task(alice.pay(invoice))
    [update] = await bot.get_updates(offset=-1, timeout=2)
    assert update.pre_checkout_query is not None
    await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    paid = await paying
    assert paid.ok and paid.charge_id and paid.update is not None
    [update] = await bot.get_updates(offset=update.update_id + 1)
    assert update.message is not None and update.message.successful_payment is not None
    assert update.message.successful_payment.telegram_payment_charge_id == paid.charge_id

    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(1001, "stxNOPE")
    assert await bot.refund_star_payment(1001, paid.charge_id) is True
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(1001, paid.charge_id)
    [update] = await bot.get_updates(offset=update.update_id + 1)
    assert update.message is not None and update.message.refunded_payment is not None

    forged = await alice.deliver_successful_payment("p1", 7, charge_id="stxFORGED")
    repeat = await alice.deliver_successful_payment("p1", 7, charge_id=paid.charge_id)
    fresh = await alice.deliver_successful_payment("p2", 9)
    charges = [
        u.message.successful_payment.telegram_payment_charge_id
        for u in await bot.get_updates(offset=update.update_id + 1)
        if u.message and u.message.successful_payment
    ]
    assert charges == [forged.charge_id, repeat.charge_id, fresh.charge_id]
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(1001, "stxFORGED")
    assert fresh.charge_id is not None and await bot.refund_star_payment(1001, fresh.charge_id)

    # The bot's Star ledger: real charges and their refunds, oldest first; no forged ones.
    ledger = (await bot.get_star_transactions()).transactions
    assert [(t.id, t.amount, t.source is not None) for t in ledger] == [
        (paid.charge_id, 7, True),
        (paid.charge_id, 7, False),
        (fresh.charge_id, 9, True),
        (fresh.charge_id, 9, False),
    ]
    assert isinstance(ledger[2].source, TransactionPartnerUser)
    assert ledger[2].source.invoice_payload == "p2" and ledger[2].source.user.id == 1001
    assert [t.id for t in (await bot.get_star_transactions(offset=3, limit=5)).transactions] == [
        fresh.charge_id
    ]
    with pytest.raises(TelegramBadRequest, match=r"(?i)invalid limit"):
        await bot.get_star_transactions(limit=101)

    answer = asyncio.create_task(alice.send_pre_checkout("p3", 5))
    [update] = await bot.get_updates(offset=-1, timeout=2)
    assert update.pre_checkout_query is not None
    await bot.answer_pre_checkout_query(update.pre_checkout_query.id, ok=True)
    assert await answer == {"ok": True, "error_message": None}


async def test_callback_answers(bot: Bot, alice: FakeUser) -> None:
    await bot.send_message(
        1001, "menu", reply_markup=keyboard(("Купить", "buy"), ("Назад", "back"))
    )
    menu = await alice.wait_message()
    query_id = await alice.press(menu, data="back")
    with pytest.raises(FakeTelegramUsageError, match="no button"):
        await alice.press(menu, "Оплатить")
    with pytest.raises(TelegramBadRequest, match="MESSAGE_TOO_LONG"):
        await bot.answer_callback_query(query_id, text="x" * 201)
    assert await bot.answer_callback_query(query_id, text="ок", show_alert=True)
    assert await alice.wait_callback_answer(query_id) == {
        "text": "ок",
        "show_alert": True,
        "url": None,
        "cache_time": 0,
    }
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.answer_callback_query(query_id)
    assert caught.value.message == (
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    )


# groups and forum topics


async def test_forum_topics(tg: FakeTelegram, bot: Bot) -> None:
    staff = tg.user(7, first_name="Staff")
    owner = tg.user(8, first_name="Owner")
    group = tg.supergroup(
        -1001234, title="Support", forum=True, admins=[123456], members=[staff], creator=owner
    )
    plain = tg.supergroup(-1005555, title="Chat", admins=[123456])

    topic = await bot.create_forum_topic(-1001234, "Ticket #1 — Alice")
    assert topic.icon_color == 7322096 and topic.message_thread_id in group.topics
    created = await group.wait_message(lambda m: "forum_topic_created" in m.raw)
    assert created.message_id == topic.message_thread_id == created.thread_id

    sent = await bot.send_message(
        -1001234, "Новое обращение", message_thread_id=topic.message_thread_id
    )
    assert sent.message_thread_id == topic.message_thread_id and sent.is_topic_message
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(-1001234, "x", message_thread_id=99999)
    with pytest.raises(TelegramBadRequest, match="the chat is not a forum"):
        await bot.create_forum_topic(plain.id, "x")

    await staff.send_to(group, "Здравствуйте", thread_id=topic.message_thread_id)
    [update] = await bot.get_updates()
    assert (
        update.message is not None and update.message.message_thread_id == topic.message_thread_id
    )

    assert await bot.edit_forum_topic(-1001234, topic.message_thread_id, name="Ticket #1 (closed)")
    with pytest.raises(TelegramBadRequest, match="TOPIC_NOT_MODIFIED"):
        await bot.edit_forum_topic(-1001234, topic.message_thread_id, name="Ticket #1 (closed)")
    assert await bot.close_forum_topic(-1001234, topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="TOPIC_NOT_MODIFIED"):
        await bot.close_forum_topic(-1001234, topic.message_thread_id)
    assert group.topics[topic.message_thread_id].closed
    with pytest.raises(FakeTelegramUsageError, match="TOPIC_CLOSED"):
        await staff.send_to(group, "late", thread_id=topic.message_thread_id)
    assert await bot.reopen_forum_topic(-1001234, topic.message_thread_id)
    assert await bot.delete_forum_topic(-1001234, topic.message_thread_id)
    assert topic.message_thread_id not in group.topics
    with pytest.raises(TelegramBadRequest, match="TOPIC_ID_INVALID"):
        await bot.close_forum_topic(-1001234, topic.message_thread_id)
    service = [
        next(k for k in m.raw if k.startswith("forum_topic"))
        for m in group.messages
        if any(k.startswith("forum_topic") for k in m.raw)
    ]
    assert service == [
        "forum_topic_created",
        "forum_topic_edited",
        "forum_topic_closed",
        "forum_topic_reopened",
    ]

    group.add(bot.id, "member")  # demoted: no right to manage topics any more
    with pytest.raises(TelegramBadRequest, match="not enough rights to create a topic"):
        await bot.create_forum_topic(-1001234, "x")

    assert (await bot.get_chat_member(-1001234, 8)).status == "creator"
    assert (await bot.get_chat_member(-1001234, 7)).status == "member"
    assert (await bot.get_chat_member(plain.id, 123456)).status == "administrator"
    assert (await bot.get_chat_member(plain.id, 7)).status == "left"
    with pytest.raises(TelegramBadRequest, match="user not found"):
        await bot.get_chat_member(-1001234, 4242)
    chat = await bot.get_chat(-1001234)
    assert (chat.type, chat.title, chat.is_forum) == ("supergroup", "Support", True)
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.get_chat(-1009999)
    outsider = tg.supergroup(-1007777, title="Elsewhere")
    with pytest.raises(TelegramForbiddenError, match="bot is not a member of the supergroup chat"):
        await bot.send_message(outsider.id, "hi")


async def test_commands_and_private_chat_info(bot: Bot, alice: FakeUser) -> None:
    commands = [
        BotCommand(command="start", description="Начать"),
        BotCommand(command="buy", description="Купить"),
    ]
    assert await bot.set_my_commands(commands)
    assert await bot.set_my_commands(
        commands[:1], scope=BotCommandScopeChat(chat_id=1001), language_code="ru"
    )
    assert [c.command for c in await bot.get_my_commands()] == ["start", "buy"]
    scoped = await bot.get_my_commands(scope=BotCommandScopeChat(chat_id=1001), language_code="ru")
    assert [c.command for c in scoped] == ["start"]
    for bad, error in [("Start", "BOT_COMMAND_INVALID"), ("x" * 33, "BOT_COMMAND_INVALID")]:
        with pytest.raises(TelegramBadRequest, match=error):
            await bot.set_my_commands([BotCommand(command=bad, description="d")])
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_DESCRIPTION_INVALID"):
        await bot.set_my_commands([BotCommand(command="ok", description=" ")])
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []

    chat = await bot.get_chat(1001)
    assert (chat.type, chat.first_name, chat.username) == ("private", "Alice", "alice")
    member = await bot.get_chat_member(1001, 1001)
    assert member.status == "member" and member.user.language_code == "ru"


async def test_wait_message_takes_each_version_once(bot: Bot, alice: FakeUser) -> None:
    first = await bot.send_message(1001, "first")
    await bot.send_message(1001, "second")
    assert (await alice.wait_message(lambda m: m.text == "second")).text == "second"
    assert (await alice.wait_message()).text == "first"  # skipped earlier, still not taken
    with pytest.raises(TimeoutError, match="no matching bot message"):
        await alice.wait_message(timeout=0.05)
    await bot.edit_message_text(text="first, edited", chat_id=1001, message_id=first.message_id)
    assert (await alice.wait_message()).text == "first, edited"
    with pytest.raises(TimeoutError):
        await alice.wait_edit(alice.messages[0], timeout=0.05)


async def test_privacy_mode_in_groups(tg: FakeTelegram, bot: Bot) -> None:
    carol = tg.user(9, first_name="Carol")
    group = tg.supergroup(-1003333, title="Chat", members=[123456, carol])
    await carol.send_to(group, "hello everyone")
    await carol.send_to(group, "/help@vpn_test_bot")
    await carol.send_to(group, "/help@other_bot")
    notice = await bot.send_message(group.id, "I am here")
    await carol.send_to(group, "thanks", reply_to=notice.message_id)
    texts = [u.message.text for u in await bot.get_updates() if u.message]
    assert texts == ["/help@vpn_test_bot", "thanks"]
    assert (await group.wait_message()).text == "I am here"
