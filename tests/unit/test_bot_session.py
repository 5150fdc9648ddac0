"""The bots' HTTP session keeps aiogram's reply types alive (built once per process)."""

from __future__ import annotations

import gc
import json
import weakref

from aiogram.methods import GetMe, Response
from aiogram.types import User

from bots.common.app import create_bot

TOKEN = "123456:TEST-session-token"
GET_ME_REPLY = json.dumps(
    {"ok": True, "result": {"id": 123456, "is_bot": True, "first_name": "VPN", "username": "b"}}
)


async def test_a_reply_type_outlives_garbage_collection() -> None:
    bot = create_bot(TOKEN, "http://127.0.0.1:9")  # never contacted: replies are given
    try:
        reply = bot.session.check_response(bot, GetMe(), 200, GET_ME_REPLY)
        assert isinstance(reply.result, User) and reply.result.username == "b"
        del reply
        gc.collect()
        # pydantic caches Response[User] weakly: without the session's reference the class
        # is gone by now, and this builds a new one that the next collection frees again.
        built = weakref.ref(Response[User])
        gc.collect()
        assert built() is not None
        assert Response[User] is built()
    finally:
        await bot.session.close()
