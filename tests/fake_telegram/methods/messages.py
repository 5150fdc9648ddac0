"""Sending, copying, forwarding and deleting messages; chat actions; callback answers."""

from __future__ import annotations

from typing import Any

from ..args import to_integer
from ..errors import QUERY_TOO_OLD, bad_request
from ..state import StoredMessage
from . import Ctx, api_method
from .common import (
    check_caption,
    check_text,
    formatted,
    markup,
    send,
    target,
    text_content,
)

_CHAT_ACTIONS = {
    "cancel",
    "typing",
    "record_video",
    "upload_video",
    "record_audio",
    "record_voice",
    "upload_audio",
    "upload_voice",
    "upload_photo",
    "upload_document",
    "choose_sticker",
    "pick_up_location",
    "find_location",
    "record_video_note",
    "upload_video_note",
}
_COPYABLE = ("text", "photo", "document")


def _link_preview_options(ctx: Ctx) -> dict[str, Any] | None:
    value = ctx.args.json_value("link_preview_options", "link preview options")
    if value is None:
        return {"is_disabled": True} if ctx.args.flag("disable_web_page_preview") else None
    if not isinstance(value, dict):
        raise bad_request("Object expected as link preview options")
    return {k: v for k, v in value.items() if v not in (None, False, "")}


@api_method("sendMessage")
def send_message(ctx: Ctx) -> dict[str, Any]:
    preview = _link_preview_options(ctx)
    text = ctx.args.text("text")
    if not text:
        raise bad_request("Message text is empty")
    plain, entities = formatted(ctx, text, "entities")
    reply_markup = markup(ctx)
    where = target(ctx)
    check_text(plain)
    content = text_content(plain, entities)
    if preview:
        content["link_preview_options"] = preview
    message = send(
        ctx, where, content, reply_markup, parse_mode=ctx.args.text("parse_mode") or None
    )
    return message.json()


def _source(ctx: Ctx, what: str) -> StoredMessage:
    from_chat_id = ctx.args.required("from_chat_id")
    message_id = max(ctx.args.integer("message_id"), 0)
    chat = ctx.tg.chat_for(ctx.bot, from_chat_id, write=False)
    message = ctx.tg.find_message(chat, message_id) if message_id else None
    if message is None:
        raise bad_request(f"{what} not found")
    return message


def _copied_content(source: StoredMessage) -> dict[str, Any]:
    if not any(key in source.content for key in _COPYABLE) or source.protected:
        raise bad_request("Message can't be copied")
    return dict(source.content)


@api_method("copyMessage")
def copy_message(ctx: Ctx) -> dict[str, Any]:
    source = _source(ctx, "message to copy")
    content = _copied_content(source)
    parse_mode = source.parse_mode
    if ctx.args.has("caption") and "text" not in content:
        plain, entities = formatted(ctx, ctx.args.text("caption"), "caption_entities")
        check_caption(plain)
        content.pop("caption", None)
        content.pop("caption_entities", None)
        content.update(text_content(plain, entities, caption=True))
        parse_mode = ctx.args.text("parse_mode") or None
    reply_markup = markup(ctx)
    where = target(ctx)
    message = send(
        ctx,
        where,
        content,
        reply_markup,
        parse_mode=parse_mode,
        photo=source.photo,
        document=source.document,
    )
    return {"message_id": message.message_id}


@api_method("forwardMessage")
def forward_message(ctx: Ctx) -> dict[str, Any]:
    source = _source(ctx, "message to forward")
    if not any(key in source.content for key in _COPYABLE) or source.protected:
        raise bad_request("Message can't be forwarded")
    where = target(ctx)
    origin = source.forward_origin or {
        "type": "user",
        "sender_user": source.sender,
        "date": source.date,
    }
    message = send(
        ctx,
        where,
        dict(source.content),
        None,
        parse_mode=source.parse_mode,
        forward_origin=origin,
        photo=source.photo,
        document=source.document,
    )
    return message.json()


@api_method("deleteMessage")
def delete_message(ctx: Ctx) -> bool:
    chat_id = ctx.args.text("chat_id")
    message_id = max(ctx.args.integer("message_id"), 0)
    if not chat_id:
        raise bad_request("Chat identifier is not specified")
    if not message_id:
        raise bad_request("Message identifier is not specified")
    chat = ctx.tg.chat_for(ctx.bot, chat_id, write=False)
    message = ctx.tg.find_message(chat, message_id)
    if message is None:
        raise bad_request("message to delete not found")
    if chat.type != "private" and message.bot_id != ctx.bot.id:
        member = chat.members.get(ctx.bot.id)
        if member is None or member.status not in ("creator", "administrator"):
            raise bad_request("message can't be deleted")
    message.deleted = True
    ctx.tg.touched(message, edited=False)
    return True


@api_method("sendChatAction")
def send_chat_action(ctx: Ctx) -> bool:
    action = ctx.args.text("action")
    if action not in _CHAT_ACTIONS:
        raise bad_request("Wrong parameter action in request")
    ctx.tg.chat_for(ctx.bot, ctx.args.text("chat_id"), write=True)
    return True


@api_method("answerCallbackQuery")
def answer_callback_query(ctx: Ctx) -> bool:
    query_id = str(to_integer(ctx.args.text("callback_query_id")))
    text = ctx.args.text("text")
    query = ctx.tg.callback_queries.get(query_id)
    if query is None or query.bot_id != ctx.bot.id or query.answer is not None:
        raise bad_request(QUERY_TOO_OLD)
    if len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    query.answer = {
        "text": text or None,
        "show_alert": ctx.args.flag("show_alert"),
        "url": ctx.args.text("url") or None,
        "cache_time": ctx.args.integer("cache_time", 0, 0, 30 * 24 * 3600),
    }
    query.answered.set()
    return True
