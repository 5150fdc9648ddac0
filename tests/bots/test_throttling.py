"""Flood counters: in memory, and in a real Redis shared by several bot processes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from bots.common.throttling import MemoryRateCounter, RedisRateCounter
from tests.conftest import need


class Ticking:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_memory_counter_allows_the_limit_then_says_how_long_to_wait() -> None:
    clock = Ticking()
    counter = MemoryRateCounter(3, 2.0, clock=clock)
    assert [await counter.hit("u1") for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 0.5
    assert await counter.hit("u1") == pytest.approx(1.5)
    assert await counter.hit("u2") == 0.0  # per user
    clock.now += 1.5
    assert await counter.hit("u1") == 0.0  # a new window


@pytest.fixture
async def redis() -> Redis:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        need(False, f"Redis at 127.0.0.1:6379 is not usable: {exc}")
    yield client
    await client.aclose()


async def test_redis_counter_is_shared_between_processes(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    one = RedisRateCounter(redis, 2, 0.5, prefix=prefix)
    other = RedisRateCounter(redis, 2, 0.5, prefix=prefix)  # a second bot process
    assert await one.hit("7") == 0.0
    assert await other.hit("7") == 0.0
    wait = await one.hit("7")
    assert 0 < wait <= 0.5
    assert await other.hit("8") == 0.0
    await asyncio.sleep(wait + 0.05)
    assert await other.hit("7") == 0.0
    assert await redis.pttl(f"{prefix}:7") > 0  # keys expire on their own
