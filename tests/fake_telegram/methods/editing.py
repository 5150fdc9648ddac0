"""Editing a bot's own messages: text, caption, inline keyboard."""

from __future__ import annotations

from typing import Any

from ..errors import NOT_MODIFIED, bad_request
from ..markup import check_markup_limits
from ..state import StoredMessage
from . import Ctx, api_method
from .common import check_caption, check_text, formatted, inline_markup, own_message

_KEEP = object()


def _apply(
    ctx: Ctx,
    message: StoredMessage,
    new_content: dict[str, Any],
    drop: tuple[str, ...],
    new_markup: dict[str, Any] | None,
    parse_mode: object = _KEEP,
) -> dict[str, Any]:
    """Replace part of a message; an edit that changes nothing is refused as Telegram does."""
    check_markup_limits(new_markup)
    old = {key: message.content.get(key) for key in (*drop, *new_content)}
    new = {key: new_content.get(key) for key in old}
    if old == new and message.inline_markup() == new_markup:
        raise bad_request(NOT_MODIFIED)
    for key in drop:
        message.content.pop(key, None)
    message.content.update(new_content)
    if parse_mode is not _KEEP:
        message.parse_mode = parse_mode if isinstance(parse_mode, str) else None
    # Without reply_markup an edit removes the inline keyboard; a reply keyboard stays.
    if new_markup is not None or message.inline_markup() is not None:
        message.reply_markup = new_markup
    ctx.tg.touched(message, edited=True)
    return message.json()


@api_method("editMessageText")
def edit_message_text(ctx: Ctx) -> dict[str, Any]:
    text = ctx.args.text("text")
    if not text:
        raise bad_request("Message text is empty")
    plain, entities = formatted(ctx, text, "entities")
    new_markup = inline_markup(ctx)
    message = own_message(ctx, "message to edit")
    if "text" not in message.content:
        raise bad_request("there is no text in the message to edit")
    check_text(plain)
    content: dict[str, Any] = {"text": plain}
    if entities:
        content["entities"] = entities
    parse_mode = ctx.args.text("parse_mode") or None
    return _apply(ctx, message, content, ("entities",), new_markup, parse_mode)


@api_method("editMessageCaption")
def edit_message_caption(ctx: Ctx) -> dict[str, Any]:
    plain, entities = formatted(ctx, ctx.args.text("caption"), "caption_entities")
    new_markup = inline_markup(ctx)
    message = own_message(ctx, "message to edit")
    if not any(key in message.content for key in ("photo", "document")):
        raise bad_request("there is no caption in the message to edit")
    check_caption(plain)
    content: dict[str, Any] = {}
    if plain:
        content["caption"] = plain
    if entities:
        content["caption_entities"] = entities
    parse_mode = ctx.args.text("parse_mode") or None
    return _apply(ctx, message, content, ("caption", "caption_entities"), new_markup, parse_mode)


@api_method("editMessageReplyMarkup")
def edit_message_reply_markup(ctx: Ctx) -> dict[str, Any]:
    new_markup = inline_markup(ctx)
    message = own_message(ctx, "message to edit")
    return _apply(ctx, message, {}, (), new_markup)
