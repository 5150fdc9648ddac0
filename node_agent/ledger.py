"""The usage ledger: cumulative per-client traffic that survives restarts and counter resets.

VPN software keeps raw counters that restart from zero when a device is re-created, a core
restarts or a client is removed and re-added. The ledger turns periodic raw samples into
**cumulative** totals per (backend, client) that never decrease:

* same epoch and raw >= last raw: the difference is new traffic;
* a new epoch, or raw < last raw: the counter restarted, so all of raw is new traffic;
* ``reset_baseline`` after the agent itself removed or re-created a client (a final sample
  is taken just before, so nothing between the two is lost).

Every change of a total appends an entry with the new totals and a cursor. The controller
reads entries after a cursor and acknowledges; acknowledged entries are deleted. Because
entries carry totals, not differences, an older unacknowledged entry of the same client is
superseded by the newer one and deleted too: the ledger holds at most one pending entry per
client however long the controller is away, and re-reading after a lost response counts
nothing twice.

SQLite in WAL mode with synchronous=FULL: a recorded sample survives a crash or power loss.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent.backends.base import Counters
from node_agent.errors import InvalidStateError, LedgerMismatchError
from node_agent.sqlite import connect, transaction

DEFAULT_READ_LIMIT = 1000
MAX_READ_LIMIT = 10000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    backend   TEXT NOT NULL,
    client_id TEXT NOT NULL,
    rx_total  INTEGER NOT NULL,
    tx_total  INTEGER NOT NULL,
    raw_rx    INTEGER NOT NULL,
    raw_tx    INTEGER NOT NULL,
    epoch     TEXT NOT NULL,
    PRIMARY KEY (backend, client_id)
);
CREATE TABLE IF NOT EXISTS entries (
    cursor     INTEGER PRIMARY KEY AUTOINCREMENT,
    backend    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    rx_total   INTEGER NOT NULL,
    tx_total   INTEGER NOT NULL,
    sampled_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_client ON entries (backend, client_id);
"""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    cursor: int
    backend: str
    client_id: str
    rx_bytes: int
    tx_bytes: int
    sampled_at: dt.datetime


@dataclass(frozen=True, slots=True)
class LedgerPage:
    entries: list[LedgerEntry]
    last_cursor: int
    more: bool
    ledger_id: str


MAX_CURSOR = 2**63 - 1  # SQLite integers are signed 64-bit


def _check_cursor(cursor: int) -> None:
    if not 0 <= cursor <= MAX_CURSOR:
        raise InvalidStateError(f"cursor {cursor} is out of range 0..{MAX_CURSOR}")


class UsageLedger:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = connect(path, _SCHEMA, threads=True)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
        if row is None:
            self.ledger_id = uuid.uuid4().hex
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('ledger_id', ?)", (self.ledger_id,)
            )
        else:
            self.ledger_id = row[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(
        self,
        backend: str,
        epoch: str,
        counters: Mapping[str, Counters],
        now: dt.datetime,
    ) -> int:
        """Fold one raw sample into the totals; return how many clients' totals grew."""
        stamp = now.astimezone(dt.UTC).isoformat()
        grown = 0
        with self._lock, transaction(self._db):
            known = self._known(backend, counters.keys())
            for client_id, raw in counters.items():
                rx_raw, tx_raw = max(raw.rx_bytes, 0), max(raw.tx_bytes, 0)
                previous = known.get(client_id)
                if previous is None:
                    rx_total, tx_total = rx_raw, tx_raw
                else:
                    rx_total, tx_total, last_rx, last_tx, last_epoch = previous
                    restarted = last_epoch != epoch or rx_raw < last_rx or tx_raw < last_tx
                    rx_total += rx_raw if restarted else rx_raw - last_rx
                    tx_total += tx_raw if restarted else tx_raw - last_tx
                    if (rx_raw, tx_raw, epoch) == (last_rx, last_tx, last_epoch):
                        continue
                self._db.execute(
                    "INSERT INTO counters (backend, client_id, rx_total, tx_total, raw_rx, raw_tx,"
                    " epoch) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (backend, client_id) DO "
                    "UPDATE SET rx_total = excluded.rx_total, tx_total = excluded.tx_total, "
                    "raw_rx = excluded.raw_rx, raw_tx = excluded.raw_tx, epoch = excluded.epoch",
                    (backend, client_id, rx_total, tx_total, rx_raw, tx_raw, epoch),
                )
                if previous is not None and (rx_total, tx_total) == previous[:2]:
                    continue
                if previous is None and rx_total == tx_total == 0:
                    continue
                grown += 1
                self._db.execute(
                    "DELETE FROM entries WHERE backend = ? AND client_id = ?", (backend, client_id)
                )
                self._db.execute(
                    "INSERT INTO entries (backend, client_id, rx_total, tx_total, sampled_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (backend, client_id, rx_total, tx_total, stamp),
                )
        return grown

    def _known(self, backend: str, client_ids: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        ids = list(client_ids)
        query = (
            "SELECT client_id, rx_total, tx_total, raw_rx, raw_tx, epoch FROM counters "
            "WHERE backend = ?"
        )
        if len(ids) > 100:  # most of the backend: one scan beats many lookups
            rows = self._db.execute(query, (backend,))
        else:
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(f"{query} AND client_id IN ({marks})", (backend, *ids))
        return {row[0]: row[1:] for row in rows}

    def reset_baseline(self, backend: str, client_ids: Iterable[str]) -> None:
        """The software's counters of these clients restarted from zero (we re-created them)."""
        ids = [(backend, cid) for cid in client_ids]
        if not ids:
            return
        with self._lock, transaction(self._db):
            self._db.executemany(
                "UPDATE counters SET raw_rx = 0, raw_tx = 0 WHERE backend = ? AND client_id = ?",
                ids,
            )

    def read(self, after_cursor: int, limit: int = DEFAULT_READ_LIMIT) -> LedgerPage:
        _check_cursor(after_cursor)
        limit = DEFAULT_READ_LIMIT if limit <= 0 else min(limit, MAX_READ_LIMIT)
        with self._lock:
            rows = self._db.execute(
                "SELECT cursor, backend, client_id, rx_total, tx_total, sampled_at FROM entries "
                "WHERE cursor > ? ORDER BY cursor LIMIT ?",
                (after_cursor, limit + 1),
            ).fetchall()
        more = len(rows) > limit
        entries = [
            LedgerEntry(r[0], r[1], r[2], r[3], r[4], dt.datetime.fromisoformat(r[5]))
            for r in rows[:limit]
        ]
        last = entries[-1].cursor if entries else after_cursor
        return LedgerPage(entries, last, more, self.ledger_id)

    def acknowledge(self, cursor: int, ledger_id: str | None = None) -> int:
        """Drop entries up to ``cursor``; return the cursor now acknowledged.

        A cursor the ledger never issued is refused: acknowledging it would drop entries
        nobody has read; so is an acknowledgement for another ledger (this one was recreated).
        """
        _check_cursor(cursor)
        if ledger_id is not None and ledger_id != self.ledger_id:
            raise LedgerMismatchError(
                f"acknowledgement for ledger {ledger_id!r}, but this agent's ledger is "
                f"{self.ledger_id!r}: read again from cursor 0"
            )
        with self._lock, transaction(self._db):
            issued = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'entries'"
            ).fetchone()
            if cursor > (issued[0] if issued else 0):
                raise InvalidStateError(f"cursor {cursor} was never issued by this ledger")
            self._db.execute("DELETE FROM entries WHERE cursor <= ?", (cursor,))
            row = self._db.execute("SELECT value FROM meta WHERE key = 'acked_cursor'").fetchone()
            acked = max(cursor, int(row[0]) if row else 0)
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('acked_cursor', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(acked),),
            )
        return acked

    def totals(self, backend: str) -> dict[str, Counters]:
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id, rx_total, tx_total FROM counters WHERE backend = ?", (backend,)
            ).fetchall()
        return {r[0]: Counters(r[1], r[2]) for r in rows}

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])
