"""About the bot and its chats: getMe, getChat, getChatMember, bot commands."""

from __future__ import annotations

import json
import re
from typing import Any

from ..args import to_integer
from ..errors import bad_request
from ..state import ChatState, Member
from . import Ctx, api_method

_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_SCOPES = ("default", "all_private_chats", "all_group_chats", "all_chat_administrators")
_PERMISSIONS = (
    "can_send_messages",
    "can_send_media_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_react_to_messages",
    "can_edit_tag",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
)
# What an ordinary member of a new supergroup may do.
_MEMBERS_MAY = frozenset(_PERMISSIONS) - {"can_edit_tag", "can_change_info", "can_pin_messages"}


@api_method("getMe")
def get_me(ctx: Ctx) -> dict[str, Any]:
    bot = ctx.bot
    me = bot.user.json()
    me.update(
        can_join_groups=bot.can_join_groups,
        can_read_all_group_messages=bot.can_read_all_group_messages,
        supports_inline_queries=False,
        supports_guest_queries=False,
        can_connect_to_business=False,
        has_main_web_app=False,
        has_topics_enabled=False,
        allows_users_to_create_topics=False,
        can_manage_bots=False,
    )
    return me


def _gift_types(value: bool) -> dict[str, bool]:
    return {
        "unlimited_gifts": value,
        "limited_gifts": value,
        "unique_gifts": value,
        "premium_subscription": value,
        "gifts_from_channels": value,
    }


def full_chat(chat: ChatState) -> dict[str, Any]:
    info = chat.json()
    if chat.type == "private":
        info["can_send_gift"] = True
        if chat.user is not None and chat.user.username:
            info["active_usernames"] = [chat.user.username]
        info["accepted_gift_types"] = _gift_types(True)
    else:
        if chat.username:
            info["active_usernames"] = [chat.username]
        info["permissions"] = {name: name in _MEMBERS_MAY for name in _PERMISSIONS}
        info["accepted_gift_types"] = _gift_types(False)
    info["max_reaction_count"] = 11
    info["accent_color_id"] = abs(chat.id) % 7
    return info


@api_method("getChat")
def get_chat(ctx: Ctx) -> dict[str, Any]:
    return full_chat(ctx.tg.chat_for(ctx.bot, ctx.args.text("chat_id"), write=False))


@api_method("getChatMember")
def get_chat_member(ctx: Ctx) -> dict[str, Any]:
    user_id = max(to_integer(ctx.args.text("user_id")), 0)
    if not user_id:
        raise bad_request("Invalid user_id specified")
    chat = ctx.tg.chat_for(ctx.bot, ctx.args.text("chat_id"), write=False)
    if chat.type == "private":
        assert chat.user is not None
        if user_id == chat.user.id:
            return Member(chat.user, "member").json()
        if user_id == ctx.bot.id:
            return Member(ctx.bot.user, "member").json()
        raise bad_request("user not found")
    member = chat.members.get(user_id)
    if member is not None:
        return member.json()
    user = ctx.tg.users.get(user_id)
    if user is None and user_id in ctx.tg.bots:
        user = ctx.tg.bots[user_id].user
    if user is None:
        raise bad_request("user not found")
    return Member(user, "left").json()


def _scope_key(ctx: Ctx) -> tuple[str, str, str]:
    raw = ctx.args.text("scope")
    if not raw:
        scope: Any = {"type": "default"}
    else:
        try:
            scope = json.loads(raw)
        except ValueError:
            raise bad_request("Can't parse BotCommandScope JSON object") from None
    if not isinstance(scope, dict):
        raise bad_request("BotCommandScope must be an Object")
    kind = scope.get("type")
    if not isinstance(kind, str):
        raise bad_request('Field "type" must be of type String')
    if kind in _SCOPES:
        return (kind, "", ctx.args.text("language_code"))
    if kind not in ("chat", "chat_administrators", "chat_member"):
        raise bad_request("Unsupported type specified")
    chat_id = str(scope.get("chat_id") or "")
    if not chat_id:
        raise bad_request("Empty chat_id specified")
    chat = ctx.tg.chat_for(ctx.bot, chat_id, write=False)
    suffix = str(chat.id)
    if kind == "chat_member":
        user_id = int(scope.get("user_id") or 0)
        if user_id <= 0:
            raise bad_request("Invalid user_id specified")
        suffix += f":{user_id}"
    return (kind, suffix, ctx.args.text("language_code"))


def _check_language(code: str) -> None:
    if code and not re.fullmatch(r"[a-z]{2}", code):
        raise bad_request("LANG_CODE_INVALID")


@api_method("setMyCommands")
def set_my_commands(ctx: Ctx) -> bool:
    raw = ctx.args.json_value("commands", "commands")
    commands = [] if raw is None else raw
    if not isinstance(commands, list):
        raise bad_request("Expected an Array of BotCommand")
    parsed = []
    for item in commands:
        if not isinstance(item, dict):
            raise bad_request("Can't parse BotCommand: expected an Object")
        command, description = item.get("command"), item.get("description")
        if not isinstance(command, str):
            raise bad_request('Can\'t parse BotCommand: Field "command" must be of type String')
        if not isinstance(description, str):
            raise bad_request('Can\'t parse BotCommand: Field "description" must be of type String')
        parsed.append({"command": command, "description": description})
    key = _scope_key(ctx)
    _check_language(key[2])
    if len(parsed) > 100:
        raise bad_request("BOT_COMMANDS_TOO_MUCH")
    for item in parsed:
        if not _COMMAND.match(item["command"]):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(item["description"].strip()) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    if parsed:
        ctx.bot.commands[key] = parsed
    else:
        ctx.bot.commands.pop(key, None)
    return True


@api_method("getMyCommands")
def get_my_commands(ctx: Ctx) -> list[dict[str, str]]:
    key = _scope_key(ctx)
    _check_language(key[2])
    return [dict(item) for item in ctx.bot.commands.get(key, [])]


@api_method("deleteMyCommands")
def delete_my_commands(ctx: Ctx) -> bool:
    key = _scope_key(ctx)
    _check_language(key[2])
    ctx.bot.commands.pop(key, None)
    return True
