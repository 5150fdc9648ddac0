"""Backups of the controller database.

SQLite is copied through its online backup API (consistent even while vpnbot runs).
PostgreSQL goes through ``pg_dump`` / ``pg_restore`` in the custom format. The connection is
handed to them in ``PG*`` environment variables (the password never appears in argv), and the
child gets a minimal environment, not vpnbot's secrets.

A backup is written to a temporary file next to the target and moved into place only when it
is complete, so a failed run leaves nothing behind. A restore refuses files that are not
vpnbot backups or that a newer vpnbot wrote.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from controller.db import migrate
from controller.db.engine import is_sqlite, sqlite_path
from controller.proc import CommandError, run_command

PG_TIMEOUT_SECONDS = 3600.0
_CHILD_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# asyncpg's ssl= values, as libpq's sslmode understands them.
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


class BackupError(Exception):
    pass


def default_backup_path(data_dir: Path, url: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "sqlite3" if is_sqlite(url) else "pgdump"
    return data_dir / "backups" / f"vpnbot-{stamp}.{suffix}"


async def backup(url: str, out: Path) -> Path:
    if out.exists():  # noqa: ASYNC240 - one stat() before a long copy
        raise BackupError(f"{out} already exists; choose another file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {out.parent}: {exc.strerror}") from None
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        if is_sqlite(url):
            await asyncio.to_thread(_sqlite_copy, _sqlite_file(url, must_exist=True), partial)
        else:
            await _pg_dump(make_url(url), partial)
        try:
            os.link(partial, out)  # atomic, and never replaces a file that appeared meanwhile
        except FileExistsError:
            raise BackupError(f"{out} already exists; choose another file") from None
    finally:
        partial.unlink(missing_ok=True)
    return out


async def restore(url: str, source: Path) -> None:
    if not source.is_file():  # noqa: ASYNC240 - one stat()
        raise BackupError(f"{source} is not a file")
    if is_sqlite(url):
        await asyncio.to_thread(_check_sqlite_backup, source)
        await asyncio.to_thread(_sqlite_copy, source, _sqlite_file(url, must_exist=False))
    else:
        await _check_pg_backup(source)
        await _pg_restore(make_url(url), source)


def _sqlite_file(url: str, *, must_exist: bool) -> Path:
    path = sqlite_path(url)
    if path is None:
        raise BackupError("an in-memory SQLite database cannot be backed up")
    if must_exist and not path.is_file():
        raise BackupError(f"the database file {path} does not exist")
    return path


def _sqlite_copy(source: Path, target: Path) -> None:
    try:
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
    except (sqlite3.Error, OSError) as exc:
        raise BackupError(f"cannot copy {source} to {target}: {exc}") from None


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
    _check_revisions(source, tuple(row[0] for row in rows))


def _check_revisions(source: Path, revisions: tuple[str, ...]) -> None:
    if not revisions:
        raise BackupError(f"{source} holds no vpnbot schema revision; refusing to restore it")
    migrate.check_known(revisions)


def _libpq_env(url: URL) -> dict[str, str]:
    """Connection settings for pg_dump/pg_restore as PG* variables (no password in argv).

    Only what libpq understands is passed on: asyncpg-only URL options (ssl=, statement
    cache sizes...) would make libpq refuse the URL.
    """
    env = {name: os.environ[name] for name in _CHILD_ENV_KEEP if name in os.environ}
    for key, value in (
        ("PGHOST", url.host),
        ("PGPORT", str(url.port) if url.port else None),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value:
            env[key] = value
    query = {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()}
    mode = query.get("sslmode") or query.get("ssl")
    if mode in _SSL_MODES:
        env["PGSSLMODE"] = mode
    elif mode in ("true", "True", "1"):
        env["PGSSLMODE"] = "require"
    return env


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
    await _run_pg([tool, "--format=custom", "--no-owner", f"--file={out}"], _libpq_env(url))


async def _check_pg_backup(source: Path) -> None:
    """Read the schema revision out of a custom-format dump before restoring it."""
    tool = _require_tool("pg_restore")
    output = await _run_pg(
        [tool, "--data-only", "--table=alembic_version", "--file=-", str(source)],
        {name: os.environ[name] for name in _CHILD_ENV_KEEP if name in os.environ},
        what=f"{source} is not a vpnbot PostgreSQL backup",
    )
    revisions: list[str] = []
    copying = False
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("COPY ") and "alembic_version" in line:
            copying = True
        elif copying and line == "\\.":
            copying = False
        elif copying and line.strip():
            revisions.append(line.strip())
    _check_revisions(source, tuple(revisions))


async def _pg_restore(url: URL, source: Path) -> None:
    tool = _require_tool("pg_restore")
    env = _libpq_env(url)
    await _run_pg(
        [
            tool,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            f"--dbname={env.get('PGDATABASE', '')}",
            str(source),
        ],
        env,
    )


async def _run_pg(argv: list[str], env: dict[str, str], what: str | None = None) -> bytes:
    try:
        result = await run_command(argv, timeout=PG_TIMEOUT_SECONDS, env=env, inherit_env=False)
    except CommandError as exc:
        raise BackupError(str(exc)) from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        detail = message[-1] if message else "no output"
        raise BackupError(f"{what}: {detail}" if what else f"{Path(argv[0]).name} failed: {detail}")
    return result.stdout
