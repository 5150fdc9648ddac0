"""SQLite as the agent uses it: WAL, fsync on every commit, explicit transactions."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def connect(path: Path, schema: str, *, threads: bool = False) -> sqlite3.Connection:
    # Owner-only before SQLite writes anything: the state holds preshared keys. SQLite gives
    # its -wal and -shm files the database file's mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    db = sqlite3.connect(path, check_same_thread=not threads, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit the agent answered for survives power loss, not only a crash.
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
