"""Backups of the controller database.

SQLite is copied through its online backup API (consistent even while vpnbot runs).
PostgreSQL goes through ``pg_dump`` / ``pg_restore`` in the custom format; the password is
handed over in the environment, never on the command line.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from controller.db import migrate
from controller.db.engine import is_sqlite, sqlite_path
from controller.proc import CommandError, run_command

PG_TIMEOUT_SECONDS = 3600.0


class BackupError(Exception):
    pass


def default_backup_path(data_dir: Path, url: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "sqlite3" if is_sqlite(url) else "pgdump"
    return data_dir / "backups" / f"vpnbot-{stamp}.{suffix}"


async def backup(url: str, out: Path) -> Path:
    if out.exists():  # noqa: ASYNC240 - one stat() before a long copy
        raise BackupError(f"{out} already exists; choose another file")
    out.parent.mkdir(parents=True, exist_ok=True)
    if is_sqlite(url):
        await asyncio.to_thread(_sqlite_copy, _sqlite_file(url, must_exist=True), out)
    else:
        await _pg_dump(make_url(url), out)
    return out


async def restore(url: str, source: Path) -> None:
    if not source.is_file():  # noqa: ASYNC240 - one stat()
        raise BackupError(f"{source} is not a file")
    if is_sqlite(url):
        await asyncio.to_thread(_check_sqlite_backup, source)
        await asyncio.to_thread(_sqlite_copy, source, _sqlite_file(url, must_exist=False))
    else:
        await _pg_restore(make_url(url), source)


def _sqlite_file(url: str, *, must_exist: bool) -> Path:
    path = sqlite_path(url)
    if path is None:
        raise BackupError("an in-memory SQLite database cannot be backed up")
    if must_exist and not path.is_file():
        raise BackupError(f"the database file {path} does not exist")
    return path


def _sqlite_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _check_sqlite_backup(source: Path) -> None:
    """Refuse files that are not vpnbot databases, or that a newer vpnbot wrote."""
    try:
        connection = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source} is not a vpnbot SQLite backup ({exc})") from None
    migrate.check_known(tuple(row[0] for row in rows))


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URL without the password, and the environment carrying it."""
    env = {"PGPASSWORD": url.password} if url.password else {}
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not installed; install the PostgreSQL client tools "
            "(Debian/Ubuntu: apt-get install postgresql-client)"
        )
    return path


async def _pg_dump(url: URL, out: Path) -> None:
    tool = _require_tool("pg_dump")
    conninfo, env = _libpq(url)
    await _run_pg([tool, "--format=custom", "--no-owner", f"--file={out}", conninfo], env)


async def _pg_restore(url: URL, source: Path) -> None:
    tool = _require_tool("pg_restore")
    conninfo, env = _libpq(url)
    await _run_pg(
        [
            tool,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            f"--dbname={conninfo}",
            str(source),
        ],
        env,
    )


async def _run_pg(argv: list[str], env: dict[str, str]) -> None:
    try:
        result = await run_command(argv, timeout=PG_TIMEOUT_SECONDS, env=env)
    except CommandError as exc:
        raise BackupError(str(exc)) from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(f"{Path(argv[0]).name} failed: {message[-1] if message else 'no output'}")
