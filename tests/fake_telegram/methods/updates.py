"""Getting updates: long polling (getUpdates) and webhooks (setWebhook and friends)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from ..errors import bad_request, conflict, too_many_requests
from ..state import DEFAULT_UPDATES, UPDATE_TYPES
from ..world import BotState, Webhook
from . import Answer, Ctx, api_method

LONG_POLL_MAX_TIMEOUT = 50
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)
TERMINATED = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
TERMINATED_BY_WEBHOOK = "Conflict: terminated by setWebhook request"
CLOSING = "closing"
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def update_allowed(bot: BotState, raw: str) -> bool:
    """Remember allowed_updates when given (an empty or unknown list means the default)."""
    if not raw:
        return False
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return False
    wanted = frozenset(v.lower() for v in value) & frozenset(UPDATE_TYPES)
    allowed = wanted or DEFAULT_UPDATES
    changed = allowed != bot.allowed
    bot.allowed = allowed
    return changed


def abort_long_poll(bot: BotState, reason: str) -> None:
    if bot.long_poll is not None and not bot.long_poll.done():
        bot.long_poll.set_result(reason)
    bot.long_poll = None


def _select(bot: BotState, offset: int, limit: int) -> list[dict[str, Any]]:
    if offset < 0:
        # A negative offset keeps only the last -offset updates and forgets the rest.
        drop = max(len(bot.updates) + offset, 0)
        if drop:
            bot.confirm_before(bot.updates[drop]["update_id"])
    elif offset > 0 and offset <= bot.next_update_id + 10:
        # Asking for an offset confirms every update before it (a far-future offset does not).
        bot.confirm_before(offset)
    return bot.updates[:limit]


@api_method("getUpdates")
async def get_updates(ctx: Ctx) -> list[dict[str, Any]]:
    bot = ctx.bot
    if bot.webhook is not None:
        raise conflict(WEBHOOK_ACTIVE)
    offset = ctx.args.integer("offset", 0)
    limit = ctx.args.integer("limit", 100, 1, 100)
    timeout = ctx.args.integer("timeout", 0, 0, LONG_POLL_MAX_TIMEOUT)
    update_allowed(bot, ctx.args.text("allowed_updates"))
    batch = _select(bot, offset, limit)
    if batch or timeout == 0 or ctx.tg.closing:
        return batch

    abort_long_poll(bot, TERMINATED)
    loop = asyncio.get_running_loop()
    poll: asyncio.Future[str] = loop.create_future()
    bot.long_poll = poll
    deadline = loop.time() + timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            arrived = asyncio.ensure_future(bot.signal.wait(remaining))
            waiters: set[asyncio.Future[Any]] = {poll, arrived}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()
            if poll.done():
                reason = poll.result()
                if reason == CLOSING:
                    return []
                raise conflict(reason)
            batch = _select(bot, offset, limit)
            if batch:
                return batch
    finally:
        if bot.long_poll is poll:
            bot.long_poll = None


def _valid_webhook_url(url: str) -> bool:
    match = re.match(r"^(?:([A-Za-z][A-Za-z0-9+.-]*)://)?([^/?#\s]+)([^\s]*)$", url)
    if match is None:
        return False
    scheme = (match.group(1) or "https").lower()
    return scheme in ("http", "https") and bool(match.group(2).rsplit("@", 1)[-1])


def _webhook_info(bot: BotState) -> dict[str, Any]:
    info: dict[str, Any] = {
        "url": bot.webhook.url if bot.webhook else "",
        "has_custom_certificate": False,
        "pending_update_count": len(bot.updates),
    }
    if bot.webhook_error is not None:
        info["last_error_date"], info["last_error_message"] = bot.webhook_error
    if bot.webhook is not None:
        info["max_connections"] = bot.webhook.max_connections
        info["ip_address"] = "127.0.0.1"
    if bot.allowed != DEFAULT_UPDATES:
        info["allowed_updates"] = [kind for kind in UPDATE_TYPES if kind in bot.allowed]
    return info


def _set_webhook(ctx: Ctx, url: str) -> Answer:
    bot = ctx.bot
    now = time.monotonic()
    if url:
        if now < bot.last_set_webhook_at + ctx.tg.set_webhook_interval:
            raise too_many_requests(1)
        bot.last_set_webhook_at = now
    max_connections = ctx.args.integer("max_connections", 40, 1, 100) if url else 0
    secret = ctx.args.text("secret_token") if url else ""
    drop = ctx.args.flag("drop_pending_updates")
    current = bot.webhook
    if (
        not drop
        and (current.url if current else "") == url
        and (current.secret_token if current else "") == secret
        and (current.max_connections if current else 0) == max_connections
    ):
        update_allowed(bot, ctx.args.text("allowed_updates"))
        return Answer(True, "Webhook is already set" if url else "Webhook is already deleted")
    if url:
        abort_long_poll(bot, TERMINATED_BY_WEBHOOK)
    was_set = current is not None
    bot.webhook = None
    ctx.tg.webhook_changed(bot)
    if drop:
        bot.drop_pending()
    if not url:
        return Answer(True, "Webhook was deleted" if was_set else "Webhook is already deleted")
    if not _valid_webhook_url(url):
        raise bad_request("invalid webhook URL specified")
    if len(secret) > 256:
        raise bad_request("secret token is too long")
    if not _BASE64URL.match(secret):
        raise bad_request("secret token contains unallowed characters")
    bot.webhook = Webhook(url, secret, max_connections)
    bot.webhook_error = None
    update_allowed(bot, ctx.args.text("allowed_updates"))
    ctx.tg.webhook_changed(bot)
    return Answer(True, "Webhook was set")


@api_method("setWebhook")
def set_webhook(ctx: Ctx) -> Answer:
    return _set_webhook(ctx, ctx.args.text("url"))


@api_method("deleteWebhook")
def delete_webhook(ctx: Ctx) -> Answer:
    return _set_webhook(ctx, "")


@api_method("getWebhookInfo")
def get_webhook_info(ctx: Ctx) -> dict[str, Any]:
    return _webhook_info(ctx.bot)
