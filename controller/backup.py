"""Backups of the controller database.

SQLite is copied through its online backup API (consistent even while vpnbot runs).
PostgreSQL goes through ``pg_dump`` / ``pg_restore`` in the custom format. The connection is
handed to them in ``PG*`` environment variables (the password never appears in argv), and the
child gets a minimal environment, not vpnbot's secrets.

A backup is written to a temporary file next to the target and moved into place only when it
is complete, so a failed run leaves nothing behind. A restore refuses files that are not
vpnbot backups or that a newer vpnbot wrote, and saves the current contents first.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from common.proc import CommandError, run_command
from controller.db import migrate
from controller.db.engine import create_engine, is_sqlite, sqlite_path

PG_TIMEOUT_SECONDS = 3600.0
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS}
_CHILD_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# asyncpg's ssl= values, as libpq's sslmode understands them.
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


class BackupError(Exception):
    pass


def _stamped(directory: Path, prefix: str, suffix: str) -> Path:
    """A new file name with the UTC time; never one that exists already."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = directory / f"{prefix}-{stamp}.{suffix}"
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = directory / f"{prefix}-{stamp}-{counter}.{suffix}"
    return candidate


def default_backup_path(data_dir: Path, url: str) -> Path:
    suffix = "sqlite3" if is_sqlite(url) else "pgdump"
    return _stamped(data_dir / "backups", "vpnbot", suffix)


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
        _place(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _place(partial: Path, out: Path) -> None:
    """Move a finished backup into place without ever replacing an existing file."""
    try:
        os.link(partial, out)  # atomic, and fails if the name appeared meanwhile
    except FileExistsError:
        raise BackupError(f"{out} already exists; choose another file") from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise BackupError(f"cannot write {out}: {exc.strerror}") from None
        # A filesystem without hard links (vfat, some network mounts): check, then rename.
        if out.exists():
            raise BackupError(f"{out} already exists; choose another file") from None
        os.replace(partial, out)


async def restore(url: str, source: Path, *, safety_dir: Path) -> Path | None:
    """Replace the database with ``source``.

    The current contents are first saved to ``safety_dir`` (returned), so a wrong file or a
    failed restore can be undone. PostgreSQL: the ``public`` schema is emptied before the
    restore, so no table of a newer schema is left behind.
    """
    if not source.is_file():  # noqa: ASYNC240 - one stat()
        raise BackupError(f"{source} is not a file")
    if is_sqlite(url):
        await asyncio.to_thread(_check_sqlite_backup, source)
        target = _sqlite_file(url, must_exist=False)
        safety = None
        if target.is_file():
            safety = await backup(url, _stamped(safety_dir, "vpnbot-pre-restore", "sqlite3"))
        await asyncio.to_thread(_sqlite_copy, source, target, source_is_backup=True)
        return safety
    await _check_pg_backup(source)
    pg_url = make_url(url)
    safety = await backup(url, _stamped(safety_dir, "vpnbot-pre-restore", "pgdump"))
    await _reset_public_schema(url)
    try:
        await _pg_restore(pg_url, source)
    except BackupError as exc:
        raise BackupError(
            f"{exc}. The database was emptied for the restore; its previous contents are in "
            f"{safety} (restore that file to go back)"
        ) from None
    return safety


async def _reset_public_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
    except DBAPIError as exc:
        raise BackupError(f"cannot empty the database for the restore: {exc.orig}") from None
    finally:
        await engine.dispose()


def _sqlite_file(url: str, *, must_exist: bool) -> Path:
    path = sqlite_path(url)
    if path is None:
        raise BackupError("an in-memory SQLite database cannot be backed up")
    if must_exist and not path.is_file():
        raise BackupError(f"the database file {path} does not exist")
    return path


def _sqlite_copy(source: Path, target: Path, *, source_is_backup: bool = False) -> None:
    """Copy with SQLite's backup API. A backup file is left in rollback-journal mode, so it
    can later be read from read-only media; the live database keeps its WAL mode."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(_ro_uri(source, immutable=source_is_backup), uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                if not source_is_backup:
                    dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
    except (sqlite3.Error, OSError) as exc:
        raise BackupError(f"cannot copy {source} to {target}: {exc}") from None


def _check_sqlite_backup(source: Path) -> None:
    """Refuse files that are not vpnbot databases, or that a newer vpnbot wrote."""
    try:
        connection = sqlite3.connect(_ro_uri(source, immutable=True), uri=True)
        try:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source} is not a vpnbot SQLite backup ({exc})") from None
    _check_revisions(source, tuple(row[0] for row in rows))


def _ro_uri(path: Path, *, immutable: bool) -> str:
    # immutable=1: a backup file is not being written, so SQLite needs no lock or -shm file.
    return f"file:{path}?mode=ro{'&immutable=1' if immutable else ''}"


def _check_revisions(source: Path, revisions: tuple[str, ...]) -> None:
    if not revisions:
        raise BackupError(f"{source} holds no vpnbot schema revision; refusing to restore it")
    try:
        migrate.check_known(revisions)
    except migrate.DatabaseTooNewError:
        raise BackupError(
            f"{source} was made by a newer vpnbot (schema revision {', '.join(revisions)}, "
            f"this vpnbot knows up to {migrate.head_revision()}): upgrade vpnbot to restore it"
        ) from None


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
    # ?host=/cloudsql/... (a socket directory) and ?port= are common in hosted setups.
    if not url.host and query.get("host"):
        env["PGHOST"] = query["host"]
    if not url.port and query.get("port"):
        env["PGPORT"] = query["port"]
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
            "--exit-on-error",
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
