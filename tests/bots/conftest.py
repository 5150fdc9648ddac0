"""Fixtures of the bot tests: a fake Bot API per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fake_telegram import FakeTelegram


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake
