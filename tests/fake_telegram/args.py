"""Request parameters as telegram-bot-api reads them.

Whatever the transport (query string, urlencoded or multipart form, JSON body), the server sees
every parameter as a string: nested objects arrive JSON-encoded, numbers and booleans as text.
Integers are read like ``td::to_integer`` (leading digits, anything else is 0) and clamped, and
booleans like ``to_bool`` ("true", "yes", "1"), so a bot that sends a malformed value gets the
same silent reading it would get from Telegram.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import bad_request


@dataclass(frozen=True)
class Upload:
    """A file sent in a multipart request."""

    data: bytes
    filename: str
    content_type: str


def to_integer(text: str) -> int:
    sign, digits = 1, text
    if digits.startswith("-"):
        sign, digits = -1, digits[1:]
    value = 0
    for char in digits:
        if not "0" <= char <= "9":
            break
        value = value * 10 + ord(char) - ord("0")
    return sign * value


def is_integer(text: str) -> bool:
    body = text[1:] if text.startswith("-") else text
    return body.isascii() and body.isdigit()


def json_to_arg(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


class Args:
    def __init__(self, values: dict[str, str], files: dict[str, Upload]) -> None:
        self.values = values
        self.files = files

    def has(self, name: str) -> bool:
        return name in self.values

    def text(self, name: str) -> str:
        return self.values.get(name, "")

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise bad_request(f'Parameter "{name}" is required')
        return value

    def integer(
        self, name: str, default: int = 0, lo: int | None = None, hi: int | None = None
    ) -> int:
        raw = self.text(name)
        value = to_integer(raw) if raw else default
        if lo is not None:
            value = max(value, lo)
        if hi is not None:
            value = min(value, hi)
        return value

    def flag(self, name: str) -> bool:
        return self.text(name).strip().lower() in ("true", "yes", "1")

    def json_value(self, name: str, what: str) -> Any:
        """The decoded JSON parameter, None when absent; a parse error is the server's."""
        raw = self.text(name)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request(f"Can't parse {what} JSON object") from None

    def upload(self, value: str, field: str) -> Upload | None:
        """The uploaded file a file parameter refers to (``attach://name`` or the field itself)."""
        if value.startswith("attach://"):
            return self.files.get(value[len("attach://") :])
        if not value:
            return self.files.get(field)
        return None

    def decoded(self) -> dict[str, Any]:
        """The parameters for ``tg.calls``: structured values decoded, scalars as sent."""
        result: dict[str, Any] = {}
        for key, value in self.values.items():
            if value[:1] in ("{", "["):
                try:
                    result[key] = json.loads(value)
                    continue
                except ValueError:
                    pass
            result[key] = value
        result.update(self.files)
        return result
