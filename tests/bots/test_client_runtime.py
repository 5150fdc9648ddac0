"""How the client bot runs: webhook mode through the FastAPI endpoint with its secret token,
Redis for conversation state and flood counters, and `vpnbot run` starting it when its token
is set."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.common.webhook import SECRET_HEADER, mount, webhook_path
from bots.runtime import bot_mode
from controller.settings import Settings, SettingsError
from tests.bots.harness import TOKEN, client_app, free_port, running, running_client_bot, serving
from tests.conftest import need
from tests.fake_telegram import FakeTelegram
from tests.hub_support import ControllerHarness


async def test_webhook_mode_handles_posted_updates_and_refuses_a_wrong_secret(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}{webhook_path('client')}"
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        fake_bot = tg.add_bot(TOKEN, username="vpn_test_bot")
        bot_app = client_app(controller.services, tg, mode="webhook", webhook_url=url)
        api = FastAPI()
        mount(api, {"client": bot_app})
        async with serving(api, port), running(bot_app):
            alice = tg.user(1001, first_name="Alice")
            await alice.send("/start")
            await alice.wait_message(lambda m: "Привет, Alice" in m.text)
            assert fake_bot.webhook_url == url
            for _ in range(200):  # recorded once the endpoint's response is in
                if tg.webhook_deliveries:
                    break
                await asyncio.sleep(0.01)
            assert [d.status for d in tg.webhook_deliveries] == [200]
            set_webhook = next(c for c in tg.calls if c.method == "setWebhook")
            assert set_webhook.params["secret_token"] == bot_app.secret
            assert "pre_checkout_query" in set_webhook.params["allowed_updates"]

            async with httpx.AsyncClient() as http:
                update = {"update_id": 1, "message": {"message_id": 1}}
                wrong = await http.post(url, json=update, headers={SECRET_HEADER: "nope"})
                assert wrong.status_code == 403
                missing = await http.post(url, json=update)
                assert missing.status_code == 403
                secret = {SECRET_HEADER: bot_app.secret}
                garbage = await http.post(url, content=b"{not json", headers=secret)
                assert garbage.status_code == 400
                invalid = await http.post(url, json=update, headers=secret)  # no date, chat
                assert invalid.status_code == 400
                unknown = await http.post(
                    f"http://127.0.0.1:{port}{webhook_path('admin')}", json=update
                )
                assert unknown.status_code == 404
        # Nobody but Alice was registered by any of that.
        assert [u.telegram_id for u in await controller.services.users.list()] == [1001]


async def test_redis_keeps_conversation_state_and_flood_counters(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await redis.ping()
    except Exception as exc:
        need(False, f"Redis at 127.0.0.1:6379 is not usable: {exc}")
    finally:
        await redis.aclose()
    async with (
        ControllerHarness.open(engine, tmp_path, start_hub=False) as controller,
        running_client_bot(
            controller.services,
            tg,
            redis_url="redis://127.0.0.1:6379/0",
            throttle_updates=50,
            throttle_window=1.0,
        ),
    ):
        alice = tg.user(1001 + os.getpid(), first_name="Alice")
        await alice.send("/start")
        menu = await alice.wait_message(lambda m: "Привет" in m.text)
        await alice.press(menu, "Поддержка")
        support = await alice.wait_message(lambda m: "Поддержка" in m.text)
        await alice.press(support, "Новое обращение")
        await alice.wait_message(lambda m: "Опишите проблему" in m.text)
        await alice.send("Не работает")
        await alice.wait_message(lambda m: "Обращение #" in m.text)


def test_mode_follows_the_public_url(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert bot_mode(Settings()) == "polling"
    monkeypatch.setenv("VPNBOT_API__PUBLIC_URL", "https://vpn.example.com")
    assert bot_mode(Settings()) == "webhook"
    monkeypatch.setenv("VPNBOT_TELEGRAM__MODE", "polling")
    assert bot_mode(Settings()) == "polling"
    monkeypatch.delenv("VPNBOT_API__PUBLIC_URL")
    monkeypatch.setenv("VPNBOT_TELEGRAM__MODE", "webhook")
    with pytest.raises(SettingsError, match="VPNBOT_API__PUBLIC_URL"):
        bot_mode(Settings())


async def test_vpnbot_run_starts_the_client_bot_when_its_token_is_set(
    tmp_path: Path, tg: FakeTelegram
) -> None:
    tg.add_bot(TOKEN, username="vpn_test_bot")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPNBOT_")}
    env.update(
        VPNBOT_TELEGRAM__CLIENT_BOT_TOKEN=TOKEN,
        VPNBOT_TELEGRAM__API_URL=tg.base_url,
        VPNBOT_ENROLLMENT__PORT=str(free_port()),
        VPNBOT_LOG__FORMAT="json",
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from controller.cli.entry import entrypoint; entrypoint()",
            "run",
            "--port",
            str(port),
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            alice = tg.user(1001, first_name="Alice", language_code="en")
            await alice.send("/start")  # queued until the bot polls
            await alice.wait_message(lambda m: "Hi, Alice" in m.text, timeout=60)
            commands = next(c for c in tg.calls if c.method == "setMyCommands")
            assert commands.params["commands"][0]["command"] == "start"
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "client_bot_started" in text and "client_bot_stopped" in text
    assert TOKEN not in text and TOKEN.split(":")[1] not in text  # the token is never logged


async def test_start_up_waits_out_a_busy_bot_api_and_refuses_a_bad_token(
    engine: AsyncEngine, tmp_path: Path, tg: FakeTelegram
) -> None:
    async with ControllerHarness.open(engine, tmp_path, start_hub=False) as controller:
        tg.rate_limit("setMyCommands", times=1, retry_after=1)
        async with running_client_bot(controller.services, tg):
            alice = tg.user(1001, first_name="Alice")
            await alice.send("/start")
            await alice.wait_message(lambda m: "Привет" in m.text, timeout=10)
        unknown = client_app(controller.services, tg, token="999:not-a-bot-the-api-knows")
        with pytest.raises(RuntimeError, match="VPNBOT_TELEGRAM__CLIENT_BOT_TOKEN"):
            await asyncio.wait_for(unknown.run(), 10)
