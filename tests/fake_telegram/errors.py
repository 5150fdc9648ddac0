"""Errors of the fake Bot API.

``ApiError`` is what a method raises to answer ``{"ok": false, ...}``; its description is built the
way telegram-bot-api builds it (a "Bad Request: " prefix, and the first letter of a sentence-like
message lowered while an UPPER_CASE server code is kept), so tests see the real texts.
``FakeTelegramUsageError`` is raised to the *test* when it drives the fake wrongly (pressing a
button that is not there, paying something that is not an invoice): those are bugs in the test,
not answers of Telegram.
"""

from __future__ import annotations

from typing import Any

_PREFIXES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


class ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(
        self, error_code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{error_code} {description}")
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


class FakeTelegramUsageError(Exception):
    """The test asked the fake for something a Telegram user could not do."""


def describe(error_code: int, message: str) -> str:
    """The description telegram-bot-api gives an error ``message`` with this code."""
    prefix = _PREFIXES.get(error_code, "Bad Request")
    if message.startswith(prefix):
        return message
    keep_case = len(message) >= 2 and (message[1] == "_" or "A" <= message[1] <= "Z")
    return f"{prefix}: {message if keep_case else message[0].lower() + message[1:]}"


def bad_request(message: str) -> ApiError:
    return ApiError(400, describe(400, message))


def forbidden(message: str) -> ApiError:
    return ApiError(403, describe(403, message))


def conflict(description: str) -> ApiError:
    return ApiError(409, description)


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


def not_found() -> ApiError:
    # api.telegram.org answers an unknown method with a bare "Not Found" (the self-hosted server
    # says "Not Found: method not found"); tests talk to the former.
    return ApiError(404, "Not Found")


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


# Texts that several methods share.
CHAT_NOT_FOUND = "chat not found"
BLOCKED = "bot was blocked by the user"
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
