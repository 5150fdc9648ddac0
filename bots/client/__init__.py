"""The client bot: what the seller's customers use to buy, connect and get help."""

from __future__ import annotations

from aiogram import Router

from bots.client.handlers import configs, payment, profile, servers, start, subscription, support


def get_routers() -> list[Router]:
    """The feature routers in matching order; the fallback for stale input comes last."""
    routes = [
        payment.router,  # payments first: a pre-checkout must never wait behind anything
        start.router,
        subscription.router,
        configs.router,
        servers.router,
        profile.router,
        support.router,
        start.fallback,
    ]
    return [r.build() for r in routes]


COMMANDS = {
    "ru": [
        ("start", "Главное меню"),
        ("menu", "Главное меню"),
        ("help", "Помощь"),
    ],
    "en": [
        ("start", "Main menu"),
        ("menu", "Main menu"),
        ("help", "Help"),
    ],
}
