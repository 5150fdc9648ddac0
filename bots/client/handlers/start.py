"""/start (registration and deep-link referral happen in the user middleware), the main
menu, /help, and the fallback for buttons whose data no longer means anything."""

from __future__ import annotations

import functools
from typing import Any

from aiogram import F
from aiogram.filters import Command, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bots.client.callbacks import MenuCb, Screen
from bots.common.context import BotUser
from bots.common.formatting import esc
from bots.common.i18n import I18n, for_language
from bots.common.keyboards import keyboard
from bots.common.routes import Routes
from bots.common.screens import answer, show

router = Routes("client.start")


def main_menu(i18n: I18n, user: BotUser) -> Any:
    return _main_menu(i18n.language, user.trial_used)


@functools.lru_cache(maxsize=8)
def _main_menu(language: str, trial_used: bool) -> Any:
    """The same few keyboards for everyone: built once, not on every /menu."""
    i18n = for_language(language)
    return keyboard(
        [(i18n.t("menu.plans"), MenuCb(screen=Screen.PLANS))],
        [
            (i18n.t("menu.subscriptions"), MenuCb(screen=Screen.SUBSCRIPTIONS)),
            (i18n.t("menu.devices"), MenuCb(screen=Screen.DEVICES)),
        ],
        None if trial_used else [(i18n.t("menu.trial"), MenuCb(screen=Screen.TRIAL))],
        [
            (i18n.t("menu.servers"), MenuCb(screen=Screen.SERVERS)),
            (i18n.t("menu.profile"), MenuCb(screen=Screen.PROFILE)),
        ],
        [(i18n.t("menu.support"), MenuCb(screen=Screen.SUPPORT))],
    )


@router.message(CommandStart())
async def on_start(
    message: Message, user: BotUser, i18n: I18n, state: FSMContext, **data: Any
) -> None:
    await state.clear()
    registration = data.get("registration")
    name = esc(message.from_user.first_name if message.from_user else "")
    key = (
        "start.welcome_new"
        if registration is not None and registration.created
        else "start.welcome"
    )
    text = i18n.t(key, name=name)
    if registration is not None and getattr(registration, "referred_by", None):
        text += "\n\n" + i18n.t("start.referred")
    await message.answer(text, reply_markup=main_menu(i18n, user))


@router.message(Command("menu"))
async def on_menu_command(message: Message, user: BotUser, i18n: I18n, state: FSMContext) -> None:
    await state.clear()
    await message.answer(i18n.t("menu.title"), reply_markup=main_menu(i18n, user))


@router.message(Command("help"))
async def on_help(message: Message, user: BotUser, i18n: I18n) -> None:
    await message.answer(i18n.t("help.text"), reply_markup=main_menu(i18n, user))


@router.callback_query(MenuCb.filter(F.screen == Screen.MAIN))
async def on_main(query: CallbackQuery, user: BotUser, i18n: I18n, state: FSMContext) -> None:
    await state.clear()
    await show(query, i18n.t("menu.title"), main_menu(i18n, user))


fallback = Routes("client.fallback")


@fallback.callback_query()
async def on_stale_button(query: CallbackQuery, i18n: I18n) -> None:
    """Data no filter understood: an old keyboard, or someone crafting callback data."""
    await answer(query, i18n.t("error.stale_button"), alert=True)


@fallback.message(F.text)
async def on_unknown_text(message: Message, user: BotUser, i18n: I18n) -> None:
    await message.answer(i18n.t("menu.unknown"), reply_markup=main_menu(i18n, user))
