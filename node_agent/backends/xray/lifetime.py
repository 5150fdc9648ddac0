"""Which lifetime of the core we are talking to: the usage epoch, kept across agent restarts.

The core reports its uptime (``GetSysStats``, whole seconds). ``monotonic now - uptime`` is
when it started, on the same clock the core measures with (CLOCK_MONOTONIC, shared by every
process on the host, also across network namespaces). While that start time stays put and
the uptime does not go backwards, it is the same core and its counters keep growing;
otherwise the core restarted and its counters began again at zero: a new epoch.

The epoch is persisted with the start time and the host's boot id, so an agent restart while
the core keeps running keeps the epoch (a new one would make the ledger count every byte
again), and a host reboot (the monotonic clock restarts) always gives a new one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from node_agent.files import write_atomic

# The uptime is truncated to whole seconds, so one start time reads up to 1 s apart; a core
# that restarts sooner than this after its previous start is caught by the ledger instead
# (its counters go down).
TOLERANCE = 2.5
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def host_boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


class CoreLifetime:
    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        boot_id: Callable[[], str] = host_boot_id,
    ) -> None:
        self.path = path
        self._clock = clock
        self._boot_id = boot_id
        self.epoch: str | None = None
        self.started: float | None = None  # monotonic seconds
        self._last_uptime: int | None = None

    def observe(self, uptime: int) -> bool:
        """Record a fresh uptime reading; True when it shows a core lifetime other than the
        one seen last in this process (a restart, or the first reading)."""
        started = self._clock() - uptime
        last, self._last_uptime = self._last_uptime, uptime
        same = self.started is not None and abs(started - self.started) <= TOLERANCE
        if same and (last is None or uptime >= last):
            return False
        boot = self._boot_id()
        previous = self._load() if self.started is None else None
        if previous is not None:
            known_boot, known_start, known_epoch = previous
            if known_boot == boot and abs(started - known_start) <= TOLERANCE:
                self.epoch, self.started = known_epoch, known_start
                return True
        self.epoch, self.started = uuid.uuid4().hex, started
        body = {"boot_id": boot, "started": started, "epoch": self.epoch}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(body) + "\n").encode(), mode=0o600)
        return True

    def _load(self) -> tuple[str, float, str] | None:
        """(boot id, start time, epoch) persisted by an earlier agent, if readable."""
        try:
            data = json.loads(self.path.read_bytes())
            boot, started, epoch = data["boot_id"], data["started"], data["epoch"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (
            isinstance(boot, str) and isinstance(started, int | float) and isinstance(epoch, str)
        ):
            return None
        return boot, float(started), epoch
