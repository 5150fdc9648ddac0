"""Schema migrations with Alembic, driven from code (``vpnbot db ...``).

The migration scripts live in ``controller/db/migrations/versions`` and are named
``YYYY-MM-DD_slug.py``. A database stamped with a revision this code does not know (written
by a newer vpnbot) is refused rather than touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError as AlembicCommandError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseTooNewError(RuntimeError):
    """The database was migrated by a newer version of vpnbot."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s")
    config.set_main_option("truncate_slug_length", "40")
    config.set_main_option("timezone", "UTC")
    # ConfigParser treats '%' specially; URLs may carry percent-encoded passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def _current_revisions(connection: sa.Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def current_revisions(engine: AsyncEngine) -> tuple[str, ...]:
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revisions)


def check_known(revisions: tuple[str, ...]) -> None:
    scripts = script_directory()
    for revision in revisions:
        try:
            known = scripts.get_revision(revision)
        except Exception:  # alembic raises several error types for unknown ids
            known = None
        if known is None:
            raise DatabaseTooNewError(
                f"the database is at schema revision {revision}, which this vpnbot "
                f"(head {head_revision()}) does not know: it was migrated by a newer version. "
                "Upgrade vpnbot, or restore a backup taken before that upgrade."
            )


def _run(connection: sa.Connection, config: Config, action: str, revision: str) -> None:
    config.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(config, revision)
    elif action == "downgrade":
        command.downgrade(config, revision)
    elif action == "stamp":
        command.stamp(config, revision)
    else:  # pragma: no cover - programming error
        raise ValueError(action)


# Any constant works; it only has to be the same in every vpnbot process.
_MIGRATION_LOCK_KEY = 0x76706E62  # "vpnb"


class MigrationError(RuntimeError):
    """A migration could not run (unknown target revision, broken foreign keys...)."""


def _sqlite_foreign_keys(connection: sa.Connection, enabled: bool) -> None:
    # PRAGMA foreign_keys is ignored inside a transaction, so it goes to the driver directly,
    # before SQLAlchemy begins one.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    finally:
        cursor.close()


def _sqlite_foreign_key_violations(connection: sa.Connection) -> list[tuple[object, ...]]:
    return [tuple(row) for row in connection.exec_driver_sql("PRAGMA foreign_key_check")]


@asynccontextmanager
async def migration_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside one transaction, ready for schema changes.

    PostgreSQL: an advisory lock makes concurrent starters queue (one migrates, the others
    then find nothing to do). SQLite: foreign keys are not enforced while the migration runs,
    because batch migrations recreate tables and dropping the old one would fire
    ON DELETE CASCADE into its children; every foreign key is checked before commit instead.
    """
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.run_sync(_sqlite_foreign_keys, False)
        try:
            async with connection.begin():
                if connection.dialect.name == "postgresql":
                    await connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _MIGRATION_LOCK_KEY},
                    )
                yield connection
                if sqlite:
                    broken = await connection.run_sync(_sqlite_foreign_key_violations)
                    if broken:
                        raise MigrationError(
                            f"the migration would leave {len(broken)} broken foreign key(s), "
                            f"e.g. {broken[0]}; nothing was changed"
                        )
        finally:
            if sqlite:
                await connection.run_sync(_sqlite_foreign_keys, True)


async def _migrate(engine: AsyncEngine, action: str, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    async with migration_connection(engine) as connection:
        check_known(await connection.run_sync(_current_revisions))
        try:
            await connection.run_sync(_run, config, action, revision)
        except AlembicCommandError as exc:
            raise MigrationError(f"cannot {action} to {revision!r}: {exc}") from None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _migrate(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _migrate(engine, "downgrade", revision)


async def is_up_to_date(engine: AsyncEngine) -> bool:
    revisions = await current_revisions(engine)
    check_known(revisions)
    return revisions == (head_revision(),)


def _revision(connection: sa.Connection, config: Config, message: str, autogenerate: bool) -> None:
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=autogenerate)


async def revision(engine: AsyncEngine, message: str, *, autogenerate: bool = True) -> None:
    """Write a new migration script (for developers); autogenerate diffs models vs the DB."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    async with migration_connection(engine) as connection:
        await connection.run_sync(_revision, config, message, autogenerate)
