"""Support: open a ticket (the support bot, in a later release, answers it) and see one's own."""

from __future__ import annotations

from aiogram import F
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bots.client.callbacks import MenuCb, Screen, TicketCb
from bots.client.handlers.start import main_menu
from bots.common.context import BotUser
from bots.common.formatting import clip, esc, moment
from bots.common.i18n import I18n
from bots.common.keyboards import Button, keyboard
from bots.common.routes import Routes
from bots.common.screens import show
from controller.domain.errors import LimitReached
from controller.services import Services

router = Routes("client.support")


class TicketInput(StatesGroup):
    text = State()


@router.callback_query(MenuCb.filter(F.screen == Screen.SUPPORT))
async def on_support(
    query: CallbackQuery, services: Services, user: BotUser, i18n: I18n, state: FSMContext
) -> None:
    await state.clear()
    tickets = await services.support.list_for_user(user.telegram_id)
    lines = [i18n.t("support.title")]
    rows: list[list[Button]] = [[(i18n.t("support.new"), MenuCb(screen=Screen.NEW_TICKET))]]
    for ticket in tickets:
        lines.append(
            i18n.t(
                "support.line",
                id=ticket.id,
                subject=esc(clip(ticket.subject, 60)),
                status=i18n.t(f"ticket.{ticket.status.value}"),
            )
        )
        rows.append([(f"#{ticket.id} {clip(ticket.subject, 40)}", TicketCb(ticket_id=ticket.id))])
    rows.append([(i18n.t("common.back"), MenuCb(screen=Screen.MAIN))])
    await show(query, "\n".join(lines), keyboard(*rows))


@router.callback_query(TicketCb.filter())
async def on_ticket(
    query: CallbackQuery, callback_data: TicketCb, services: Services, user: BotUser, i18n: I18n
) -> None:
    ticket = await services.support.get_for(user.telegram_id, callback_data.ticket_id)
    await show(
        query,
        i18n.t(
            "support.details",
            id=ticket.id,
            subject=esc(ticket.subject),
            status=i18n.t(f"ticket.{ticket.status.value}"),
            created=moment(ticket.created_at),
            text=esc(clip(ticket.description, 1500)),
        ),
        keyboard([(i18n.t("common.back"), MenuCb(screen=Screen.SUPPORT))]),
    )


@router.callback_query(MenuCb.filter(F.screen == Screen.NEW_TICKET))
async def on_new_ticket(query: CallbackQuery, state: FSMContext, i18n: I18n) -> None:
    await state.set_state(TicketInput.text)
    await show(
        query,
        i18n.t("support.prompt"),
        keyboard([(i18n.t("common.cancel"), MenuCb(screen=Screen.SUPPORT))]),
    )


@router.message(TicketInput.text, F.text, ~F.text.startswith("/"))
async def on_ticket_text(
    message: Message, state: FSMContext, services: Services, user: BotUser, i18n: I18n
) -> None:
    assert message.text is not None
    try:
        ticket = await services.support.open_ticket(user.telegram_id, message.text)
    except LimitReached:
        await state.clear()  # more text will not help; a text too long may be sent again
        raise
    await state.clear()
    await message.answer(i18n.t("support.opened", id=ticket.id), reply_markup=main_menu(i18n, user))


@router.message(TicketInput.text)
async def on_ticket_not_text(message: Message, i18n: I18n) -> None:
    await message.answer(i18n.t("support.text_only"))
