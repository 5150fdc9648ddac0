"""Reply markup as telegram-bot-api reads it (``get_reply_markup``) plus the server's limits."""

from __future__ import annotations

import json
from typing import Any

from .errors import bad_request
from .formatting import check_url

_INLINE_ACTIONS = (
    "url",
    "callback_data",
    "callback_game",
    "pay",
    "switch_inline_query",
    "switch_inline_query_chosen_chat",
    "switch_inline_query_current_chat",
    "login_url",
    "web_app",
    "copy_text",
)
_OPTIONAL = ("style", "icon_custom_emoji_id")


def _field_error(name: str, kind: str) -> str:
    return f'Field "{name}" must be of type {kind}'


def _inline_button(button: Any) -> dict[str, Any]:
    if not isinstance(button, dict):
        raise ValueError("InlineKeyboardButton must be an Object")
    text = button.get("text")
    if "text" not in button:
        raise ValueError('Can\'t find field "text"')
    if not isinstance(text, str):
        raise ValueError(_field_error("text", "String"))
    result: dict[str, Any] = {"text": text}
    for key in _OPTIONAL:
        if key in button:
            result[key] = button[key]
    for action in _INLINE_ACTIONS:
        value = button.get(action)
        if action in ("url", "callback_data"):
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise ValueError(_field_error(action, "String"))
        elif action not in button:
            continue
        result[action] = value
        return result
    raise ValueError("Text buttons are unallowed in the inline keyboard")


def _keyboard_button(button: Any) -> dict[str, Any]:
    if isinstance(button, str):
        return {"text": button}
    if not isinstance(button, dict):
        raise ValueError("KeyboardButton must be a String or an Object")
    if not isinstance(button.get("text"), str):
        raise ValueError('Can\'t find field "text"')
    return dict(button)


def _rows(value: Any, name: str, error: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request(_field_error(name, "Array"))
    for row in value:
        if not isinstance(row, list):
            raise bad_request(error)
    return value


def parse_reply_markup(raw: str) -> dict[str, Any] | None:
    """The markup a method received, normalised, or None; errors as the real server words them."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise bad_request("Can't parse reply keyboard markup JSON object") from None
    if not isinstance(value, dict):
        raise bad_request("Object expected as reply markup")

    rows = []
    for row in _rows(
        value.get("keyboard"), "keyboard", 'Field "keyboard" must be an Array of Arrays'
    ):
        try:
            rows.append([_keyboard_button(button) for button in row])
        except ValueError as exc:
            raise bad_request(f"Can't parse keyboard button: {exc}") from None
    inline_rows = []
    for row in _rows(
        value.get("inline_keyboard"),
        "inline_keyboard",
        'Field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays',
    ):
        try:
            inline_rows.append([_inline_button(button) for button in row])
        except ValueError as exc:
            raise bad_request(f"Can't parse inline keyboard button: {exc}") from None

    if rows:
        markup: dict[str, Any] = {"keyboard": rows}
        for key in (
            "is_persistent",
            "resize_keyboard",
            "one_time_keyboard",
            "input_field_placeholder",
            "selective",
        ):
            if key in value:
                markup[key] = value[key]
        return markup
    if inline_rows:
        return {"inline_keyboard": inline_rows}
    if value.get("remove_keyboard") or value.get("hide_keyboard"):
        return {"remove_keyboard": True, **({"selective": True} if value.get("selective") else {})}
    if value.get("force_reply") or value.get("force_reply_keyboard"):
        markup = {"force_reply": True}
        for key in ("input_field_placeholder", "selective"):
            if key in value:
                markup[key] = value[key]
        return markup
    return None


def check_markup_limits(markup: dict[str, Any] | None) -> None:
    """What Telegram's servers refuse in an inline keyboard that the Bot API passed through."""
    if not markup or "inline_keyboard" not in markup:
        return
    for row in markup["inline_keyboard"]:
        for button in row:
            data = button.get("callback_data")
            if data is not None and len(data.encode("utf-8")) > 64:
                raise bad_request("BUTTON_DATA_INVALID")
            url = button.get("url")
            if url is not None and check_url(url) is None:
                raise bad_request(f"Inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
