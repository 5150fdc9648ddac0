"""Handlers declared at import time, routers built on demand.

aiogram attaches a Router to one parent for good, so module-level routers allow a single
Dispatcher per process. Tests, benchmarks and a webhook/polling switch need several: each
feature module collects its handlers in :class:`Routes` and :meth:`Routes.build` makes a
fresh Router from them every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiogram import Router
from aiogram.filters import Filter, StateFilter
from aiogram.fsm.state import State
from aiogram.types import TelegramObject
from aiogram.utils.magic_filter import MagicFilter

F = TypeVar("F", bound=Callable[..., Any])


class _Magic(Filter):
    """A magic filter (``F.text``) checked in the event loop: aiogram runs a plain function
    filter in a worker thread, a hop that costs more than the check on every update."""

    def __init__(self, magic: MagicFilter) -> None:
        self._magic = magic

    async def __call__(self, event: TelegramObject) -> Any:
        return self._magic.resolve(event)


def _inline(check: Any) -> Any:
    if isinstance(check, State):
        return StateFilter(check)
    if isinstance(check, MagicFilter):
        return _Magic(check)
    return check


class Routes:
    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: list[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def _add(self, kind: str, filters: tuple[Any, ...], flags: dict[str, Any]) -> Callable[[F], F]:
        def register(handler: F) -> F:
            self._entries.append((kind, handler, filters, flags))
            return handler

        return register

    def message(self, *filters: Any, **flags: Any) -> Callable[[F], F]:
        return self._add("message", filters, flags)

    def callback_query(self, *filters: Any, **flags: Any) -> Callable[[F], F]:
        return self._add("callback_query", filters, flags)

    def pre_checkout_query(self, *filters: Any, **flags: Any) -> Callable[[F], F]:
        return self._add("pre_checkout_query", filters, flags)

    def build(self) -> Router:
        router = Router(name=self.name)
        for kind, handler, filters, flags in self._entries:
            getattr(router, kind).register(handler, *map(_inline, filters), **flags)
        return router
