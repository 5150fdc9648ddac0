"""Inline keyboard helpers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

Button = tuple[str, CallbackData | str]


def button(text: str, data: CallbackData | str) -> InlineKeyboardButton:
    if isinstance(data, CallbackData):
        return InlineKeyboardButton(text=text, callback_data=data.pack())
    if data.startswith(("https://", "http://", "tg://")):
        return InlineKeyboardButton(text=text, url=data)
    return InlineKeyboardButton(text=text, callback_data=data)


def keyboard(*rows: Sequence[Button] | None) -> InlineKeyboardMarkup:
    """Rows of (text, callback data or URL) pairs; None and empty rows are skipped."""
    built = [[button(text, data) for text, data in row] for row in rows if row]
    return InlineKeyboardMarkup(inline_keyboard=built)


def columns(buttons: Iterable[Button], width: int = 2) -> list[list[Button]]:
    row: list[Button] = []
    result: list[list[Button]] = []
    for item in buttons:
        row.append(item)
        if len(row) == width:
            result.append(row)
            row = []
    if row:
        result.append(row)
    return result
