"""What sending and editing methods share: formatted text, the target chat, reply, limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ApiError, bad_request
from ..formatting import format_text
from ..markup import check_markup_limits, parse_reply_markup
from ..state import ChatState, StoredMessage
from . import Ctx

MAX_TEXT = 4096
MAX_CAPTION = 1024


@dataclass
class Target:
    chat: ChatState
    thread_id: int | None
    reply_to: StoredMessage | None


def formatted(
    ctx: Ctx, text: str, entities_field: str, parse_mode_field: str = "parse_mode"
) -> tuple[str, list[dict[str, Any]]]:
    try:
        raw_entities = ctx.args.json_value(entities_field, "entities")
    except ApiError:  # the real server ignores entities it cannot parse
        raw_entities = None
    return format_text(
        text, ctx.args.text(parse_mode_field), raw_entities, ctx.tg.user_for_bot(ctx.bot)
    )


def text_content(
    plain: str, entities: list[dict[str, Any]], *, caption: bool = False
) -> dict[str, Any]:
    key = "caption" if caption else "text"
    content: dict[str, Any] = {}
    if plain or not caption:
        content[key] = plain
    if entities:
        content[f"{key}_entities" if caption else "entities"] = entities
    return content


def check_text(plain: str) -> None:
    if not plain:
        raise bad_request("Message must be non-empty")
    if len(plain) > MAX_TEXT:
        raise bad_request("Message is too long")


def check_caption(plain: str) -> None:
    if len(plain) > MAX_CAPTION:
        raise bad_request("Message caption is too long")


def markup(ctx: Ctx) -> dict[str, Any] | None:
    return parse_reply_markup(ctx.args.text("reply_markup"))


def target(ctx: Ctx) -> Target:
    """The chat, topic and replied message of a send, checked the way the Bot API does."""
    chat = ctx.tg.chat_for(ctx.bot, ctx.args.text("chat_id"), write=True)
    thread = max(ctx.args.integer("message_thread_id"), 0)
    if thread:
        if chat.type == "private":
            raise bad_request("message thread not found")
        if chat.is_forum:
            topic = chat.topics.get(thread)
            if topic is None:
                raise bad_request("message thread not found")
        else:
            thread = 0  # reply threads of ordinary supergroups are not modelled
    reply_to = _reply_to(ctx, chat)
    if reply_to is not None and chat.is_forum and not thread and reply_to.thread_id:
        thread = reply_to.thread_id
    return Target(chat, thread or None, reply_to)


def _reply_to(ctx: Ctx, chat: ChatState) -> StoredMessage | None:
    params = ctx.args.json_value("reply_parameters", "reply parameters")
    if params is None:
        message_id = max(ctx.args.integer("reply_to_message_id"), 0)
        allow = ctx.args.flag("allow_sending_without_reply")
    else:
        if not isinstance(params, dict):
            raise bad_request("Object expected as reply parameters")
        message_id = int(params.get("message_id") or 0)
        allow = bool(params.get("allow_sending_without_reply"))
        other_chat = params.get("chat_id")
        if other_chat not in (None, "", chat.id, str(chat.id)):
            raise bad_request("message to be replied not found")
    if not message_id:
        return None
    message = ctx.tg.find_message(chat, message_id)
    if message is None and not allow:
        raise bad_request("message to be replied not found")
    return message


def send(
    ctx: Ctx,
    where: Target,
    content: dict[str, Any],
    reply_markup: dict[str, Any] | None,
    **extra: Any,
) -> StoredMessage:
    """Store a message the bot sends (after the server-side limits) and return it."""
    check_markup_limits(reply_markup)
    return ctx.tg.store(
        where.chat,
        ctx.bot.user,
        content,
        bot=ctx.bot,
        reply_markup=reply_markup,
        thread_id=where.thread_id,
        reply_to=where.reply_to,
        protected=ctx.args.flag("protect_content"),
        **extra,
    )


def own_message(ctx: Ctx, what: str) -> StoredMessage:
    """The message an edit method names; only the bot's own messages can be edited."""
    chat_id = ctx.args.text("chat_id")
    message_id = max(ctx.args.integer("message_id"), 0)
    if not chat_id and not message_id:
        if not ctx.args.text("inline_message_id"):
            raise bad_request("Message identifier is not specified")
        raise bad_request("MESSAGE_ID_INVALID")  # inline messages are not modelled
    chat = ctx.tg.chat_for(ctx.bot, chat_id, write=False)
    message = ctx.tg.find_message(chat, message_id) if message_id else None
    if message is None:
        raise bad_request(f"{what} not found")
    if message.bot_id != ctx.bot.id:
        raise bad_request("Message can't be edited")
    return message


def inline_markup(ctx: Ctx) -> dict[str, Any] | None:
    value = markup(ctx)
    if value is not None and "inline_keyboard" not in value:
        raise bad_request("Inline keyboard expected")
    return value
