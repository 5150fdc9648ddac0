"""Devices: connect one (protocol, then platform), get its config again, rotate its keys,
delete it. WireGuard comes as a .conf document plus a QR code, VLESS as a link plus a QR
code, OpenVPN as an .ovpn document."""

from __future__ import annotations

import asyncio

from aiogram import Bot, F
from aiogram.types import BufferedInputFile, CallbackQuery

from bots.client.callbacks import (
    DeviceAction,
    DeviceCb,
    MenuCb,
    NewDeviceCb,
    Platform,
    Screen,
)
from bots.common.context import BotUser
from bots.common.formatting import esc, flag
from bots.common.i18n import I18n
from bots.common.keyboards import Button, columns, keyboard
from bots.common.routes import Routes
from bots.common.screens import answer, show
from controller.domain.enums import VpnProtocol
from controller.domain.errors import ConfigNotFound, InvalidInput
from controller.services import Services
from controller.services.config_render import RenderedConfig
from controller.services.configs import DeviceView
from controller.vpn import qr

router = Routes("client.configs")

AUTO = "auto"
PLATFORM_NAMES = {
    Platform.ANDROID: "Android",
    Platform.IOS: "iOS",
    Platform.WINDOWS: "Windows",
    Platform.MACOS: "macOS",
    Platform.LINUX: "Linux",
    Platform.ROUTER: "Router",
}


def protocol_name(i18n: I18n, protocol: VpnProtocol | str) -> str:
    value = protocol.value if isinstance(protocol, VpnProtocol) else protocol
    return i18n.t(f"protocol.{value}")


@router.callback_query(MenuCb.filter(F.screen == Screen.DEVICES))
async def on_devices(query: CallbackQuery, services: Services, user: BotUser, i18n: I18n) -> None:
    overview = await services.configs.devices(user.telegram_id)
    if overview.subscription_id is None:
        await show(
            query,
            i18n.t("devices.no_subscription"),
            keyboard(
                [(i18n.t("menu.plans"), MenuCb(screen=Screen.PLANS))],
                None if user.trial_used else [(i18n.t("menu.trial"), MenuCb(screen=Screen.TRIAL))],
                _back(i18n),
            ),
        )
        return
    lines = [i18n.t("devices.title", used=len(overview.devices), limit=overview.device_limit)]
    rows: list[list[Button]] = []
    for device in overview.devices:
        lines.append(device_line(i18n, device))
        rows.append(
            [
                (
                    f"{protocol_name(i18n, device.protocol)} · "
                    f"{device.device_name or device.config_id}",
                    DeviceCb(config_id=device.config_id, action=DeviceAction.VIEW),
                )
            ]
        )
    if len(overview.devices) < overview.device_limit:
        rows.append([(i18n.t("devices.connect"), MenuCb(screen=Screen.NEW_DEVICE))])
    else:
        lines.append(i18n.t("devices.limit_reached"))
    await show(query, "\n".join(lines), keyboard(*rows, _back(i18n)))


def device_line(i18n: I18n, device: DeviceView) -> str:
    return i18n.t(
        "devices.line",
        name=esc(device.device_name or f"#{device.config_id}"),
        protocol=protocol_name(i18n, device.protocol),
        flag=flag(device.country_code),
        server=esc(device.server_name),
    )


@router.callback_query(MenuCb.filter(F.screen == Screen.NEW_DEVICE))
async def on_new_device(
    query: CallbackQuery, services: Services, user: BotUser, i18n: I18n
) -> None:
    overview = await services.configs.devices(user.telegram_id)
    if overview.subscription_id is None:
        await show(query, i18n.t("devices.no_subscription"), keyboard(_plans(i18n), _back(i18n)))
        return
    if len(overview.devices) >= overview.device_limit:
        await show(query, i18n.t("devices.limit_reached"), keyboard(_devices(i18n)))
        return
    protocols = await services.configs.available_protocols()
    if not protocols:
        await show(query, i18n.t("error.no_server_available"), keyboard(_devices(i18n)))
        return
    buttons: list[Button] = [(i18n.t("protocol.auto"), NewDeviceCb(protocol=AUTO))]
    buttons += [(protocol_name(i18n, p), NewDeviceCb(protocol=p.value)) for p in protocols]
    await show(
        query, i18n.t("devices.choose_protocol"), keyboard(*columns(buttons, 1), _devices(i18n))
    )


@router.callback_query(NewDeviceCb.filter(F.platform == ""))
async def on_new_device_protocol(
    query: CallbackQuery, callback_data: NewDeviceCb, i18n: I18n
) -> None:
    _protocol(callback_data.protocol)  # refuse garbage before showing the next step
    buttons: list[Button] = [
        (name, NewDeviceCb(protocol=callback_data.protocol, platform=platform.value))
        for platform, name in PLATFORM_NAMES.items()
    ]
    await show(
        query, i18n.t("devices.choose_platform"), keyboard(*columns(buttons), _devices(i18n))
    )


@router.callback_query(NewDeviceCb.filter(F.platform != ""))
async def on_new_device_platform(
    query: CallbackQuery,
    callback_data: NewDeviceCb,
    bot: Bot,
    services: Services,
    user: BotUser,
    i18n: I18n,
) -> None:
    protocol = _protocol(callback_data.protocol)
    try:
        platform = Platform(callback_data.platform)
    except ValueError:
        raise InvalidInput("unknown platform") from None
    overview = await services.configs.devices(user.telegram_id)
    same = sum(
        1 for d in overview.devices if (d.device_name or "").startswith(PLATFORM_NAMES[platform])
    )
    name = PLATFORM_NAMES[platform] + (f" {same + 1}" if same else "")
    await answer(query, i18n.t("devices.preparing"))
    config = await services.configs.provision(user.telegram_id, protocol, device_name=name)
    rendered = await services.configs.render_for(user.telegram_id, config.id)
    await send_config(bot, user.telegram_id, i18n, rendered, platform)


@router.callback_query(DeviceCb.filter(F.action == DeviceAction.VIEW))
async def on_device(
    query: CallbackQuery, callback_data: DeviceCb, services: Services, user: BotUser, i18n: I18n
) -> None:
    device = await _owned_device(services, user, callback_data.config_id)
    cid = device.config_id
    await show(
        query,
        i18n.t("devices.details", line=device_line(i18n, device)),
        keyboard(
            [(i18n.t("devices.get"), DeviceCb(config_id=cid, action=DeviceAction.GET))],
            [(i18n.t("devices.rotate"), DeviceCb(config_id=cid, action=DeviceAction.ROTATE))],
            [(i18n.t("devices.delete"), DeviceCb(config_id=cid, action=DeviceAction.DELETE))],
            _devices(i18n),
        ),
    )


@router.callback_query(DeviceCb.filter(F.action == DeviceAction.GET))
async def on_get(
    query: CallbackQuery,
    callback_data: DeviceCb,
    bot: Bot,
    services: Services,
    user: BotUser,
    i18n: I18n,
) -> None:
    rendered = await services.configs.render_for(user.telegram_id, callback_data.config_id)
    await answer(query)
    await send_config(bot, user.telegram_id, i18n, rendered, None)


@router.callback_query(DeviceCb.filter(F.action.in_({DeviceAction.ROTATE, DeviceAction.DELETE})))
async def on_confirm(
    query: CallbackQuery, callback_data: DeviceCb, services: Services, user: BotUser, i18n: I18n
) -> None:
    device = await _owned_device(services, user, callback_data.config_id)
    rotate = callback_data.action is DeviceAction.ROTATE
    confirmed = DeviceAction.ROTATE_CONFIRMED if rotate else DeviceAction.DELETE_CONFIRMED
    await show(
        query,
        i18n.t(
            "devices.rotate_confirm" if rotate else "devices.delete_confirm",
            line=device_line(i18n, device),
        ),
        keyboard(
            [(i18n.t("common.yes"), DeviceCb(config_id=device.config_id, action=confirmed))],
            [(i18n.t("common.no"), DeviceCb(config_id=device.config_id, action=DeviceAction.VIEW))],
        ),
    )


@router.callback_query(DeviceCb.filter(F.action == DeviceAction.ROTATE_CONFIRMED))
async def on_rotate(
    query: CallbackQuery,
    callback_data: DeviceCb,
    bot: Bot,
    services: Services,
    user: BotUser,
    i18n: I18n,
) -> None:
    config = await services.configs.reissue_for(user.telegram_id, callback_data.config_id)
    await show(query, i18n.t("devices.rotated"), keyboard(_devices(i18n)))
    rendered = await services.configs.render_for(user.telegram_id, config.id)
    await send_config(bot, user.telegram_id, i18n, rendered, None)


@router.callback_query(DeviceCb.filter(F.action == DeviceAction.DELETE_CONFIRMED))
async def on_delete(
    query: CallbackQuery, callback_data: DeviceCb, services: Services, user: BotUser, i18n: I18n
) -> None:
    await services.configs.delete_for(user.telegram_id, callback_data.config_id)
    await show(query, i18n.t("devices.deleted"), keyboard(_devices(i18n)))


async def send_config(
    bot: Bot, chat_id: int, i18n: I18n, rendered: RenderedConfig, platform: Platform | None
) -> None:
    """The config in the form its apps import, then how to use it."""
    name = esc(rendered.device_name)
    app = i18n.t(f"apps.{rendered.protocol.value}.{platform.value if platform else 'any'}")
    if rendered.protocol is VpnProtocol.VLESS:
        link = rendered.text.strip()
        await bot.send_message(chat_id, i18n.t("config.vless", name=name, link=esc(link), app=app))
        picture = await asyncio.to_thread(qr.png, link)
        await bot.send_photo(
            chat_id,
            BufferedInputFile(picture, filename="vless-qr.png"),
            caption=i18n.t("config.qr_caption", name=name),
        )
        return
    document = BufferedInputFile(rendered.text.encode(), filename=rendered.filename)
    key = "config.wireguard" if rendered.protocol is VpnProtocol.WIREGUARD else "config.openvpn"
    await bot.send_document(chat_id, document, caption=i18n.t(key, name=name, app=app))
    if rendered.protocol is VpnProtocol.WIREGUARD:
        picture = await asyncio.to_thread(qr.png, rendered.text)
        await bot.send_photo(
            chat_id,
            BufferedInputFile(picture, filename="wireguard-qr.png"),
            caption=i18n.t("config.qr_caption", name=name),
        )


async def _owned_device(services: Services, user: BotUser, config_id: int) -> DeviceView:
    overview = await services.configs.devices(user.telegram_id)
    for device in overview.devices:
        if device.config_id == config_id:
            return device
    raise ConfigNotFound(f"no config with id {config_id}")


def _protocol(value: str) -> VpnProtocol | None:
    if value == AUTO:
        return None
    try:
        return VpnProtocol(value)
    except ValueError:
        raise InvalidInput("unknown protocol") from None


def _back(i18n: I18n) -> list[Button]:
    return [(i18n.t("common.back"), MenuCb(screen=Screen.MAIN))]


def _devices(i18n: I18n) -> list[Button]:
    return [(i18n.t("common.back"), MenuCb(screen=Screen.DEVICES))]


def _plans(i18n: I18n) -> list[Button]:
    return [(i18n.t("menu.plans"), MenuCb(screen=Screen.PLANS))]
