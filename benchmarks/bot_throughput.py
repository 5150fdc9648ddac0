"""Updates per second through the whole client bot stack, against bare aiogram dispatch.

    python benchmarks/bot_throughput.py [--updates 2000] [--users 200] [--population 0]
                                        [--postgres-url URL] [--sqlite | --sqlite-only]

Every variant runs a real aiogram Bot (aiohttp session, long polling) against the fake Bot
API (tests/fake_telegram) on loopback, in this process and event loop:

- bare: a plain Dispatcher with one handler, without filters, that answers every message
  with "ok"; bare mixed: the same, where half the updates are presses on that answer, which
  a second handler edits and then answers (the Bot API calls of a full mixed press);
- full /menu: the client bot as production builds it (``build_app`` with the client
  routers: errors, throttling — set high enough never to hold an update back —, services,
  user registration with its cache, i18n), over a fresh migrated database, answering
  ``/menu`` with the main menu and its keyboard;
- full mixed: the same bot; half the updates are ``/menu``, half are presses on the menu
  message that read the database: "My subscriptions" and a subscription's details
  (each user has one subscription), so an edit and a callback answer each; its ratio is
  taken against bare mixed, which makes the same Bot API calls.

U users first send /start once (registration; its rate is printed for information), then
all N timed updates are queued at once, round robin over the users, so polling fetches
them in batches of 100 as Telegram hands them out. The time runs from the first update
queued until the bot finished the N-th: its sendMessage for a message, its
answerCallbackQuery for a press (the last call a handler makes), as the fake received it.
The answers are checked (an error text or alert instead of a screen is an error).

The database is a fresh one on a PostgreSQL server (--postgres-url, default
VPNBOT_TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/postgres; its user must
be allowed to create databases), dropped afterwards; --sqlite also runs the full variants on
a throw-away SQLite file (the embedded default). ``--population K`` first fills the database
with K other users, each with a subscription and a WireGuard config, to see how the screens'
queries scale. Figures only: missing the target is not an error. The fake Bot API shares the
CPU with the bot (and, on one machine, with PostgreSQL), as it is in this process.

Target (issue 6): the full stack on PostgreSQL at >= 50% of bare's updates/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiogram import Dispatcher, Router  # noqa: E402
from aiogram.types import CallbackQuery, Message  # noqa: E402

from benchmarks.expiry_sweep import describe, fill  # noqa: E402
from bots.client.callbacks import MenuCb, Screen, SubAction, SubCb  # noqa: E402
from bots.common.app import create_bot  # noqa: E402
from bots.common.i18n import CATALOGS  # noqa: E402
from common.logging import configure_logging  # noqa: E402
from controller.crypto import SecretBox  # noqa: E402
from controller.db import migrate  # noqa: E402
from controller.db.engine import create_engine, create_session_factory  # noqa: E402
from controller.db.uow import make_uow_factory  # noqa: E402
from controller.services import Actor, Services, build_services  # noqa: E402
from tests.bots.harness import TOKEN, client_app, running  # noqa: E402
from tests.fake_telegram import FakeBot, FakeTelegram, FakeUser, SentMessage  # noqa: E402

TARGET_RATIO = 0.5
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FIRST_USER = 5_100_000_000
WAIT_SECONDS = 120.0
# The calls that end the handling of one update.
FINISHING = frozenset({"sendMessage", "answerCallbackQuery"})

Queue = Callable[[int], Awaitable[object]]


@dataclass(frozen=True)
class Result:
    variant: str
    updates: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.updates / self.seconds


async def wait_finished(bot: FakeBot, since: int, count: int) -> None:
    """Until ``count`` updates have been finished by calls after index ``since``."""
    calls = bot.calls
    seen, done = since, 0
    deadline = time.perf_counter() + WAIT_SECONDS
    while True:
        for call in calls[seen:]:
            done += call.method in FINISHING
        seen = len(calls)
        if done >= count:
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {done} of {count} updates answered in {WAIT_SECONDS:g} s")
        await asyncio.sleep(0.001)


async def timed(bot: FakeBot, count: int, queue: Queue) -> tuple[float, int]:
    """Queue ``count`` updates at once; seconds until the bot finished them, and where its
    calls for them start."""
    since = len(bot.calls)
    started = time.perf_counter()
    for i in range(count):
        await queue(i)  # no await inside: every update is queued before the bot polls
    await wait_finished(bot, since, count)
    return time.perf_counter() - started, since


def make_users(tg: FakeTelegram, count: int) -> list[FakeUser]:
    return [
        tg.user(
            FIRST_USER + n,
            first_name=f"User{n}",
            username=f"bench_user_{n}",
            language_code="ru" if n % 2 else "en",
        )
        for n in range(count)
    ]


def check(bot: FakeBot, since: int, allowed_texts: set[str]) -> None:
    """Fail on an answer that is not the expected screen (an error text, an alert)."""
    for call in bot.calls[since:]:
        if call.method == "sendMessage" and call.params.get("text") not in allowed_texts:
            raise RuntimeError(f"unexpected answer: {call.params.get('text')!r}")
        if call.method == "answerCallbackQuery" and call.params.get("show_alert") in (True, "true"):
            raise RuntimeError(f"unexpected alert: {call.params.get('text')!r}")


async def stop(dispatcher: Dispatcher, task: asyncio.Task[None]) -> None:
    """Stop polling for good. Cancelling the task that runs ``start_polling`` does not
    (aiogram 3.31): its inner polling task outlives it, retries against the closed fake, and
    could take the next variant's updates if the next fake got the same port."""
    with contextlib.suppress(RuntimeError):  # not polling (any more)
        await dispatcher.stop_polling()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def bare(updates: int, user_count: int, *, mixed: bool = False) -> Result:
    router = Router(name="bare")

    @router.message()  # no filter: aiogram runs a sync one (F.text) in a thread
    async def answer(message: Message) -> None:
        await message.answer("ok")

    @router.callback_query()
    async def press(query: CallbackQuery) -> None:
        # The Bot API work of a full press: edit the message, then answer the query.
        if isinstance(query.message, Message):
            await query.message.edit_text(f"ok {query.data}")
        await query.answer()

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    async with FakeTelegram() as tg:
        bot = tg.add_bot(TOKEN, username="bench_bot")
        users = make_users(tg, user_count)
        client = create_bot(TOKEN, tg.base_url)
        task = asyncio.create_task(
            dispatcher.start_polling(client, handle_signals=False, close_bot_session=True)
        )
        try:

            async def warm(i: int) -> object:
                return await users[i].send("hello")

            await timed(bot, user_count, warm)
            screens = [user.messages[-1] for user in users]

            async def queue(i: int) -> object:
                n, k = i % user_count, i // user_count
                if not mixed or k % 2 == 0:
                    return await users[n].send(f"message {i}")
                # Alternating data, so every edit changes the text (as in the full mix).
                return await users[n].forge_callback(screens[n], "ab"[k // 2 % 2])

            seconds, since = await timed(bot, updates, queue)
            check(bot, since, {"ok"})
        finally:
            await stop(dispatcher, task)
    name = "bare aiogram, mixed (messages + edit presses)" if mixed else "bare aiogram"
    return Result(name, updates, seconds)


async def full(
    services: Services, label: str, updates: int, user_count: int, *, mixed: bool
) -> list[Result]:
    async with FakeTelegram() as tg:
        bot = tg.add_bot(TOKEN, username="vpn_bench_bot", first_name="VPN")
        users = make_users(tg, user_count)
        app = client_app(services, tg, throttle_updates=10**6, throttle_window=1.0)
        async with running(app):
            try:
                return await drive_full(services, bot, users, label, updates, mixed=mixed)
            finally:
                # Stop polling the way aiogram means it to stop, before running() cancels
                # app.run(): cancelling start_polling can leave its polling task behind.
                with contextlib.suppress(RuntimeError):
                    await app.dispatcher.stop_polling()


async def drive_full(
    services: Services,
    bot: FakeBot,
    users: list[FakeUser],
    label: str,
    updates: int,
    *,
    mixed: bool,
) -> list[Result]:
    count = len(users)

    async def start(i: int) -> object:
        return await users[i].send("/start")

    seconds, since = await timed(bot, count, start)
    welcomes = {
        texts[key].format(name=f"User{n}")
        for texts in CATALOGS.values()
        for key in ("start.welcome", "start.welcome_new")
        for n in range(count)
    }
    check(bot, since, welcomes)
    who = "known users" if mixed else "registration"
    # Indented: information, not a variant (no ratio).
    warm_up = Result(f"  warm-up /start, {who} ({label})", count, seconds)

    screens: list[SentMessage] = [user.messages[-1] for user in users]
    presses: list[list[str]] = []
    if mixed:
        for user in users:
            (view,) = await services.subscriptions.overview(user.id)
            presses.append(
                [
                    MenuCb(screen=Screen.SUBSCRIPTIONS).pack(),
                    SubCb(subscription_id=view.id, action=SubAction.VIEW).pack(),
                ]
            )

    async def queue(i: int) -> object:
        n, k = i % count, i // count
        if not mixed or k % 2 == 0:
            return await users[n].send("/menu")
        # Odd rounds press, alternating the list and the details: every edit changes the
        # message (an identical one would be "not modified").
        return await users[n].forge_callback(screens[n], presses[n][k // 2 % 2])

    seconds, since = await timed(bot, updates, queue)
    check(bot, since, {texts["menu.title"] for texts in CATALOGS.values()})
    name = "full mixed (/menu + db presses)" if mixed else "full /menu"
    return [warm_up, Result(f"{name} ({label})", updates, seconds)]


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh database on the server of ``admin_url``, dropped afterwards."""
    import asyncpg

    admin = sa.make_url(admin_url)

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(
            host=admin.host,
            port=admin.port or 5432,
            user=admin.username,
            password=admin.password,
            database=admin.database or "postgres",
            timeout=5,
        )
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    name = f"vpnbot_bench_{uuid.uuid4().hex[:12]}"
    await run(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        await run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def full_variants(
    url: str, label: str, updates: int, user_count: int, population: int
) -> list[Result]:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        if population:
            await fill(engine, population, max(1, population // 1000))
        uow_factory = make_uow_factory(create_session_factory(engine))
        services = build_services(uow_factory, secrets=SecretBox(os.urandom(32)))
        results = await full(services, label, updates, user_count, mixed=False)
        for n in range(user_count):
            await services.subscriptions.grant(Actor.cli(), FIRST_USER + n, days=30)
        results += await full(services, label, updates, user_count, mixed=True)
        return results
    finally:
        await engine.dispose()


def report(results: list[Result], databases: list[str], population: int) -> None:
    base = next(r for r in results if r.variant == "bare aiogram")
    bare_mixed = next((r for r in results if r.variant.startswith("bare aiogram, mixed")), None)
    for database in databases:
        print(f"database: {database}")
    if population:
        print(f"population: {population} other users with a subscription and a config each")
    print(f"{'variant':<46} {'updates':>7} {'seconds':>8} {'updates/s':>10} {'vs bare':>8}")
    for r in results:
        # A mix is compared with the bare mix (the same Bot API calls per update).
        against = bare_mixed if "mixed" in r.variant and bare_mixed is not None else base
        ratio = "-" if r.variant.startswith(" ") else f"{r.rate / against.rate:.2f}"
        print(f"{r.variant:<46} {r.updates:>7} {r.seconds:>8.2f} {r.rate:>10.0f} {ratio:>8}")
    mixed = next((r for r in results if r.variant.startswith("full mixed")), None)
    if mixed is not None and bare_mixed is not None:
        print(
            f"ratio mixed/bare mixed = {mixed.rate / bare_mixed.rate:.2f} "
            f"(mixed/bare = {mixed.rate / base.rate:.2f}; {mixed.variant})"
        )
    headline = next(r for r in results if r.variant.startswith("full /menu"))
    print(
        f"ratio full/bare = {headline.rate / base.rate:.2f} "
        f"(target >= {TARGET_RATIO:.2f}; {headline.variant})"
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("WARNING", "console")
    results = [
        await bare(args.updates, args.users),
        await bare(args.updates, args.users, mixed=True),
    ]
    databases = []
    if not args.sqlite_only:
        async with postgres_database(args.postgres_url) as url:
            databases.append(describe(url))
            results += await full_variants(
                url, "postgresql", args.updates, args.users, args.population
            )
    if args.sqlite or args.sqlite_only:
        with tempfile.TemporaryDirectory(prefix="vpnbot-bench") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            databases.append(describe(url))
            results += await full_variants(url, "sqlite", args.updates, args.users, args.population)
    # The full /menu row of the first database is the headline.
    report(results, databases, args.population)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=2000, help="timed updates per variant")
    parser.add_argument("--users", type=int, default=200, help="distinct users sending them")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("VPNBOT_TEST_POSTGRES_URL", DEFAULT_PG_URL),
        help="a PostgreSQL server whose user may create databases (a scratch one is made)",
    )
    parser.add_argument(
        "--population",
        type=int,
        default=0,
        help="other users already in the database, each with a subscription and a config",
    )
    parser.add_argument("--sqlite", action="store_true", help="also run on a temp SQLite file")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parsed = parser.parse_args()
    if parsed.updates < 1 or parsed.users < 1 or parsed.population < 0:
        parser.error("--updates and --users must be positive, --population not negative")
    asyncio.run(main(parsed))
