"""PostgreSQL connections as the pool hands them out: checked before use, and a read-only unit
of work that holds no transaction and leaves none of that behind for the next user."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db import migrate
from controller.db.engine import create_engine, create_session_factory
from controller.db.uow import UnitOfWork, make_uow_factory
from tests.conftest import _pg_admin, create_pg_database, drop_pg_database

PID = sa.text("SELECT pg_backend_pid()")
NOW = sa.text("SELECT now()")


@pytest.fixture
async def pg_engine() -> AsyncIterator[AsyncEngine]:
    """A migrated PostgreSQL database behind a pool of one connection (so every unit of work
    below gets the same pooled connection, unless it had to be replaced)."""
    url = await create_pg_database()
    engine = create_engine(url, pool_size=1)
    try:
        await migrate.upgrade(engine)
        yield engine
    finally:
        await engine.dispose()
        await drop_pg_database(url)


async def _pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(PID)).scalar_one())


async def _terminate(pid: int) -> None:
    await _pg_admin(f"SELECT pg_terminate_backend({pid})")
    # pg_terminate_backend only signals: wait until the backend is really gone.
    for _ in range(100):
        try:
            await _pg_admin(
                f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {pid}) "
                "THEN RAISE EXCEPTION 'alive'; END IF; END $$"
            )
            return
        except Exception:  # asyncpg's RaiseError: still there
            await asyncio.sleep(0.05)
    raise AssertionError(f"backend {pid} did not end")


async def test_a_pooled_connection_the_server_closed_is_replaced_before_use(
    pg_engine: AsyncEngine,
) -> None:
    first = await _pid(pg_engine)
    assert await _pid(pg_engine) == first  # the pool reuses its one connection
    await _terminate(first)  # e.g. a server restart or an idle timeout while pooled

    # The next user gets a working connection, not "connection was closed".
    uow_factory = make_uow_factory(create_session_factory(pg_engine))
    async with uow_factory().read_only() as uow:
        second = int((await uow.session.execute(PID)).scalar_one())
    assert second != first
    async with uow_factory() as uow:
        assert int((await uow.session.execute(PID)).scalar_one()) == second


async def _two_nows(uow: UnitOfWork) -> tuple[object, object]:
    first = (await uow.session.execute(NOW)).scalar_one()
    await asyncio.sleep(0.02)
    return first, (await uow.session.execute(NOW)).scalar_one()


async def test_read_only_work_holds_no_transaction_and_leaves_the_connection_transactional(
    pg_engine: AsyncEngine,
) -> None:
    uow_factory = make_uow_factory(create_session_factory(pg_engine))
    # now() is the start of the current transaction: two statements of one transaction
    # see the same value, two statements on their own see different ones.
    async with uow_factory().read_only() as uow:
        earlier, later = await _two_nows(uow)
    assert earlier != later

    # The same pooled connection, for a writer: one transaction again, and leaving without
    # a commit rolls its write back.
    async with uow_factory() as uow:
        earlier, later = await _two_nows(uow)
        assert earlier == later
    async with uow_factory() as uow:
        assert await uow.app_settings.insert_if_absent("probe", 1)
        # not committed: had the connection stayed in autocommit, the row would be kept
    async with uow_factory().read_only() as uow:
        assert await uow.app_settings.get("probe") is None
