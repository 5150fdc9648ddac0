"""How long the expiry sweep takes over many subscriptions (one UPDATE ... RETURNING).

    python benchmarks/expiry_sweep.py --subscriptions 100000
    python benchmarks/expiry_sweep.py --url postgresql://postgres@127.0.0.1/bench

Without --url it uses a throw-away SQLite file. The database given with --url must be empty
or a vpnbot database you do not need: the script migrates it and fills it with rows.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from controller.db import migrate
from controller.db.engine import create_engine, create_session_factory
from controller.db.models import Subscription, User
from controller.db.uow import make_uow_factory
from controller.domain.enums import SubscriptionStatus
from controller.services import build_services
from controller.settings import DatabaseSettings


async def main(url: str, count: int) -> None:
    engine = create_engine(url)
    await migrate.upgrade(engine)
    now = datetime.now(UTC)
    started = time.perf_counter()
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(User),
            [
                {
                    "telegram_id": 10**9 + i,
                    "language_code": "ru",
                    "role": "client",
                    "is_active": True,
                    "is_banned": False,
                    "is_premium": False,
                    "auto_select_protocol": True,
                    "referral_code": f"b{i}",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(count)
            ],
        )
        ids = (await connection.execute(sa.select(User.id).order_by(User.id))).scalars().all()
        # Half of them ran out an hour ago, half run for another month.
        await connection.execute(
            sa.insert(Subscription),
            [
                {
                    "user_id": uid,
                    "status": SubscriptionStatus.ACTIVE,
                    "started_at": now,
                    "expires_at": now + (timedelta(hours=-1) if i % 2 else timedelta(days=30)),
                    "traffic_used_bytes": 0,
                    "device_limit": 1,
                    "auto_renew": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, uid in enumerate(ids)
            ],
        )
    fill = time.perf_counter() - started
    services = build_services(make_uow_factory(create_session_factory(engine)))
    started = time.perf_counter()
    expired = await services.subscriptions.expire_due()
    sweep = time.perf_counter() - started
    started = time.perf_counter()
    again = await services.subscriptions.expire_due()
    idle = time.perf_counter() - started
    await engine.dispose()
    print(f"backend            {engine.dialect.name}")
    print(f"subscriptions      {count}")
    print(f"fill               {fill:.2f} s")
    print(f"sweep (expired {len(expired)})  {sweep * 1000:.1f} ms")
    print(f"sweep (nothing due, {len(again)})  {idle * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=20000)
    parser.add_argument("--url", default=None, help="database URL (default: a temp SQLite file)")
    args = parser.parse_args()
    if args.url:
        url = DatabaseSettings(url=args.url).url
        assert url is not None
    else:
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    asyncio.run(main(url, args.subscriptions))
