"""Flood counters: in memory, and in a real Redis shared by several bot processes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiogram.types import Chat, Message, TelegramObject, Update, User
from redis.asyncio import Redis

from bots.common.i18n import CATALOGS
from bots.common.middlewares import ErrorMiddleware, ThrottlingMiddleware
from bots.common.throttling import MemoryRateCounter, RedisRateCounter
from controller.domain.errors import TrialAlreadyUsed
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


def _update(update_id: int, user: User) -> Update:
    return Update(
        update_id=update_id,
        message=Message(
            message_id=update_id,
            date=datetime.now(UTC),
            chat=Chat(id=user.id, type="private"),
            from_user=user,
            text=f"t{update_id}",
        ),
    )


async def test_a_flood_arriving_while_a_held_update_runs_still_keeps_its_last_update() -> None:
    """The release of one held update must not drop the next one held meanwhile."""
    handled: list[int] = []

    async def slow_handler(event: Update, data: dict[str, object]) -> None:
        handled.append(event.update_id)
        await asyncio.sleep(0.5)  # sending a config and its QR code takes a while

    middleware = ThrottlingMiddleware(MemoryRateCounter(1, 0.3))
    user = User(id=1, is_bot=False, first_name="a")

    async def send(update_id: int) -> None:
        await middleware(slow_handler, _update(update_id, user), {"event_from_user": user})

    tasks = [asyncio.create_task(send(1))]
    await asyncio.sleep(0.01)
    await send(2)  # held, released at ~0.3 s, its handler runs until ~0.8 s
    await asyncio.sleep(0.7)
    assert handled == [1, 2]
    tasks.append(asyncio.create_task(send(3)))  # a new window: at once
    await asyncio.sleep(0.02)
    tasks.append(asyncio.create_task(send(4)))  # over the limit: held while 2 still runs
    await asyncio.sleep(1.5)
    assert handled == [1, 2, 3, 4]
    await asyncio.gather(*tasks)
    await middleware.close()


async def test_a_released_update_is_refused_politely_like_any_other() -> None:
    """Held updates go through the error middleware when released (it is inside)."""
    told: list[int] = []

    class Refusing(ErrorMiddleware):
        @staticmethod
        async def _tell(update: Update, text: str) -> None:
            assert text == CATALOGS["ru"]["error.trial_used"]
            told.append(update.update_id)

    async def refuse(event: Update, data: dict[str, object]) -> None:
        raise TrialAlreadyUsed("used")

    throttle, errors = ThrottlingMiddleware(MemoryRateCounter(1, 0.2)), Refusing()
    user = User(id=5, is_bot=False, first_name="a")

    async def feed(update_id: int) -> None:
        async def inner(event: TelegramObject, data: dict[str, object]) -> None:
            await errors(refuse, event, data)  # type: ignore[arg-type]

        await throttle(inner, _update(update_id, user), {"event_from_user": user})

    await feed(1)
    await feed(2)  # held
    await asyncio.sleep(0.5)
    assert told == [1, 2]
    await throttle.close()


async def test_a_failing_counter_lets_updates_through() -> None:
    class Broken:
        async def hit(self, key: str) -> float:
            raise ConnectionError("redis is down")

    handled: list[int] = []

    async def handler(event: Update, data: dict[str, object]) -> None:
        handled.append(event.update_id)

    middleware = ThrottlingMiddleware(Broken())
    user = User(id=9, is_bot=False, first_name="a")
    for update_id in (1, 2, 3):
        await middleware(handler, _update(update_id, user), {"event_from_user": user})
    assert handled == [1, 2, 3]
