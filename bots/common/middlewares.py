"""The middlewares every bot runs, outermost first:

1. :class:`ThrottlingMiddleware` — per-user flood control (payments are never held back);
2. :class:`ErrorMiddleware` — the one place where failures become user texts;
3. :class:`ServicesMiddleware` — puts the controller's services into handler data;
4. :class:`UserMiddleware` — registers the user (with a deep-link referral), refuses banned
   users, and picks the texts' language.

All are registered on ``dispatcher.update.outer_middleware`` so they see every update type.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.types import CallbackQuery, Message, PreCheckoutQuery, TelegramObject, Update
from aiogram.types import User as TgUser

from bots.common.context import BotUser, UserCache
from bots.common.i18n import I18n, for_language
from bots.common.throttling import RateCounter
from controller.domain.errors import DomainError
from controller.services import Services
from controller.services.users import TelegramProfile

log = structlog.get_logger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

_START = re.compile(r"^/start(?:@\w+)?\s+(\S{1,64})\s*$")
REFERRAL_PREFIX = "ref_"


class RetryLater(Exception):
    """This update could not be handled now and must not be dropped: the webhook answers
    500 so that Telegram delivers it again (polling can only log it)."""


def start_payload(update: Update) -> str | None:
    """The deep-link payload of a ``/start PAYLOAD`` message, if this update is one."""
    message = update.message
    if message is None or not message.text:
        return None
    match = _START.match(message.text)
    return match.group(1) if match else None


def referral_code_of(update: Update) -> str | None:
    payload = start_payload(update)
    if payload is None or not payload.startswith(REFERRAL_PREFIX):
        return None
    code = payload[len(REFERRAL_PREFIX) :]
    return code if re.fullmatch(r"[A-Za-z0-9_-]{1,32}", code) else None


def is_payment(update: Update) -> bool:
    """Updates that move money: never throttled, never dropped."""
    if update.pre_checkout_query is not None:
        return True
    message = update.message
    return message is not None and (
        message.successful_payment is not None or message.refunded_payment is not None
    )


def error_text(i18n: I18n, error: DomainError) -> str:
    """The most specific translated text for a domain error (its class, then its parents)."""
    for cls in type(error).__mro__:
        code = getattr(cls, "code", None)
        if isinstance(code, str) and i18n.has(f"error.{code}"):
            return i18n.t(f"error.{code}")
    return i18n.t("error.domain_error")


async def tell(update: Update, text: str) -> None:
    """Show ``text`` where the user is looking: an alert on a button press, else a message."""
    event = update.event
    if isinstance(event, CallbackQuery):
        try:
            await event.answer(text[:200], show_alert=True)
            return
        except TelegramBadRequest:  # already answered, or too old: fall back to a message
            pass
        if event.message is not None and event.from_user is not None and event.bot is not None:
            await event.bot.send_message(event.from_user.id, text)
    elif isinstance(event, PreCheckoutQuery):
        await event.answer(ok=False, error_message=text[:255])
    elif isinstance(event, Message) and event.chat.type == "private":
        await event.answer(text)


class ErrorMiddleware(BaseMiddleware):
    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        try:
            return await handler(event, data)
        except RetryLater:
            raise
        except DomainError as exc:
            i18n = data.get("i18n") or for_language(None)
            log.info("bot_refused", code=exc.code, reason=exc.message, update_id=event.update_id)
            await self._tell(event, error_text(i18n, exc))
        except TelegramForbiddenError:
            log.info("bot_blocked_by_user", update_id=event.update_id)
        except TelegramBadRequest as exc:
            if "message is not modified" in exc.message:
                return None  # the same button pressed twice: the screen is already right
            log.exception("bot_request_failed", update_id=event.update_id)
            await self._tell(event, (data.get("i18n") or for_language(None)).t("error.internal"))
        except Exception:
            log.exception("bot_handler_failed", update_id=event.update_id)
            await self._tell(event, (data.get("i18n") or for_language(None)).t("error.internal"))
        return None

    @staticmethod
    async def _tell(update: Update, text: str) -> None:
        try:
            await tell(update, text)
        except (TelegramForbiddenError, TelegramBadRequest, TelegramRetryAfter):
            log.info("bot_could_not_tell_user", update_id=update.update_id)


class ThrottlingMiddleware(BaseMiddleware):
    """At most N updates per window per user; of a flood, the last update is handled later.

    Registered outermost, so that a held update, when released, still goes through the
    error middleware (a refusal becomes a text then too). If the counter fails (Redis
    down), updates pass: flood control is not worth refusing paying users.
    """

    def __init__(self, counter: RateCounter) -> None:
        self._counter = counter
        self._held: dict[int, tuple[Handler, Update, dict[str, Any]]] = {}
        self._waiters: dict[int, asyncio.Task[None]] = {}
        self._pending_answers: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        user: TgUser | None = data.get("event_from_user")
        if user is None or is_payment(event) or self._closed:
            return await handler(event, data)
        if user.id in self._held:
            # A flood is being held back already: this newer update replaces the held one.
            self._hold(user.id, handler, event, data)
            return None
        wait = await self._hit(user.id)
        if wait <= 0:
            return await handler(event, data)
        self._hold(user.id, handler, event, data)
        if user.id not in self._waiters:  # another update of this flood may have won the race
            self._waiters[user.id] = asyncio.create_task(
                self._release(user.id, wait), name=f"throttle-{user.id}"
            )
        return None

    async def _hit(self, user_id: int) -> float:
        try:
            return await self._counter.hit(str(user_id))
        except Exception:
            log.warning("bot_throttle_counter_failed", tg_user_id=user_id, exc_info=True)
            return 0.0

    def _hold(self, user_id: int, handler: Handler, event: Update, data: dict[str, Any]) -> None:
        replaced = self._held.get(user_id)
        self._held[user_id] = (handler, event, data)
        log.debug("bot_update_held", tg_user_id=user_id, update_id=event.update_id)
        if replaced is not None:
            dropped = replaced[1]
            if isinstance(dropped.event, CallbackQuery):
                # Stop the spinner of a press that will not be handled.
                task = asyncio.create_task(self._quiet_answer(dropped.event))
                self._pending_answers.add(task)
                task.add_done_callback(self._pending_answers.discard)

    @staticmethod
    async def _quiet_answer(query: CallbackQuery) -> None:
        with contextlib.suppress(Exception):
            await query.answer()

    async def _release(self, user_id: int, wait: float) -> None:
        me = asyncio.current_task()
        try:
            while wait > 0:
                await asyncio.sleep(wait)
                wait = await self._hit(user_id)
            # From here on a newer update of this user starts its own hold and waiter.
            held = self._held.pop(user_id, None)
            self._waiters.pop(user_id, None)
            if held is None:
                return
            handler, event, data = held
            state = data.get("state")
            if state is not None:  # a handler may have moved the conversation on meanwhile
                data["raw_state"] = await state.get_state()
            await handler(event, data)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bot_held_update_failed", tg_user_id=user_id)
        finally:
            if self._waiters.get(user_id) is me:
                del self._waiters[user_id]
                self._held.pop(user_id, None)

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._waiters.values(), *self._pending_answers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._held.clear()


class ServicesMiddleware(BaseMiddleware):
    def __init__(self, services: Services, **extra: Any) -> None:
        self._values = {"services": services, **extra}

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        data.update(self._values)
        return await handler(event, data)


class UserMiddleware(BaseMiddleware):
    """The acting user: registered on first contact, refreshed at most once per cache TTL."""

    def __init__(self, services: Services, cache: UserCache) -> None:
        self._services = services
        self._cache = cache

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        tg_user: TgUser | None = data.get("event_from_user")
        chat = data.get("event_chat")
        if tg_user is None or tg_user.is_bot:
            return None  # channel posts and the like: nothing for a client bot to do
        if chat is not None and chat.type != "private" and not is_payment(event):
            return None  # the client bot lives in private chats only
        user = self._cache.get(tg_user.id)
        referral = referral_code_of(event)
        if user is None or referral is not None:
            registration = await self._services.users.register(
                TelegramProfile(
                    telegram_id=tg_user.id,
                    username=tg_user.username,
                    first_name=tg_user.first_name,
                    last_name=tg_user.last_name,
                    language_code=tg_user.language_code,
                    is_premium=bool(tg_user.is_premium),
                ),
                referral_code=referral,
            )
            user = self._cache.put(registration.user)
            data["registration"] = registration
        i18n = for_language(user.language)
        data["user"] = user
        data["i18n"] = i18n
        data["users"] = self._cache
        if user.is_banned and not _is_successful_payment(event):
            await tell(event, i18n.t("error.user_banned"))
            return None
        return await handler(event, data)


def _is_successful_payment(update: Update) -> bool:
    # Money already taken is always recorded (the service keeps a banned user's access off).
    return update.message is not None and update.message.successful_payment is not None


__all__ = [
    "BotUser",
    "ErrorMiddleware",
    "ServicesMiddleware",
    "ThrottlingMiddleware",
    "UserMiddleware",
    "error_text",
    "referral_code_of",
    "start_payload",
    "tell",
]
