"""Time as the system sees it: timezone-aware UTC, from a clock that tests can replace."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""What services, the hub and the scheduler call for "now"; always returns an aware UTC time."""


def utcnow() -> datetime:
    return datetime.now(UTC)
