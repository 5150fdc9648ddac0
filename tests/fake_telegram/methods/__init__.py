"""The Bot API methods the fake answers, registered by name (matched case-insensitively)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..args import Args

if TYPE_CHECKING:
    from ..server import FakeTelegram
    from ..world import BotState


@dataclass
class Ctx:
    tg: FakeTelegram
    bot: BotState
    args: Args


@dataclass
class Answer:
    """A result with the "description" some methods add beside it (setWebhook does)."""

    result: Any
    description: str | None = None


Handler = Callable[[Ctx], Any | Awaitable[Any]]
REGISTRY: dict[str, tuple[str, Handler]] = {}


def api_method(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        REGISTRY[name.lower()] = (name, handler)
        return handler

    return register


def load() -> None:
    """Import every method module so that they register themselves."""
    from . import chats, editing, forum, media, messages, payments, updates  # noqa: F401
