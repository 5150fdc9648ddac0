"""The webhook endpoint Telegram posts updates to: ``POST /telegram/<bot>/webhook``.

Telegram sends the secret token given to setWebhook in ``X-Telegram-Bot-Api-Secret-Token``;
a request without the right one is refused before anything is parsed. An update is handled
before the response goes out, so a crash mid-way makes Telegram deliver it again.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bots.common.app import BotApp
from bots.common.middlewares import RetryLater

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
MAX_UPDATE_BYTES = 1 << 20


def webhook_path(name: str) -> str:
    return f"/telegram/{name}/webhook"


def mount(app: FastAPI, bots: Mapping[str, BotApp]) -> None:
    @app.post("/telegram/{name}/webhook", include_in_schema=False)
    async def telegram_webhook(name: str, request: Request) -> JSONResponse:
        bot = bots.get(name)
        if bot is None or bot.mode != "webhook":
            return JSONResponse({"ok": False, "error": "not found"}, status_code=404)
        if bot.closing:  # shutting down: Telegram delivers it again, to the next process
            return JSONResponse({"ok": False, "error": "shutting down"}, status_code=503)
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), bot.secret.encode()):
            log.warning("webhook_bad_secret", bot=name)
            return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
        body = await request.body()
        if len(body) > MAX_UPDATE_BYTES:
            return JSONResponse({"ok": False, "error": "too large"}, status_code=413)
        try:
            update: Any = await request.json()
        except ValueError:
            return JSONResponse({"ok": False, "error": "not JSON"}, status_code=400)
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return JSONResponse({"ok": False, "error": "not an update"}, status_code=400)
        try:
            await bot.feed(update)
        except RetryLater:
            log.error("webhook_update_to_redeliver", bot=name, update_id=update["update_id"])
            return JSONResponse({"ok": False, "error": "try again"}, status_code=500)
        except ValidationError:
            log.warning("webhook_invalid_update", bot=name, update_id=update["update_id"])
            return JSONResponse({"ok": False, "error": "invalid update"}, status_code=400)
        return JSONResponse({"ok": True})
