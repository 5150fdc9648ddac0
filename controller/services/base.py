"""What every service shares: the unit-of-work factory, the clock and the acting party."""

from __future__ import annotations

from dataclasses import dataclass

from common.clock import Clock, utcnow
from controller.db.uow import UnitOfWorkFactory

__all__ = ["Actor", "Clock", "Service"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change, for the audit log: a staff user, the CLI, or the system."""

    label: str
    user_id: int | None = None

    @classmethod
    def cli(cls) -> Actor:
        return cls("cli")

    @classmethod
    def system(cls) -> Actor:
        return cls("system")

    @classmethod
    def telegram(cls, telegram_id: int, user_id: int | None = None) -> Actor:
        return cls(f"tg:{telegram_id}", user_id)


class Service:
    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock = utcnow) -> None:
        self._uow = uow_factory
        self._now = clock
