"""Message text as Telegram stores it: parse modes, entities, trimming, lengths.

The HTML parser follows tdlib's ``parse_html`` (td/telegram/MessageEntity.cpp) byte for byte, so a
bot's malformed markup fails with the same "can't parse entities: ..." text and the offsets in it
are UTF-8 byte offsets, while entity offsets are UTF-16 code units as in the Bot API.
Markdown and MarkdownV2 are accepted but not parsed (the text is kept as sent, without entities):
the bots of this project format with HTML.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

MAX_TEXT_BYTES = 1 << 15
TRIMMED = " \t\r\n\v\f"

_TAGS = {
    "a",
    "b",
    "strong",
    "i",
    "em",
    "s",
    "strike",
    "del",
    "u",
    "ins",
    "tg-spoiler",
    "tg-emoji",
    "span",
    "pre",
    "code",
    "blockquote",
}
_SIMPLE = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "u": "underline",
    "ins": "underline",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
_ENTITY_TYPES = {
    "mention",
    "hashtag",
    "cashtag",
    "bot_command",
    "url",
    "email",
    "phone_number",
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "blockquote",
    "expandable_blockquote",
    "code",
    "pre",
    "text_link",
    "text_mention",
    "custom_emoji",
    "date_time",
}

UserLookup = Callable[[int], dict[str, Any] | None]


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _ParseError(Exception):
    pass


def _is_space(c: int) -> bool:
    # td::is_space counts the terminating NUL as space, which is what stops its scans.
    return c in (0x20, 0x09, 0x0D, 0x0A, 0x00, 0x0B)


def _is_alnum(c: int) -> bool:
    return 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _decode_html_entity(data: bytes, pos: int) -> tuple[int, int]:
    """(code point, position after the entity), or (0, pos) when this '&' starts no entity."""

    def at(i: int) -> int:
        return data[i] if i < len(data) else 0

    end = pos + 1
    value = 0
    if at(pos + 1) == ord("#"):
        end += 1
        if at(pos + 2) == ord("x"):
            end += 1
            while at(end) and chr(at(end)) in "0123456789abcdefABCDEF":
                value = value * 16 + int(chr(at(end)), 16)
                end += 1
        else:
            while 0x30 <= at(end) <= 0x39:
                value = value * 10 + at(end) - 0x30
                end += 1
        if value == 0 or value >= 0x10FFFF or end - pos >= 10:
            return 0, pos
    else:
        while 0x41 <= at(end) <= 0x5A or 0x61 <= at(end) <= 0x7A:
            end += 1
        name = data[pos + 1 : end]
        named = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}.get(name)
        if named is None:
            return 0, pos
        value = ord(named)
    return value, end + 1 if at(end) == ord(";") else end


def check_url(url: str) -> str | None:
    """The URL as Telegram normalises it, or None when it would drop the link."""
    url = url.strip()
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", url)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme in ("tg", "ton", "tonsite"):
            return f"{scheme}://{rest}" if rest else None
        if scheme not in ("http", "https"):
            return None
    else:
        scheme, rest = "http", url
    host, slash, _ = rest.partition("/")
    host = host.rsplit("@", 1)[-1]
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    if not hostname or not re.match(r"^[A-Za-z0-9.\-\[\]:_\u0080-\U0010ffff]+$", hostname):
        return None
    if "." not in hostname and hostname.lower() != "localhost" and ":" not in hostname:
        return None
    return f"{scheme}://{rest}" if slash else f"{scheme}://{rest}/"


def _parse_html(text: str, users: UserLookup) -> tuple[str, list[dict[str, Any]]]:
    data = text.encode("utf-8")
    size = len(data)

    def at(i: int) -> int:
        return data[i] if i < size else 0

    result = bytearray()
    utf16 = 0
    entities: list[dict[str, Any]] = []
    nested: list[tuple[str, str, int, int]] = []
    i = 0
    while i < size:
        c = data[i]
        if c == ord("&"):
            char, after = _decode_html_entity(data, i)
            if char:
                utf16 += 1 + (char > 0xFFFF)
                result += chr(char).encode("utf-8", "surrogatepass")
                i = after
                continue
        if c != ord("<"):
            if c & 0xC0 != 0x80:
                utf16 += 1 + (c >= 0xF0)
            result.append(c)
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != ord("/"):
            while not _is_space(at(i)) and at(i) != ord(">"):
                i += 1
            if at(i) == 0:
                raise _ParseError(f"Unclosed start tag at byte offset {begin}")
            tag = data[begin + 1 : i].decode("utf-8", "replace").lower()
            if tag not in _TAGS:
                raise _ParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            argument = ""
            while at(i) != ord(">"):
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) == ord(">"):
                    break
                name_begin = i
                while not _is_space(at(i)) and at(i) not in (ord("="), ord(">")):
                    i += 1
                name = data[name_begin:i].decode("utf-8", "replace")
                if not name:
                    raise _ParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {begin}'
                    )
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) != ord("="):
                    if tag == "blockquote" and name == "expandable":
                        argument = "1"
                        continue
                    raise _ParseError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{tag}" at byte offset {begin}'
                    )
                i += 1
                while at(i) != 0 and _is_space(at(i)):
                    i += 1
                if at(i) == 0:
                    raise _ParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                value = bytearray()
                if at(i) not in (ord("'"), ord('"')):
                    token_begin = i
                    while _is_alnum(at(i)) or at(i) in (ord("."), ord("-")):
                        i += 1
                    value += data[token_begin:i].lower()
                    if not _is_space(at(i)) and at(i) != ord(">"):
                        raise _ParseError(
                            f"Unexpected end of name token at byte offset {token_begin}"
                        )
                else:
                    quote = at(i)
                    i += 1
                    while at(i) != quote and at(i) != 0:
                        if at(i) == ord("&"):
                            char, after = _decode_html_entity(data, i)
                            if char:
                                value += chr(char).encode("utf-8", "surrogatepass")
                                i = after
                                continue
                        value.append(at(i))
                        i += 1
                    if at(i) == quote:
                        i += 1
                if at(i) == 0:
                    raise _ParseError(f"Unclosed start tag at byte offset {begin}")
                attribute = value.decode("utf-8", "replace")
                if tag == "a" and name == "href":
                    argument = attribute
                elif tag == "code" and name == "class" and attribute.startswith("language-"):
                    argument = attribute[len("language-") :]
                elif tag == "span" and name == "class" and attribute.startswith("tg-"):
                    argument = attribute[len("tg-") :]
                elif tag == "tg-emoji" and name == "emoji-id":
                    argument = attribute
                elif tag == "blockquote" and name == "expandable":
                    argument = "1"
            if tag == "span" and argument != "spoiler":
                raise _ParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
            nested.append((tag, argument, utf16, len(result)))
            i += 1
            continue

        if not nested:
            raise _ParseError(f"Unexpected end tag at byte offset {begin}")
        while not _is_space(at(i)) and at(i) != ord(">"):
            i += 1
        end_name = data[begin + 2 : i].decode("utf-8", "replace")
        while _is_space(at(i)) and at(i) != 0:
            i += 1
        if at(i) != ord(">"):
            raise _ParseError(f"Unclosed end tag at byte offset {begin}")
        tag, argument, offset, result_begin = nested.pop()
        if end_name and end_name != tag:
            raise _ParseError(
                f'Unmatched end tag at byte offset {begin}, expected "</{tag}>", '
                f'found "</{end_name}>"'
            )
        i += 1
        if utf16 <= offset:
            continue
        length = utf16 - offset
        if tag in _SIMPLE:
            entities.append({"type": _SIMPLE[tag], "offset": offset, "length": length})
        elif tag == "tg-emoji":
            if not argument.isdigit() or int(argument) == 0:
                raise _ParseError("Invalid custom emoji identifier specified")
            entities.append(
                {
                    "type": "custom_emoji",
                    "offset": offset,
                    "length": length,
                    "custom_emoji_id": argument,
                }
            )
        elif tag == "blockquote":
            kind = "expandable_blockquote" if argument else "blockquote"
            entities.append({"type": kind, "offset": offset, "length": length})
        elif tag == "a":
            url = argument or bytes(result[result_begin:]).decode("utf-8", "replace")
            mention = re.fullmatch(r"tg://user\?id=(\d+)", url)
            user = users(int(mention.group(1))) if mention else None
            if user is not None:
                entities.append(
                    {"type": "text_mention", "offset": offset, "length": length, "user": user}
                )
            elif mention is None and (normalized := check_url(url)) is not None:
                entities.append(
                    {"type": "text_link", "offset": offset, "length": length, "url": normalized}
                )
        elif tag == "pre":
            last = entities[-1] if entities else None
            if (
                last is not None
                and last["type"] == "code"
                and (last["offset"], last["length"]) == (offset, length)
                and last.get("language")
            ):
                last["type"] = "pre"
            else:
                entities.append({"type": "pre", "offset": offset, "length": length})
        else:  # code
            last = entities[-1] if entities else None
            if (
                last is not None
                and last["type"] == "pre"
                and (last["offset"], last["length"]) == (offset, length)
                and argument
            ):
                last["language"] = argument
            else:
                entity = {"type": "code", "offset": offset, "length": length}
                if argument:
                    entity["language"] = argument
                entities.append(entity)
    if nested:
        raise _ParseError(f"Can't find end tag corresponding to start tag {nested[-1][0]}")
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    try:
        plain = bytes(result).decode("utf-8")
    except UnicodeDecodeError:
        raise _ParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, check for "
            "unmatched surrogate code units"
        ) from None
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return plain, entities


def _input_entities(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    entities = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_request("Can't parse MessageEntity: expected an Object")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind:
            raise bad_request('Can\'t parse MessageEntity: Field "type" must be of type String')
        if kind not in _ENTITY_TYPES:
            continue
        try:
            offset, length = int(item["offset"]), int(item["length"])
        except (KeyError, TypeError, ValueError):
            raise bad_request(
                "Can't parse MessageEntity: offset and length must be Numbers"
            ) from None
        entity = {k: v for k, v in item.items() if k not in ("offset", "length")}
        entity.update(offset=offset, length=length)
        entities.append(entity)
    return entities


def _trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    stripped_left = text.lstrip(TRIMMED)
    shift = utf16_len(text) - utf16_len(stripped_left)
    plain = stripped_left.rstrip(TRIMMED)
    total = utf16_len(plain)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return plain, kept


def format_text(
    text: str, parse_mode: str, entities: Any, users: UserLookup
) -> tuple[str, list[dict[str, Any]]]:
    """(text, entities) of a message or caption as Telegram would store it."""
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise bad_request("Text is too long")
    mode = parse_mode.lower()
    if text and mode and mode != "none":
        if mode == "html":
            try:
                plain, parsed = _parse_html(text, users)
            except _ParseError as exc:
                raise bad_request(f"Can't parse entities: {exc}") from None
        elif mode in ("markdown", "markdownv2"):
            plain, parsed = text, []
        else:
            raise bad_request("Unsupported parse_mode")
    else:
        plain, parsed = text, _input_entities(entities)
    return _trim(plain, parsed)
