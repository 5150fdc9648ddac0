"""Per-client traffic of an OpenVPN server, cumulative across reconnects and agent restarts.

OpenVPN counts bytes per session, and a session's counters are gone when it ends (a
reconnect, a restart of openvpn). This book turns them into totals per client id that only
grow:

* every poll of ``status 3`` adds, per live session, what it carried since the last poll
  (a session missing from a poll has ended);
* the client-disconnect hook leaves each finished session's final counts in a spool
  directory: what the session carried after the last poll is added from there (and a
  session that began and ended between two polls, or while the agent was away, is counted
  whole);
* sessions are keyed by (common name, connected-since), which both sources carry, and what
  was already counted of each is remembered, so nothing is counted twice: not after an agent
  restart, not when a spool file is read again after a crash.

Traffic goes to the client id that owns the common name when it is counted; traffic of a
common name no enabled client owns is not counted for anyone. Everything is persisted
(atomically) before totals are returned, so a total the agent reported is never lost. The
``epoch`` is made with the book: it changes only when the book itself starts from nothing.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from node_agent.backends.base import Counters
from node_agent.backends.openvpn.management import Session
from node_agent.errors import ConfigError
from node_agent.files import write_atomic

log = structlog.get_logger("node_agent.openvpn")

# How long a finished session is remembered: long enough for its hook file to be read
# after the poll that noticed it was gone, or to be read again after a crash.
CLOSED_RETENTION = 24 * 3600
_SUFFIX = ".session"

OwnerOf = Callable[[str], str | None]


@dataclass(slots=True)
class _Seen:
    rx: int
    tx: int
    closed_at: float | None = None


def session_key(common_name: str, connected_since: int) -> str:
    return f"{common_name}\t{connected_since}"


class UsageBook:
    def __init__(self, path: Path, spool: Path) -> None:
        self.path = path
        self.spool = spool
        self.totals: dict[str, list[int]] = {}
        self._seen: dict[str, _Seen] = {}
        self._dirty = False
        try:
            spool.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {spool}: {exc}") from None
        if path.exists():
            try:
                data = json.loads(path.read_text())
                self.epoch = str(data["epoch"])
                self.totals = {str(k): [int(v[0]), int(v[1])] for k, v in data["totals"].items()}
                self._seen = {
                    str(k): _Seen(int(v[0]), int(v[1]), None if v[2] is None else float(v[2]))
                    for k, v in data["sessions"].items()
                }
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                raise ConfigError(
                    f"{path} is unreadable ({exc}); remove it to restart usage counting"
                ) from None
        else:
            self.epoch = f"openvpn-{uuid.uuid4().hex}"
            self._dirty = True
            try:
                self.save()
            except OSError as exc:
                raise ConfigError(f"cannot write {path}: {exc}") from None

    # --- counting -------------------------------------------------------------------------

    def _count(self, key: str, rx: int, tx: int, owner: str | None) -> _Seen:
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(0, 0)
        if rx < seen.rx or tx < seen.tx:
            # Counters below what was counted: only a new session with the same key (the same
            # name reconnecting within the same second) can do that. Count it from zero.
            seen.rx = seen.tx = 0
        drx, dtx = rx - seen.rx, tx - seen.tx
        if drx or dtx:
            if owner is not None:
                total = self.totals.setdefault(owner, [0, 0])
                total[0] += drx
                total[1] += dtx
            seen.rx, seen.tx = rx, tx
            self._dirty = True
        return seen

    def record_live(self, sessions: Sequence[Session], owner_of: OwnerOf, now: float) -> None:
        """Fold a complete ``status 3`` poll in; sessions missing from it have ended."""
        live: set[str] = set()
        for s in sessions:
            key = session_key(s.common_name, s.connected_since)
            live.add(key)
            seen = self._count(key, s.bytes_received, s.bytes_sent, owner_of(s.common_name))
            if seen.closed_at is not None:
                seen.closed_at = None
                self._dirty = True
        for key, seen in self._seen.items():
            if key not in live and seen.closed_at is None:
                seen.closed_at = now
                self._dirty = True
        self._prune(now)

    def record_finished(self, owner_of: OwnerOf, now: float) -> list[Path]:
        """Fold in the hook's files; return them, to be deleted once ``save`` succeeded."""
        try:
            names = sorted(os.listdir(self.spool))
        except OSError as exc:
            log.warning("openvpn_spool_unreadable", spool=str(self.spool), error=str(exc))
            return []
        done: list[Path] = []
        for name in names:
            if not name.endswith(_SUFFIX):
                continue
            path = self.spool / name
            try:
                line = path.read_text()
                common_name, since, rx, tx = line.rstrip("\n").split("\t")
                key = session_key(common_name, int(since))
                seen = self._count(key, int(rx), int(tx), owner_of(common_name))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, UnicodeDecodeError):
                log.warning("openvpn_session_file_malformed", file=str(path))
                done.append(path)
                continue
            if seen.closed_at is None:
                seen.closed_at = now
                self._dirty = True
            done.append(path)
        return done

    def _prune(self, now: float) -> None:
        old = [
            k
            for k, s in self._seen.items()
            if s.closed_at is not None and now - s.closed_at > CLOSED_RETENTION
        ]
        for key in old:
            del self._seen[key]
        if old:
            self._dirty = True

    def forget(self, client_ids: Iterable[str]) -> None:
        """Drop the totals of clients that are gone (their counters restart from zero)."""
        for client_id in client_ids:
            if self.totals.pop(client_id, None) is not None:
                self._dirty = True

    def counters(self) -> dict[str, Counters]:
        return {k: Counters(v[0], v[1]) for k, v in self.totals.items()}

    # --- persistence ----------------------------------------------------------------------

    def save(self) -> None:
        if not self._dirty:
            return
        data = {
            "version": 1,
            "epoch": self.epoch,
            "totals": self.totals,
            "sessions": {k: [s.rx, s.tx, s.closed_at] for k, s in self._seen.items()},
        }
        write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode(), mode=0o600)
        self._dirty = False

    def sample(
        self, sessions: Sequence[Session] | None, owner_of: OwnerOf, now: float | None = None
    ) -> dict[str, Counters]:
        """Fold in the live poll ``sessions`` (None: openvpn did not answer, so no session is
        taken for ended), then the finished sessions; persist; then drop the hook files read.

        The poll must be taken before this call: a session that ended after the poll has a
        hook file with its final counts, which only adds what the poll did not see. (The
        other order would take the poll's lower counts for a new session and count twice.)
        """
        now = time.time() if now is None else now
        if sessions is not None:
            self.record_live(sessions, owner_of, now)
        finished = self.record_finished(owner_of, now)
        self.save()
        for path in finished:
            path.unlink(missing_ok=True)
        return self.counters()
