"""Async engines for PostgreSQL (asyncpg) and the embedded SQLite default (aiosqlite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_TIMEOUT = 10.0  # seconds for a pooled PostgreSQL connection to answer before it is replaced


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo)
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size)
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: AsyncEngine) -> None:
    """Check every pooled connection before use with one round trip.

    A connection the server or a firewall closed while it sat in the pool (a restart, a
    failover, an idle timeout) must not fail the request that draws it. SQLAlchemy's
    ``pool_pre_ping`` does this check, but on asyncpg wraps it in BEGIN and ROLLBACK: three
    round trips before every transaction. This sends the one statement; a connection that
    does not answer is replaced by the pool (DisconnectionError) before anyone uses it.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        try:
            await_only(dbapi_connection.driver_connection.fetchval(";", timeout=PING_TIMEOUT))
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc!r}") from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Make SQLite behave like a database that protects money.

    Foreign keys are off by default in SQLite; WAL lets readers run beside a writer; and every
    transaction starts with ``BEGIN IMMEDIATE`` so two read-modify-write transactions queue on
    the write lock instead of one failing half-way ("database is locked") or losing an update.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below own BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # Migrations switch enforcement off on their connection; whatever happened to that
        # connection, the next user of it gets foreign keys enforced again.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers (READ_ONLY, see UnitOfWork) take no write lock and do not queue behind
        # writers; everything else takes the write lock up front, so read-modify-write
        # transactions serialise instead of failing with "database is locked".
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


READ_ONLY = "vpnbot_read_only"


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or refuses the connection."""


def describe(engine: AsyncEngine) -> str:
    """Where the engine points, for messages (never the password)."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    host = url.host or url.query.get("host") or "the local socket"
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL database {url.database!r} at {host}{port}"


async def ping(engine: AsyncEngine) -> None:
    """Connect once and run ``SELECT 1``; turn connection failures into one clear error."""
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
    except (OSError, TimeoutError, DBAPIError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DatabaseUnavailableError(
            f"cannot connect to the {describe(engine)}: {detail}"
        ) from None
