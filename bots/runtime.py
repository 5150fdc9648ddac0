"""Wiring the bots into ``vpnbot run``: which bots have tokens, in which mode they run."""

from __future__ import annotations

import functools

from bots import client
from bots.client import reconcile
from bots.common.app import BotApp, Mode, build_app
from bots.common.webhook import webhook_path
from controller.bootstrap import Container
from controller.settings import Settings, SettingsError


def bot_mode(settings: Settings) -> Mode:
    mode = settings.telegram.mode
    if mode == "auto":
        return "webhook" if settings.api.public_url else "polling"
    if mode == "webhook" and not settings.api.public_url:
        raise SettingsError(
            "VPNBOT_TELEGRAM__MODE=webhook needs VPNBOT_API__PUBLIC_URL (the https:// address "
            "Telegram posts updates to)"
        )
    return mode


def build_bots(container: Container) -> dict[str, BotApp]:
    """The bots whose tokens are configured, by name (the client bot for now)."""
    settings = container.settings
    telegram = settings.telegram
    bots: dict[str, BotApp] = {}
    mode = bot_mode(settings)
    if telegram.client_bot_token is not None:
        bots["client"] = build_app(
            name="client",
            token=telegram.client_bot_token.get_secret_value(),
            api_url=telegram.api_url,
            routers=client.get_routers(),
            services=container.services,
            secrets=container.secrets,
            redis_url=settings.redis.url,
            throttle_updates=telegram.throttle_updates,
            throttle_window=telegram.throttle_window_seconds,
            mode=mode,
            webhook_url=(
                f"{settings.api.public_url}{webhook_path('client')}" if mode == "webhook" else None
            ),
            drop_pending_updates=telegram.drop_pending_updates,
            commands=client.COMMANDS,
            jobs=[functools.partial(reconcile.run, services=container.services)]
            if settings.payments.stars_enabled
            else [],
        )
    return bots
