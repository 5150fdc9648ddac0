"""Per-user flood control.

A user may send ``limit`` updates per ``window`` seconds. What arrives beyond that is not
handled at once; the *last* such update is kept and handled when the window ends (a user
tapping a button five times gets one answer, for the last tap, not silence). Counting lives
in Redis when configured, so that several bot processes share one budget per user, and in
process memory otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis


class RateCounter(Protocol):
    async def hit(self, key: str) -> float:
        """Count one update; 0.0 when within the limit, else seconds until it frees up."""


class MemoryRateCounter:
    """Fixed windows in this process."""

    def __init__(
        self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, key: str) -> float:
        now = self._clock()
        started, count = self._windows.get(key, (now, 0))
        if now - started >= self._window:
            started, count = now, 0
        count += 1
        self._windows[key] = (started, count)
        if len(self._windows) > 100_000:
            self._forget_old(now)
        if count <= self._limit:
            return 0.0
        return max(started + self._window - now, 0.001)

    def _forget_old(self, now: float) -> None:
        for key, (started, _) in list(self._windows.items()):
            if now - started >= self._window:
                del self._windows[key]


class RedisRateCounter:
    """Fixed windows in Redis: INCR, and the first hit of a window sets its expiry."""

    _SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""

    def __init__(self, redis: Redis, limit: int, window: float, *, prefix: str) -> None:
        self._redis = redis
        self._limit = limit
        self._window_ms = max(math.ceil(window * 1000), 1)
        self._prefix = prefix
        self._script = redis.register_script(self._SCRIPT)

    async def hit(self, key: str) -> float:
        count, ttl = await self._script(keys=[f"{self._prefix}:{key}"], args=[self._window_ms])
        if int(count) <= self._limit:
            return 0.0
        return max(int(ttl), 1) / 1000
