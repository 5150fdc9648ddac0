"""Forum topics of supergroups: create, edit, close, reopen, delete."""

from __future__ import annotations

from typing import Any

from ..errors import bad_request
from ..state import ChatState, Topic
from ..world import BotState
from . import Ctx, api_method

ICON_COLORS = (7322096, 16766590, 13338331, 9367192, 16749490, 16478047)
MAX_NAME = 128


def _forum(ctx: Ctx) -> ChatState:
    chat = ctx.tg.chat_for(ctx.bot, ctx.args.text("chat_id"), write=True)
    if chat.type != "supergroup" or not chat.is_forum:
        raise bad_request("the chat is not a forum")
    return chat


def _manages_topics(chat: ChatState, bot: BotState) -> bool:
    member = chat.members.get(bot.id)
    if member is None:
        return False
    return member.status == "creator" or (
        member.status == "administrator" and member.can_manage_topics
    )


def _topic(ctx: Ctx, chat: ChatState, action: str) -> Topic:
    thread_id = max(ctx.args.integer("message_thread_id"), 0)
    topic = chat.topics.get(thread_id)
    if topic is None:
        raise bad_request("TOPIC_ID_INVALID")
    if not _manages_topics(chat, ctx.bot) and topic.creator_id != ctx.bot.id:
        raise bad_request(f"not enough rights to {action} the topic")
    return topic


def _service(ctx: Ctx, chat: ChatState, thread_id: int, content: dict[str, Any]) -> None:
    message = ctx.tg.store(chat, ctx.bot.user, content, bot=ctx.bot, thread_id=thread_id)
    ctx.tg.deliver(message)


@api_method("createForumTopic")
def create_forum_topic(ctx: Ctx) -> dict[str, Any]:
    chat = _forum(ctx)
    icon_color = ctx.args.integer("icon_color", 0)
    emoji = ctx.args.text("icon_custom_emoji_id")
    if not _manages_topics(chat, ctx.bot):
        raise bad_request("not enough rights to create a topic")
    name = ctx.args.text("name").strip()[:MAX_NAME]
    if not name:
        raise bad_request("Title must be non-empty")
    if icon_color and icon_color not in ICON_COLORS:
        raise bad_request("TOPIC_ICON_COLOR_INVALID")
    created: dict[str, Any] = {"name": name, "icon_color": icon_color or ICON_COLORS[0]}
    if emoji:
        created["icon_custom_emoji_id"] = emoji
    # A topic's id is the id of the service message that created it.
    message = ctx.tg.store(chat, ctx.bot.user, {"forum_topic_created": created}, bot=ctx.bot)
    message.thread_id = message.message_id
    ctx.tg.touched(message, edited=False)
    topic = Topic(
        message.message_id, name, created["icon_color"], emoji or None, creator_id=ctx.bot.id
    )
    chat.topics[topic.thread_id] = topic
    ctx.tg.deliver(message)
    return topic.json()


@api_method("editForumTopic")
def edit_forum_topic(ctx: Ctx) -> bool:
    chat = _forum(ctx)
    topic = _topic(ctx, chat, "edit")
    edited: dict[str, Any] = {}
    name = ctx.args.text("name").strip()[:MAX_NAME]
    if name and name != topic.name:
        edited["name"] = name
    if ctx.args.has("icon_custom_emoji_id"):
        emoji = ctx.args.text("icon_custom_emoji_id")
        if emoji != (topic.icon_custom_emoji_id or ""):
            edited["icon_custom_emoji_id"] = emoji
    if not edited:
        raise bad_request("TOPIC_NOT_MODIFIED")
    topic.name = edited.get("name", topic.name)
    if "icon_custom_emoji_id" in edited:
        topic.icon_custom_emoji_id = edited["icon_custom_emoji_id"] or None
    _service(ctx, chat, topic.thread_id, {"forum_topic_edited": edited})
    return True


def _toggle(ctx: Ctx, closed: bool) -> bool:
    chat = _forum(ctx)
    topic = _topic(ctx, chat, "close" if closed else "reopen")
    if topic.closed == closed:
        raise bad_request("TOPIC_NOT_MODIFIED")
    topic.closed = closed
    kind = "forum_topic_closed" if closed else "forum_topic_reopened"
    _service(ctx, chat, topic.thread_id, {kind: {}})
    return True


@api_method("closeForumTopic")
def close_forum_topic(ctx: Ctx) -> bool:
    return _toggle(ctx, True)


@api_method("reopenForumTopic")
def reopen_forum_topic(ctx: Ctx) -> bool:
    return _toggle(ctx, False)


@api_method("deleteForumTopic")
def delete_forum_topic(ctx: Ctx) -> bool:
    chat = _forum(ctx)
    topic = _topic(ctx, chat, "delete")
    del chat.topics[topic.thread_id]
    for message in chat.messages.values():
        if message.thread_id == topic.thread_id and not message.deleted:
            message.deleted = True
            ctx.tg.touched(message, edited=False)
    return True
