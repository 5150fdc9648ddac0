"""What handlers get besides the event: the acting user, texts in their language, services."""

from __future__ import annotations

import time
from dataclasses import dataclass

from controller.db.models import User
from controller.domain.enums import UserRole, VpnProtocol


@dataclass(frozen=True, slots=True)
class BotUser:
    """A snapshot of the user row taken when the update arrived (never a live ORM object)."""

    id: int
    telegram_id: int
    language: str
    is_banned: bool
    role: UserRole
    referral_code: str
    trial_used: bool
    preferred_protocol: VpnProtocol | None
    auto_select_protocol: bool
    preferred_server_id: int | None

    @classmethod
    def of(cls, user: User) -> BotUser:
        return cls(
            id=user.id,
            telegram_id=user.telegram_id,
            language=user.language_code,
            is_banned=user.is_banned,
            role=user.role,
            referral_code=user.referral_code,
            trial_used=user.trial_used_at is not None,
            preferred_protocol=user.preferred_protocol,
            auto_select_protocol=user.auto_select_protocol,
            preferred_server_id=user.preferred_server_id,
        )


class UserCache:
    """Recently seen users, so that a burst of updates costs one database round trip.

    An entry lives ``ttl`` seconds: a ban or a role given elsewhere (CLI, admin bot, another
    process) shows here within that time — and every service that grants access checks the
    ban itself, in its own transaction. Handlers that change the user (language, protocol)
    replace the entry at once.
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[int, tuple[float, BotUser]] = {}

    def get(self, telegram_id: int) -> BotUser | None:
        entry = self._entries.get(telegram_id)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del self._entries[telegram_id]
            return None
        return entry[1]

    def put(self, user: User | BotUser) -> BotUser:
        snapshot = user if isinstance(user, BotUser) else BotUser.of(user)
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude, but bounded; entries are cheap to rebuild
        self._entries[snapshot.telegram_id] = (time.monotonic() + self._ttl, snapshot)
        return snapshot

    def forget(self, telegram_id: int) -> None:
        self._entries.pop(telegram_id, None)
