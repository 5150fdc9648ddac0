"""Business rules of subscriptions, plans, promo codes and users, as pure functions."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from controller.domain.errors import InvalidInput

GIB = 1024**3

MAX_DURATION_DAYS = 3650
MAX_DEVICE_LIMIT = 100
MAX_TRAFFIC_GB = 1_000_000

SUPPORTED_LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ensure_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: every time in vpnbot is timezone-aware UTC")
    return moment


def extended_expiry(expires_at: datetime | None, now: datetime, days: int) -> datetime:
    """Where a subscription's expiry lands after adding ``days``.

    Time that is still left is never lost: a subscription whose expiry is in the future
    (an active one renewed early, or a suspended one) extends from that expiry. One that has
    run out, or never started, extends from now.
    """
    validate_days(days)
    ensure_aware(now)
    if expires_at is not None and ensure_aware(expires_at) > now:
        return expires_at + timedelta(days=days)
    return now + timedelta(days=days)


def validate_days(days: int) -> int:
    if not _is_int(days) or not 1 <= days <= MAX_DURATION_DAYS:
        raise InvalidInput(f"days must be a whole number from 1 to {MAX_DURATION_DAYS}")
    return days


def validate_device_limit(limit: int) -> int:
    if not _is_int(limit) or not 1 <= limit <= MAX_DEVICE_LIMIT:
        raise InvalidInput(f"device limit must be from 1 to {MAX_DEVICE_LIMIT}")
    return limit


def validate_traffic_limit_gb(limit_gb: int | None) -> int | None:
    if limit_gb is None:
        return None
    if not _is_int(limit_gb) or not 1 <= limit_gb <= MAX_TRAFFIC_GB:
        raise InvalidInput(f"traffic limit must be from 1 to {MAX_TRAFFIC_GB} GB, or unlimited")
    return limit_gb


def traffic_limit_bytes(limit_gb: int | None) -> int | None:
    return None if limit_gb is None else limit_gb * GIB


def traffic_limit_reached(used_bytes: int, limit_bytes: int | None) -> bool:
    return limit_bytes is not None and used_bytes >= limit_bytes


MAX_SORT_ORDER = 1_000_000


def validate_sort_order(value: int) -> int:
    if not _is_int(value) or not -MAX_SORT_ORDER <= value <= MAX_SORT_ORDER:
        raise InvalidInput(f"sort order must be from {-MAX_SORT_ORDER} to {MAX_SORT_ORDER}")
    return value


def validate_plan_name(name: str) -> str:
    value = name.strip()
    if not 1 <= len(value) <= 128:
        raise InvalidInput("plan name must be 1 to 128 characters")
    return value


def normalize_language(language_code: str | None) -> str:
    """Pick a supported bot language from Telegram's IETF ``language_code`` (Russian default)."""
    if not language_code:
        return DEFAULT_LANGUAGE
    primary = language_code.strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in SUPPORTED_LANGUAGES else DEFAULT_LANGUAGE


def validate_language(language: str) -> str:
    value = language.strip().lower()
    if value not in SUPPORTED_LANGUAGES:
        raise InvalidInput(f"language must be one of: {', '.join(SUPPORTED_LANGUAGES)}")
    return value


MAX_TELEGRAM_ID = 2**52  # Telegram ids fit in 52 bits (Bot API docs)
# The largest database id an edge (CLI argument, callback data) accepts: within SQLite's and
# PostgreSQL's 64-bit integers and exact in JSON, so a bigger number is refused as input
# instead of failing in the database driver.
MAX_RECORD_ID = 2**53


def validate_telegram_id(telegram_id: int) -> int:
    if not _is_int(telegram_id) or not 0 < telegram_id < MAX_TELEGRAM_ID:
        raise InvalidInput(f"{telegram_id!r} is not a Telegram user id")
    return telegram_id


_PROMO_RE = re.compile(r"^[A-Z0-9_-]{3,32}$")


def normalize_promo_code(code: str) -> str:
    value = code.strip().upper()
    if not _PROMO_RE.match(value):
        raise InvalidInput("a promo code is 3 to 32 letters, digits, '-' or '_'")
    return value


def validate_promo_value(kind_is_percent: bool, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("promo value must be a whole number")
    if kind_is_percent and not 1 <= value <= 100:
        raise InvalidInput("a percent promo code gives 1 to 100 percent")
    if not kind_is_percent:
        validate_days(value)
    return value
