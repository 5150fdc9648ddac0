"""Locations: where the servers are, how loaded, whether up; choosing a preferred one."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery

from bots.client.callbacks import MenuCb, Screen, ServerCb
from bots.common.context import BotUser, UserCache
from bots.common.formatting import esc, flag
from bots.common.i18n import I18n
from bots.common.keyboards import Button, keyboard
from bots.common.routes import Routes
from bots.common.screens import show
from controller.services import Services
from controller.services.nodes import LocationView

router = Routes("client.servers")


def location_line(i18n: I18n, location: LocationView, preferred: bool) -> str:
    place = ", ".join(esc(part) for part in (location.city, location.country) if part)
    state = "up" if location.available else "down"
    return i18n.t(
        "servers.line",
        flag=flag(location.country_code),
        place=place or esc(location.name),
        load=location.load_percent,
        status=i18n.t(f"servers.status_{state}"),
        mark=" ✅" if preferred else "",
    )


async def render(services: Services, user: BotUser, i18n: I18n) -> tuple[str, list[list[Button]]]:
    locations = await services.nodes.locations()
    if not locations:
        return i18n.t("servers.none"), [[(i18n.t("common.back"), MenuCb(screen=Screen.MAIN))]]
    lines = [i18n.t("servers.title")]
    rows: list[list[Button]] = []
    for location in locations:
        chosen = location.server_id == user.preferred_server_id
        lines.append(location_line(i18n, location, chosen))
        if location.available:
            place = location.city or location.country or location.name
            label = f"{'✅ ' if chosen else ''}{flag(location.country_code)} {place}"
            rows.append([(label, ServerCb(server_id=location.server_id))])
    auto = user.preferred_server_id is None
    rows.append([(("✅ " if auto else "") + i18n.t("servers.auto"), ServerCb(server_id=0))])
    rows.append([(i18n.t("common.back"), MenuCb(screen=Screen.MAIN))])
    lines.append(i18n.t("servers.hint"))
    return "\n".join(lines), rows


@router.callback_query(MenuCb.filter(F.screen == Screen.SERVERS))
async def on_servers(query: CallbackQuery, services: Services, user: BotUser, i18n: I18n) -> None:
    text, rows = await render(services, user, i18n)
    await show(query, text, keyboard(*rows))


@router.callback_query(ServerCb.filter())
async def on_choose(
    query: CallbackQuery,
    callback_data: ServerCb,
    services: Services,
    user: BotUser,
    users: UserCache,
    i18n: I18n,
) -> None:
    chosen = callback_data.server_id or None
    updated = users.put(await services.users.set_preferred_server(user.telegram_id, chosen))
    text, rows = await render(services, updated, i18n)
    await show(query, text, keyboard(*rows))
