"""Callback data of the client bot's buttons.

Only opaque ids and a closed set of actions travel in callback data; everything the ids
refer to is looked up again, with ownership re-checked, in the service on every press.
Data that does not parse (stale, forged, from an older release) matches no filter and is
answered by the fallback handler in :mod:`bots.client.handlers.start`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from pydantic import Field

from controller.domain import rules

# A database id as callback data may carry it: bounded, so a forged huge number is refused
# at parsing instead of reaching the database driver.
Id = Annotated[int, Field(ge=0, le=rules.MAX_RECORD_ID)]


class Screen(StrEnum):
    MAIN = "main"
    PLANS = "plans"
    SUBSCRIPTIONS = "subs"
    DEVICES = "devices"
    NEW_DEVICE = "newdev"
    SERVERS = "servers"
    PROFILE = "profile"
    LANGUAGE = "lang"
    PROTOCOL = "proto"
    AUTO_SELECT = "autosel"
    TRIAL = "trial"
    PROMO = "promo"
    REFERRAL = "ref"
    SUPPORT = "support"
    NEW_TICKET = "newtkt"


class MenuCb(CallbackData, prefix="m"):
    screen: Screen


class PlanAction(StrEnum):
    VIEW = "v"
    BUY = "b"
    PROMO = "p"


class PlanCb(CallbackData, prefix="pl"):
    plan_id: Id
    action: PlanAction


class SubAction(StrEnum):
    VIEW = "v"
    RENEW = "r"
    AUTO_ON = "a1"
    AUTO_OFF = "a0"


class SubCb(CallbackData, prefix="sb"):
    subscription_id: Id
    action: SubAction


class DeviceAction(StrEnum):
    VIEW = "v"
    GET = "g"
    ROTATE = "r"
    ROTATE_CONFIRMED = "rr"
    DELETE = "d"
    DELETE_CONFIRMED = "dd"


class DeviceCb(CallbackData, prefix="dv"):
    config_id: Id
    action: DeviceAction


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"
    WINDOWS = "windows"
    MACOS = "macos"
    LINUX = "linux"
    ROUTER = "router"


class NewDeviceCb(CallbackData, prefix="nd"):
    # "" = not chosen yet; "auto" = let the controller choose.
    protocol: str
    platform: str = ""


class ServerCb(CallbackData, prefix="sv"):
    server_id: Id  # 0 = automatic choice


class ProtocolCb(CallbackData, prefix="pp"):
    protocol: str  # a VpnProtocol value, or "auto"


class LanguageCb(CallbackData, prefix="lg"):
    language: str


class TicketCb(CallbackData, prefix="tk"):
    ticket_id: Id
