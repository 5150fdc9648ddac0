"""Rendering values for people: escaped text, sizes, dates, flags and money."""

from __future__ import annotations

import html
from datetime import datetime

from bots.common.i18n import I18n
from controller.domain import money

_UNITS = ("b", "kib", "mib", "gib", "tib")


def esc(value: object) -> str:
    """Anything from the database or a user, made safe for parse_mode=HTML."""
    return html.escape(str(value), quote=False)


def size(i18n: I18n, count: int) -> str:
    """Bytes in binary units: ``1.5 ГиБ`` / ``1.5 GiB``."""
    value = float(max(count, 0))
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    number = f"{value:.0f}" if unit == 0 or value >= 100 else f"{value:.1f}"
    return f"{number} {i18n.t('unit.' + _UNITS[unit])}"


def moment(value: datetime | None) -> str:
    """A UTC time, to the minute (the bot does not know the user's time zone)."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M UTC")


def day(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d")


def flag(country_code: str | None) -> str:
    """🇳🇱 from "NL"; a globe for unknown codes."""
    code = (country_code or "").strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        return "🌐"
    return "".join(chr(0x1F1E6 + ord(letter) - ord("A")) for letter in code)


def price(amount_minor: int, currency: str) -> str:
    if currency == "XTR":
        return f"{amount_minor} ⭐"
    return money.format_amount(amount_minor, currency)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
