"""Profile: language, preferred protocol and auto-select, referral link and stats, the
one-time trial, and promo codes that give days."""

from __future__ import annotations

from aiogram import Bot, F
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bots.client.callbacks import LanguageCb, MenuCb, ProtocolCb, Screen
from bots.client.handlers.start import main_menu
from bots.common.context import BotUser, UserCache
from bots.common.formatting import esc, moment
from bots.common.i18n import I18n, for_language
from bots.common.keyboards import Button, keyboard
from bots.common.middlewares import REFERRAL_PREFIX
from bots.common.routes import Routes
from bots.common.screens import show
from controller.domain.enums import VpnProtocol
from controller.domain.errors import InvalidInput
from controller.domain.placement import AUTO_ORDER_RU
from controller.domain.rules import SUPPORTED_LANGUAGES
from controller.services import Services
from controller.services.configs import PROVISIONED

router = Routes("client.profile")

LANGUAGE_NAMES = {"ru": "🇷🇺 Русский", "en": "🇬🇧 English"}
PREFERABLE = [p for p in AUTO_ORDER_RU if p in PROVISIONED]


class PromoRedeem(StatesGroup):
    code = State()


def render(user: BotUser, i18n: I18n) -> tuple[str, list[list[Button]]]:
    protocol = (
        i18n.t(f"protocol.{user.preferred_protocol.value}")
        if user.preferred_protocol is not None
        else i18n.t("protocol.auto")
    )
    text = i18n.t(
        "profile.text",
        id=user.telegram_id,
        language=LANGUAGE_NAMES[i18n.language],
        protocol=protocol,
        auto=i18n.t("common.on") if user.auto_select_protocol else i18n.t("common.off"),
    )
    rows: list[list[Button]] = [
        [(i18n.t("profile.language"), MenuCb(screen=Screen.LANGUAGE))],
        [(i18n.t("profile.protocol"), MenuCb(screen=Screen.PROTOCOL))],
        [
            (
                i18n.t("profile.auto_off" if user.auto_select_protocol else "profile.auto_on"),
                MenuCb(screen=Screen.AUTO_SELECT),
            )
        ],
        [(i18n.t("profile.referral"), MenuCb(screen=Screen.REFERRAL))],
        [(i18n.t("profile.promo"), MenuCb(screen=Screen.PROMO))],
    ]
    if not user.trial_used:
        rows.append([(i18n.t("menu.trial"), MenuCb(screen=Screen.TRIAL))])
    rows.append([(i18n.t("common.back"), MenuCb(screen=Screen.MAIN))])
    return text, rows


@router.callback_query(MenuCb.filter(F.screen == Screen.PROFILE))
async def on_profile(query: CallbackQuery, user: BotUser, i18n: I18n, state: FSMContext) -> None:
    await state.clear()
    text, rows = render(user, i18n)
    await show(query, text, keyboard(*rows))


@router.callback_query(MenuCb.filter(F.screen == Screen.LANGUAGE))
async def on_language_menu(query: CallbackQuery, i18n: I18n) -> None:
    rows: list[list[Button]] = [
        [(LANGUAGE_NAMES[code], LanguageCb(language=code))] for code in SUPPORTED_LANGUAGES
    ]
    rows.append([(i18n.t("common.back"), MenuCb(screen=Screen.PROFILE))])
    await show(query, i18n.t("profile.choose_language"), keyboard(*rows))


@router.callback_query(LanguageCb.filter())
async def on_language(
    query: CallbackQuery,
    callback_data: LanguageCb,
    services: Services,
    user: BotUser,
    users: UserCache,
) -> None:
    updated = users.put(await services.users.set_language(user.telegram_id, callback_data.language))
    i18n = for_language(updated.language)
    text, rows = render(updated, i18n)
    await show(query, text, keyboard(*rows))


@router.callback_query(MenuCb.filter(F.screen == Screen.PROTOCOL))
async def on_protocol_menu(query: CallbackQuery, user: BotUser, i18n: I18n) -> None:
    current = user.preferred_protocol.value if user.preferred_protocol else "auto"
    rows: list[list[Button]] = []
    for value in ["auto", *(p.value for p in PREFERABLE)]:
        mark = "✅ " if value == current else ""
        rows.append([(mark + i18n.t(f"protocol.{value}"), ProtocolCb(protocol=value))])
    rows.append([(i18n.t("common.back"), MenuCb(screen=Screen.PROFILE))])
    await show(query, i18n.t("profile.choose_protocol"), keyboard(*rows))


@router.callback_query(ProtocolCb.filter())
async def on_protocol(
    query: CallbackQuery,
    callback_data: ProtocolCb,
    services: Services,
    user: BotUser,
    users: UserCache,
    i18n: I18n,
) -> None:
    if callback_data.protocol == "auto":
        protocol = None
    else:
        try:
            protocol = VpnProtocol(callback_data.protocol)
        except ValueError:
            raise InvalidInput("unknown protocol") from None
    updated = users.put(await services.users.set_preferred_protocol(user.telegram_id, protocol))
    text, rows = render(updated, i18n)
    await show(query, text, keyboard(*rows))


@router.callback_query(MenuCb.filter(F.screen == Screen.AUTO_SELECT))
async def on_auto_select(
    query: CallbackQuery, services: Services, user: BotUser, users: UserCache, i18n: I18n
) -> None:
    updated = users.put(
        await services.users.set_auto_select(user.telegram_id, not user.auto_select_protocol)
    )
    text, rows = render(updated, i18n)
    await show(query, text, keyboard(*rows))


@router.callback_query(MenuCb.filter(F.screen == Screen.REFERRAL))
async def on_referral(
    query: CallbackQuery, bot: Bot, services: Services, user: BotUser, i18n: I18n
) -> None:
    stats = await services.users.referral_stats(user.telegram_id)
    me = await bot.me()
    link = f"https://t.me/{me.username}?start={REFERRAL_PREFIX}{stats.code}"
    await show(
        query,
        i18n.t(
            "referral.text",
            link=esc(link),
            invited=stats.invited,
            paid=stats.paid,
            days=stats.reward_days,
        ),
        keyboard([(i18n.t("common.back"), MenuCb(screen=Screen.PROFILE))]),
    )


@router.callback_query(MenuCb.filter(F.screen == Screen.TRIAL))
async def on_trial(
    query: CallbackQuery, services: Services, user: BotUser, users: UserCache, i18n: I18n
) -> None:
    subscription = await services.subscriptions.start_trial(user.telegram_id)
    users.forget(user.telegram_id)
    await show(
        query,
        i18n.t("trial.started", until=moment(subscription.expires_at)),
        keyboard(
            [(i18n.t("devices.connect"), MenuCb(screen=Screen.NEW_DEVICE))],
            [(i18n.t("common.back"), MenuCb(screen=Screen.MAIN))],
        ),
    )


@router.callback_query(MenuCb.filter(F.screen == Screen.PROMO))
async def on_promo(query: CallbackQuery, state: FSMContext, i18n: I18n) -> None:
    await state.set_state(PromoRedeem.code)
    await show(
        query,
        i18n.t("promo.prompt"),
        keyboard([(i18n.t("common.cancel"), MenuCb(screen=Screen.PROFILE))]),
    )


@router.message(PromoRedeem.code, F.text, ~F.text.startswith("/"))
async def on_promo_code(
    message: Message, state: FSMContext, services: Services, user: BotUser, i18n: I18n
) -> None:
    await state.clear()
    assert message.text is not None
    redemption = await services.promo.redeem_days(user.id, message.text.strip())
    await message.answer(
        i18n.t(
            "promo.redeemed",
            days=redemption.days,
            until=moment(redemption.subscription.expires_at),
        ),
        reply_markup=main_menu(i18n, user),
    )
