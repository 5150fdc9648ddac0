"""The agent's core: holds the desired state, converges backends to it, feeds the ledger.

Every change goes through ``_converge`` under one lock: validate the whole new state against
every backend first (nothing is applied when any part is invalid), take a final usage sample
(so traffic up to the change is counted), apply per backend, move the ledger baselines of
clients the apply re-created, then persist the state with its revision.

A backend that fails to apply does not fail the others: the state is still accepted and
persisted (the node must converge to it), the backend is reported degraded with the reason,
and the periodic reconcile retries it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from common.tasks import TaskSet
from node_agent.backends.base import ApplyReport, BackendStatus, Health, VpnBackend
from node_agent.errors import AgentError, InvalidStateError, RevisionMismatchError
from node_agent.ledger import UsageLedger
from node_agent.model import Client, DesiredState
from node_agent.state import StateStore

log = structlog.get_logger("node_agent")


@dataclass(frozen=True, slots=True)
class BackendOutcome:
    name: str
    report: ApplyReport
    status: BackendStatus


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    revision: int
    backends: list[BackendOutcome]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Agent:
    def __init__(
        self,
        *,
        node_id: str,
        version: str,
        backends: Mapping[str, VpnBackend],
        store: StateStore,
        ledger: UsageLedger,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.node_id = node_id
        self.version = version
        self.backends = dict(backends)
        self.store = store
        self.ledger = ledger
        self.clock = clock
        self.boot_id = uuid.uuid4().hex
        self.started_at = clock()
        self.revision, self.state = store.load()
        self._lock = asyncio.Lock()
        self._failures: dict[str, str] = {}
        # Applies run to their end even when the caller goes away (a gRPC deadline or a
        # dropped connection cancels the handler): a change stopped half-way would leave the
        # devices, the persisted state and the agent's memory disagreeing.
        self._inflight = TaskSet()
        self._log = log.bind(node_id=node_id)

    # --- lifecycle -------------------------------------------------------------------------

    async def boot(self) -> None:
        """Bring every backend up and re-apply the persisted state, before serving."""
        unknown = self.state.names() - self.backends.keys()
        if unknown:
            self._log.warning(
                "persisted_backends_unknown",
                backends=sorted(unknown),
            )
        async with self._lock:
            await self._apply_all(self.state)
        self._log.info("state_restored", revision=self.revision, backends=sorted(self.backends))

    async def reconcile(self) -> None:
        """Re-converge every backend to the persisted state (repairs drift and failures)."""
        async with self._lock:
            await self._sample_locked()
            await self._apply_all(self.state)

    async def close(self) -> None:
        async with self._lock:
            await self._sample_locked()
            for backend in self.backends.values():
                await backend.close()

    # --- desired state ---------------------------------------------------------------------

    async def apply_full(
        self, revision: int, state: DesiredState, *, force: bool, named: Iterable[str] = ()
    ) -> ApplyOutcome:
        """Converge to ``state``. ``named``: backend names the request mentioned (even with no
        clients), so an unknown one is refused rather than silently ignored."""
        return await self._inflight.shield(self._apply_full(revision, state, force, list(named)))

    async def _apply_full(
        self, revision: int, state: DesiredState, force: bool, named: list[str]
    ) -> ApplyOutcome:
        async with self._lock:
            if revision < self.revision and not force:
                raise RevisionMismatchError(
                    f"revision {revision} is older than the applied revision {self.revision}; "
                    "send force=true to roll back on purpose"
                )
            self._check_names(named)
            # A copy: later deltas change the agent's state in place, never the caller's.
            return await self._converge(revision, DesiredState(state.backends))

    async def apply_delta(
        self,
        base_revision: int,
        revision: int,
        upserts: Mapping[str, Sequence[Client]],
        removals: Mapping[str, Sequence[str]],
    ) -> ApplyOutcome:
        return await self._inflight.shield(
            self._apply_delta(base_revision, revision, upserts, removals)
        )

    async def _apply_delta(
        self,
        base_revision: int,
        revision: int,
        upserts: Mapping[str, Sequence[Client]],
        removals: Mapping[str, Sequence[str]],
    ) -> ApplyOutcome:
        async with self._lock:
            if base_revision != self.revision:
                raise RevisionMismatchError(
                    f"delta is based on revision {base_revision} but the agent has "
                    f"{self.revision}; send the full state"
                )
            if revision <= base_revision:
                raise InvalidStateError(
                    f"delta revision {revision} must be greater than its base {base_revision}"
                )
            names = sorted(upserts.keys() | removals.keys())
            self._check_names(names)
            for name in names:
                backend = self.backends[name]
                if name in self._failures:
                    # The backend's own view lags behind the desired state: check the change
                    # against what the node must serve, not against what last succeeded.
                    changed = self.state.with_delta(
                        {name: upserts.get(name, ())}, {name: removals.get(name, ())}
                    )
                    backend.validate(changed.clients(name))
                else:
                    backend.validate_changes(upserts.get(name, ()), removals.get(name, ()))
            # Which clients leave or get re-created, judged against the state before the delta.
            leaving = {
                name: {i for i in removals.get(name, ()) if self.state.has(name, i)}
                | {c.id for c in upserts.get(name, ()) if self.state.has(name, c.id)}
                for name in names
            }
            # Persist first: from here on this is what the node converges to, across crashes.
            self.store.save_delta(revision, upserts, removals)
            self.state.update(upserts, removals)
            self.revision = revision
            outcomes = []
            for name in names:
                outcomes.append(
                    await self._apply_changes(
                        name, upserts.get(name, ()), removals.get(name, ()), leaving[name]
                    )
                )
            self._log_applied(revision, outcomes)
            return ApplyOutcome(revision, outcomes)

    async def _apply_changes(
        self, name: str, upserts: Sequence[Client], removals: Sequence[str], leaving: set[str]
    ) -> BackendOutcome:
        backend = self.backends[name]
        # Counters die with a removed or re-created client: count them first. Adding new
        # clients (the common, latency-critical case) needs no sample.
        if leaving:
            await self._sample_backend(name, backend, self.clock(), only=leaving)
        if name in self._failures:
            # The backend missed an earlier change: a delta on top of it would hide that.
            # Converge it to the whole state instead.
            return await self._apply_backend(name, self.state.clients(name))
        return await self._apply_backend(name, None, upserts, removals)

    async def _apply_backend(
        self,
        name: str,
        clients: Sequence[Client] | None,
        upserts: Sequence[Client] = (),
        removals: Sequence[str] = (),
    ) -> BackendOutcome:
        """Apply ``clients`` (all of them) or else the change; a failure marks the backend
        degraded instead of failing the call: the state is accepted, and retried."""
        backend = self.backends[name]
        report = ApplyReport()
        try:
            if clients is None:
                report = await backend.apply_changes(upserts, removals)
            else:
                await backend.start()
                report = await backend.apply(clients)
        except (AgentError, OSError) as exc:
            self._failures[name] = str(exc)
            self._log.error("backend_apply_failed", backend=name, error=str(exc))
        except Exception as exc:  # a bug in a backend must not leave the others unapplied
            self._failures[name] = f"internal error: {exc!r}"
            self._log.exception("backend_apply_crashed", backend=name)
        else:
            self._failures.pop(name, None)
            if report.reset_clients:
                await asyncio.to_thread(self.ledger.reset_baseline, name, report.reset_clients)
        return BackendOutcome(name, report, await self.backend_status(name))

    def _check_names(self, names: Iterable[str]) -> None:
        unknown = sorted(set(names) - self.backends.keys())
        if unknown:
            raise InvalidStateError(
                f"unknown backend(s) {', '.join(map(repr, unknown))}; this agent runs "
                f"{', '.join(map(repr, sorted(self.backends))) or 'none'}"
            )

    async def _converge(self, revision: int, state: DesiredState) -> ApplyOutcome:
        self._check_names(state.names())
        for name, backend in self.backends.items():
            backend.validate(state.clients(name))
        # Persist first: from here on this is what the node converges to, across crashes,
        # and what the agent reports and bases deltas on.
        self.store.save(revision, state)
        self.state, self.revision = state, revision
        await self._sample_locked()
        outcomes = await self._apply_all(state)
        self._log_applied(revision, outcomes)
        return ApplyOutcome(revision, outcomes)

    def _log_applied(self, revision: int, outcomes: Sequence[BackendOutcome]) -> None:
        changes = {
            o.name: f"+{o.report.added} ~{o.report.updated} -{o.report.removed}" for o in outcomes
        }
        self._log.info("state_applied", revision=revision, **changes)

    async def _apply_all(self, state: DesiredState) -> list[BackendOutcome]:
        return [await self._apply_backend(name, state.clients(name)) for name in self.backends]

    # --- usage ----------------------------------------------------------------------------

    async def sample_usage(self) -> None:
        async with self._lock:
            await self._sample_locked()

    async def _sample_locked(self) -> None:
        now = self.clock()
        for name, backend in self.backends.items():
            await self._sample_backend(name, backend, now)

    async def _sample_backend(
        self, name: str, backend: VpnBackend, now: dt.datetime, only: set[str] | None = None
    ) -> None:
        try:
            sample = await backend.usage()
        except (AgentError, OSError) as exc:
            self._log.warning("usage_sample_failed", backend=name, error=str(exc))
            return
        counters = sample.counters
        if only is not None:
            counters = {i: c for i, c in counters.items() if i in only}
        try:
            await asyncio.to_thread(self.ledger.record, name, sample.epoch, counters, now)
        except sqlite3.Error as exc:  # the next sample counts it; the apply must go on
            self._log.error("usage_ledger_write_failed", backend=name, error=str(exc))

    # --- status ---------------------------------------------------------------------------

    async def backend_status(self, name: str) -> BackendStatus:
        backend = self.backends[name]
        try:
            status = await backend.status()
        except (AgentError, OSError) as exc:
            return BackendStatus(Health.DOWN, str(exc))
        failure = self._failures.get(name)
        if failure and status.health is Health.OK:
            return BackendStatus(
                Health.DEGRADED,
                f"last apply failed: {failure}",
                status.clients,
                status.clients_online,
            )
        return status

    async def statuses(self) -> dict[str, BackendStatus]:
        return {name: await self.backend_status(name) for name in self.backends}
