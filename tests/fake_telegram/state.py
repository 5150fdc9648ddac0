"""What the fake Telegram knows: bots, users, chats, messages, files; and their JSON.

Objects are rendered the way telegram-bot-api renders them (field names, which optional fields
appear and when), so every result parses into aiogram's models and carries what the real API
always sends.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
    "message_reaction",
    "message_reaction_count",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "purchased_paid_media",
    "managed_bot",
    "guest_message",
)
# Without allowed_updates Telegram sends everything but these.
DEFAULT_UPDATES = frozenset(UPDATE_TYPES) - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}


def now() -> int:
    return int(time.time())


def random_id() -> str:
    """A numeric id like Telegram's callback and pre-checkout query ids."""
    return str(secrets.randbits(62) | (1 << 61))


def file_ids() -> tuple[str, str]:
    """A (file_id, file_unique_id) pair shaped like Telegram's (base64url)."""
    return "AgACAgIAAxk" + secrets.token_urlsafe(48), "AQAD" + secrets.token_urlsafe(9)


@dataclass
class UserState:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_premium: bool = False
    is_bot: bool = False
    # Bots this user has opened a private chat with, and those the user blocked.
    started: set[int] = field(default_factory=set)
    blocked: set[int] = field(default_factory=set)

    def json(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code and not self.is_bot:
            user["language_code"] = self.language_code
        if self.is_premium:
            user["is_premium"] = True
        return user


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    kind: str  # "photo" or "document"
    data: bytes
    file_name: str | None = None
    mime_type: str | None = None
    width: int = 0
    height: int = 0
    file_path: str = ""
    size: int = 0
    # All sizes of the photo this one belongs to, so that a photo resent by any file_id is whole.
    sizes: list[StoredFile] = field(default_factory=list, repr=False, compare=False)

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"file_id": self.file_id, "file_unique_id": self.file_unique_id}
        if self.size:
            body["file_size"] = self.size
        if self.kind == "photo":
            body.update(width=self.width, height=self.height)
        return body


@dataclass
class Topic:
    thread_id: int
    name: str
    icon_color: int
    icon_custom_emoji_id: str | None = None
    closed: bool = False
    creator_id: int = 0

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message_thread_id": self.thread_id,
            "name": self.name,
            "icon_color": self.icon_color,
        }
        if self.icon_custom_emoji_id:
            body["icon_custom_emoji_id"] = self.icon_custom_emoji_id
        return body


@dataclass
class Member:
    """A supergroup member: status "creator", "administrator", "member" or "left"."""

    user: UserState
    status: str
    can_manage_topics: bool = True
    can_delete_messages: bool = True

    def json(self) -> dict[str, Any]:
        member: dict[str, Any] = {"user": self.user.json(), "status": self.status}
        if self.status == "creator":
            member["is_anonymous"] = False
        elif self.status == "administrator":
            member.update(
                can_be_edited=False,
                can_manage_chat=True,
                can_change_info=True,
                can_delete_messages=self.can_delete_messages,
                can_invite_users=True,
                can_restrict_members=True,
                can_pin_messages=True,
                can_manage_topics=self.can_manage_topics,
                can_promote_members=False,
                can_manage_video_chats=True,
                can_post_stories=False,
                can_edit_stories=False,
                can_delete_stories=False,
                can_manage_tags=False,
                is_anonymous=False,
                can_manage_voice_chats=True,
                can_send_welcome_messages=False,
            )
        return member

    @property
    def is_admin(self) -> bool:
        return self.status in ("creator", "administrator")


@dataclass
class ChatState:
    id: int
    type: str  # "private" or "supergroup"
    # private: the user on the other side and the bot that owns this chat
    user: UserState | None = None
    bot_id: int = 0
    # supergroup
    title: str = ""
    username: str | None = None
    is_forum: bool = False
    members: dict[int, Member] = field(default_factory=dict)
    topics: dict[int, Topic] = field(default_factory=dict)
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1
    chat_instance: str = field(default_factory=random_id)

    def json(self) -> dict[str, Any]:
        if self.type == "private":
            assert self.user is not None
            chat: dict[str, Any] = {"id": self.id, "first_name": self.user.first_name}
            if self.user.last_name:
                chat["last_name"] = self.user.last_name
            if self.user.username:
                chat["username"] = self.user.username
            chat["type"] = "private"
            return chat
        chat = {"id": self.id, "title": self.title}
        if self.username:
            chat["username"] = self.username
        if self.is_forum:
            chat["is_forum"] = True
        chat["type"] = self.type
        return chat

    def allocate_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id


@dataclass
class SentMessage:
    """A test's view of a message a bot sent; kept current when the bot edits or deletes it."""

    message_id: int
    chat_id: int
    bot_id: int
    text: str = ""
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    buttons: list[tuple[str, str]] = field(default_factory=list)
    invoice: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    photo: bytes | None = None
    deleted: bool = False
    edited: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    entities: list[dict[str, Any]] = field(default_factory=list)
    thread_id: int | None = None
    version: int = 0


def inline_buttons(markup: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not markup or "inline_keyboard" not in markup:
        return []
    found = []
    for row in markup["inline_keyboard"]:
        for button in row:
            target = button.get("callback_data") or button.get("url") or ""
            found.append((button.get("text", ""), target))
    return found


@dataclass
class StoredMessage:
    chat: ChatState
    message_id: int
    sender: dict[str, Any]
    date: int
    content: dict[str, Any]
    bot_id: int = 0  # the bot that sent it; 0 when a user did
    reply_markup: dict[str, Any] | None = None  # as the bot sent it (any keyboard kind)
    parse_mode: str | None = None
    thread_id: int | None = None
    reply_to: StoredMessage | None = None
    forward_origin: dict[str, Any] | None = None
    protected: bool = False
    edit_date: int | None = None
    deleted: bool = False
    version: int = 0
    photo: bytes | None = None
    document: dict[str, Any] | None = None
    view: SentMessage | None = None
    payload: str | None = None  # an invoice's payload, which only the bot and payments see
    paid_by: set[int] = field(default_factory=set)
    # Order of the last send or edit, for waiting on "the next message", and of the send.
    seq: int = 0
    created: int = 0

    @property
    def text(self) -> str:
        return str(self.content.get("text", self.content.get("caption", "")))

    def inline_markup(self) -> dict[str, Any] | None:
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            return self.reply_markup
        return None

    def json(self, with_reply: bool = True) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat.json(),
            "date": self.date,
        }
        if self.edit_date:
            message["edit_date"] = self.edit_date
        if self.thread_id:
            message["message_thread_id"] = self.thread_id
        if self.forward_origin is not None:
            message["forward_origin"] = self.forward_origin
            # telegram-bot-api still sends the pre-7.0 fields beside forward_origin.
            if self.forward_origin["type"] == "user":
                message["forward_from"] = self.forward_origin["sender_user"]
            elif self.forward_origin["type"] == "chat":
                message["forward_from_chat"] = self.forward_origin["sender_chat"]
            message["forward_date"] = self.forward_origin["date"]
        if with_reply and self.reply_to is not None and not self.reply_to.deleted:
            message["reply_to_message"] = self.reply_to.json(with_reply=False)
        message.update(self.content)
        inline = self.inline_markup()
        if inline is not None:
            message["reply_markup"] = inline
        if self.protected:
            message["has_protected_content"] = True
        if self.thread_id and self.chat.is_forum:
            message["is_topic_message"] = True
        return message

    def refresh_view(self) -> None:
        view = self.view
        if view is None:
            return
        view.text = self.text
        view.parse_mode = self.parse_mode
        view.reply_markup = self.reply_markup
        view.buttons = inline_buttons(self.reply_markup)
        view.invoice = self.content.get("invoice")
        view.document = self.document
        view.photo = self.photo
        view.deleted = self.deleted
        view.edited = self.edit_date is not None
        view.raw = self.json()
        view.entities = list(self.content.get("entities", self.content.get("caption_entities", [])))
        view.thread_id = self.thread_id
        view.version = self.version


@dataclass
class Charge:
    charge_id: str
    user_id: int
    bot_id: int
    currency: str
    total_amount: int
    invoice_payload: str
    refunded: bool = False
    date: int = field(default_factory=lambda: int(time.time()))


@dataclass
class PayResult:
    """The outcome of ``FakeUser.pay``: whether the bot let the payment through."""

    ok: bool
    error_message: str | None
    charge_id: str | None
    update: dict[str, Any] | None
    answered: bool = True


@dataclass(frozen=True)
class WebhookDelivery:
    bot_id: int
    update_id: int
    status: int | None  # HTTP status, None when the request itself failed
    error: str | None
