"""Shared fixtures.

Environment:
- ``VPNBOT_TEST_POSTGRES_URL``: a PostgreSQL server URL whose user may create databases
  (default ``postgresql://postgres@127.0.0.1:5432/postgres``). The suite creates its own
  database there and drops it at the end.
- ``VPNBOT_TEST_STRICT=1`` (set by CI): a test that needs a missing service, program or root
  fails instead of being skipped.
"""

from __future__ import annotations

import os
import uuid

# Tests start subprocesses from a process that runs gRPC: without this, gRPC's fork handlers
# run in every forked child and can abort it before it execs. Set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db import migrate
from controller.db.engine import create_engine, create_session_factory
from controller.db.models import Base
from controller.db.uow import UnitOfWorkFactory, make_uow_factory
from controller.services import Services, build_services

STRICT = os.environ.get("VPNBOT_TEST_STRICT", "").lower() in ("1", "true", "yes")
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Keep the developer's own settings out of the tests.
for _key in [k for k in os.environ if k.startswith("VPNBOT_") and not k.startswith("VPNBOT_TEST_")]:
    del os.environ[_key]


def need(condition: bool, reason: str) -> None:
    """Skip (or, with VPNBOT_TEST_STRICT=1, fail) when a prerequisite is missing."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"missing prerequisite (VPNBOT_TEST_STRICT is set): {reason}")
    pytest.skip(reason)


@dataclass
class FakeClock:
    """A settable clock for services: deterministic expiry and activity times."""

    now: datetime = field(default_factory=lambda: datetime(2026, 1, 15, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


def pg_admin_url() -> str:
    return os.environ.get("VPNBOT_TEST_POSTGRES_URL", DEFAULT_PG_URL)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    url = make_url(pg_admin_url())
    connection = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
        timeout=5,
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def create_pg_database() -> str:
    """Create an empty database on the test server and return its asyncpg URL."""
    name = f"vpnbot_test_{uuid.uuid4().hex[:12]}"
    try:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, Exception) as exc:  # asyncpg raises several unrelated types
        need(False, f"PostgreSQL at {pg_admin_url()} is not usable: {exc}")
    url = make_url(pg_admin_url()).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def tmp_session_dir(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def migrated_engine(
    request: pytest.FixtureRequest, tmp_session_dir
) -> AsyncIterator[AsyncEngine]:  # type: ignore[no-untyped-def]
    """One migrated database per backend for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_session_dir / 'services.db'}"
    else:
        url = await create_pg_database()
    engine = create_engine(url, pool_size=20)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()
    if request.param == "postgresql":
        await drop_pg_database(url)


async def truncate_all(engine: AsyncEngine) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables]
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            joined = ", ".join(f'"{t}"' for t in tables)
            await connection.execute(sa.text(f"TRUNCATE {joined} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                await connection.execute(sa.text(f'DELETE FROM "{table}"'))


@pytest.fixture
async def engine(migrated_engine: AsyncEngine) -> AsyncEngine:
    """A migrated database (SQLite and PostgreSQL), emptied before each test."""
    await truncate_all(migrated_engine)
    return migrated_engine


@pytest.fixture
def backend(engine: AsyncEngine) -> str:
    return engine.dialect.name


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def uow_factory(engine: AsyncEngine) -> UnitOfWorkFactory:
    return make_uow_factory(create_session_factory(engine))


@pytest.fixture
def services(uow_factory: UnitOfWorkFactory, clock: FakeClock) -> Services:
    return build_services(uow_factory, clock)


@pytest.fixture
def pg_only(backend: str) -> None:
    """Marks a test as PostgreSQL-only: its SQLite variant is deselected (not skipped)."""
    assert backend == "postgresql"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_sqlite = callspec is not None and callspec.params.get("migrated_engine") == "sqlite"
        is_pg_only = "pg_only" in getattr(item, "fixturenames", ())
        (dropped if on_sqlite and is_pg_only else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Run in an empty directory (no stray .env) with no VPNBOT_* settings."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("VPNBOT_") and not key.startswith("VPNBOT_TEST_"):
            monkeypatch.delenv(key)
