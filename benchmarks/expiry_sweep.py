"""How long the expiry sweep takes over many subscriptions whose configs sit on many nodes.

    python benchmarks/expiry_sweep.py [--subscriptions 100000] [--servers 50]
    python benchmarks/expiry_sweep.py --url postgresql://postgres@127.0.0.1/bench

The sweep is one UPDATE ... RETURNING plus, in the same transaction, the bump of the desired
revision of every node that carries a config of an expired subscription (and, on PostgreSQL,
the NOTIFY that wakes the hubs). Each subscription has one WireGuard config; the configs are
spread evenly over the servers; every other subscription ran out an hour ago.

Without --url it creates a fresh PostgreSQL database on the local test server
(VPNBOT_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres) and drops it
afterwards; if that server is unreachable it uses a throw-away SQLite file. A database given
with --url must be empty or a vpnbot database you do not need: the script migrates it and
fills it with rows.

Target (issue 4): the sweep of 100k subscriptions on PostgreSQL in <= 2 s.
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
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.db import migrate  # noqa: E402
from controller.db.engine import create_engine, create_session_factory  # noqa: E402
from controller.db.models import Server, Subscription, User, VpnConfig  # noqa: E402
from controller.db.uow import make_uow_factory  # noqa: E402
from controller.domain.enums import NodeStatus, SubscriptionStatus, VpnProtocol  # noqa: E402
from controller.services import build_services  # noqa: E402
from controller.settings import DatabaseSettings  # noqa: E402

TARGET_SECONDS = 2.0
PG_ADMIN_URL = os.environ.get(
    "VPNBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def scratch_database(url: str | None) -> AsyncIterator[str]:
    """The database URL to run on: ``url`` if given; otherwise a fresh PostgreSQL database
    on the local test server, dropped afterwards; otherwise (no server) a temp SQLite file."""
    if url:
        normalized = DatabaseSettings(url=url).url
        assert normalized is not None
        yield normalized
        return
    name = f"vpnbot_bench_{uuid.uuid4().hex[:12]}"
    try:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # asyncpg raises several unrelated types
        print(f"(PostgreSQL at {PG_ADMIN_URL} not usable: {exc}; using SQLite)")
        with tempfile.TemporaryDirectory(prefix="vpnbot-bench") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return
    admin = sa.make_url(PG_ADMIN_URL)
    try:
        yield admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def describe(url: str) -> str:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite ({parsed.database})"
    return f"postgresql ({parsed.host}:{parsed.port or 5432}/{parsed.database})"


async def fill(engine: AsyncEngine, count: int, servers: int) -> None:
    """Users, one subscription and one config each, on ``servers`` enrolled nodes; half of
    the subscriptions (every other one, so on every node) ran out an hour ago."""
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(Server),
            [
                {
                    "name": f"bench-{n}",
                    "ip_address": f"192.0.2.{n % 250 + 1}",
                    "grpc_port": 50051,
                    "supported_protocols": ["wireguard"],
                    "primary_protocol": VpnProtocol.WIREGUARD,
                    "wireguard_config": {"backend": "wg", "addresses": ["10.8.0.1/16"]},
                    "max_users": count,
                    "status": NodeStatus.ONLINE,
                    "enrolled_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(servers)
            ],
        )
        server_ids = (
            (await connection.execute(sa.select(Server.id).order_by(Server.id))).scalars().all()
        )
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
                    "server_id": server_ids[i // 2 % servers],
                    "active_protocol": VpnProtocol.WIREGUARD,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, uid in enumerate(ids)
            ],
        )
        subscription_ids = (
            (await connection.execute(sa.select(Subscription.id).order_by(Subscription.id)))
            .scalars()
            .all()
        )
        await connection.execute(
            sa.insert(VpnConfig),
            [
                {
                    "subscription_id": sid,
                    "server_id": server_ids[i // 2 % servers],
                    "protocol": VpnProtocol.WIREGUARD,
                    "client_id": f"bench-key-{i}",
                    "device_name": "wireguard-1",
                    "config_data": {"public_key": f"bench-key-{i}"},
                    "is_active": True,
                    "total_traffic_bytes": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, sid in enumerate(subscription_ids)
            ],
        )
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql("VACUUM ANALYZE")


async def revisions(engine: AsyncEngine) -> dict[int, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(sa.select(Server.id, Server.desired_revision))
        return {int(server_id): int(revision) for server_id, revision in rows.all()}


async def main(url: str, count: int, servers: int) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        started = time.perf_counter()
        await fill(engine, count, servers)
        filled = time.perf_counter() - started
        services = build_services(make_uow_factory(create_session_factory(engine)))
        before = await revisions(engine)
        started = time.perf_counter()
        expired = await services.subscriptions.expire_due()
        sweep = time.perf_counter() - started
        after = await revisions(engine)
        bumped = sum(1 for server_id, revision in after.items() if revision > before[server_id])
        started = time.perf_counter()
        again = await services.subscriptions.expire_due()
        idle = time.perf_counter() - started
        backend = engine.dialect.name
    finally:
        await engine.dispose()
    met = sweep <= TARGET_SECONDS
    print(f"database           {describe(url)}")
    print(f"subscriptions      {count} (one config each, on {servers} servers)")
    print(f"fill               {filled:.2f} s")
    print(
        f"sweep              {sweep * 1000:.1f} ms (expired {len(expired)}, bumped {bumped} nodes)"
    )
    print(f"sweep, nothing due {idle * 1000:.1f} ms (expired {len(again)})")
    verdict = "met" if met else "NOT met"
    note = "" if backend == "postgresql" else " (the target is for PostgreSQL)"
    print(f"target (sweep of 100k <= {TARGET_SECONDS:g} s): {verdict}{note}")


async def run(url: str | None, count: int, servers: int) -> None:
    async with scratch_database(url) as resolved:
        await main(resolved, count, servers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100000)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument(
        "--url", default=None, help="database URL (default: a scratch PostgreSQL database)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.url, args.subscriptions, args.servers))
