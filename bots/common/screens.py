"""Showing a screen: edit the message a button belongs to, or send a new one."""

from __future__ import annotations

import contextlib

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InaccessibleMessage, InlineKeyboardMarkup, Message


async def show(
    event: Message | CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    if isinstance(event, CallbackQuery):
        message = event.message
        if isinstance(message, Message) and message.text is not None:
            try:
                await message.edit_text(text, reply_markup=markup)
            except TelegramBadRequest as exc:
                if "message is not modified" not in exc.message:
                    await message.answer(text, reply_markup=markup)
        elif message is not None and not isinstance(message, InaccessibleMessage):
            # A document or photo cannot become a text screen: send the screen below it.
            await message.answer(text, reply_markup=markup)
        elif event.bot is not None:
            await event.bot.send_message(event.from_user.id, text, reply_markup=markup)
        await answer(event)
    else:
        await event.answer(text, reply_markup=markup)


async def answer(query: CallbackQuery, text: str | None = None, *, alert: bool = False) -> None:
    """Stop the button's spinner (a second answer to one query is refused: ignore that)."""
    with contextlib.suppress(TelegramBadRequest):
        await query.answer(text, show_alert=alert)


def chat_id(event: Message | CallbackQuery) -> int:
    if isinstance(event, Message):
        return event.chat.id
    return event.from_user.id
