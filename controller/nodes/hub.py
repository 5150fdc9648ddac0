"""The hub: drives every enrolled node's agent to the node's desired state.

One supervised task per node. A task connects over mTLS, compares the agent's
``(boot_id, applied_revision)`` with what it last sent, and pushes the desired state — a
delta against the agent's revision when it knows what the agent has, the full state
otherwise (and whenever the agent refuses a delta). It wakes up

* right after a commit that bumped the node (in-process event),
* on PostgreSQL ``NOTIFY`` from other controller processes,
* when the revision poll sees ``desired_revision`` ahead of what the agent applied (how
  changes made by another process reach it on SQLite),
* and every ``resync_seconds``, when it rebuilds the state and compares it with what it
  sent (level-triggered: time-based expiry needs no event at all).

Each task also reads the agent's usage ledger (acknowledging only after the commit) and
samples host metrics. With PostgreSQL, a node is driven only by the hub process holding its
advisory lock, so several hub processes never drive one node at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.clock import Clock
from common.tasks import TaskSet
from controller.crypto import SecretBox
from controller.db.uow import NODES_CHANNEL, NodeEvents, UnitOfWorkFactory
from controller.nodes.ca import load_controller_credentials
from controller.nodes.client import ClientCredentials, NodeClient, NodeRpcError
from controller.nodes.desired import NodeState, diff, to_proto
from controller.nodes.store import MAX_REVISION, HubStore, NodeTarget
from controller.settings import HubSettings

log = structlog.get_logger(__name__)

# pg_try_advisory_lock(int4, int4): this class id, then the server id.
LOCK_CLASS = 0x76706E62  # "vpnb"
USAGE_PAGE = 1000
_STATS_PRUNE_SECONDS = 3600.0


class Hub:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        box: SecretBox,
        settings: HubSettings,
        clock: Clock,
        *,
        events: NodeEvents | None = None,
        engine: AsyncEngine | None = None,
        credentials: ClientCredentials | None = None,
    ) -> None:
        self.store = HubStore(uow_factory, box, clock)
        self.settings = settings
        self._uow = uow_factory
        self._box = box
        self._events = events
        self._engine = (
            engine if engine is not None and engine.dialect.name == "postgresql" else None
        )
        self._credentials = credentials
        self.workers: dict[int, NodeWorker] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}  # one worker per node, by server id
        self._owned = TaskSet()
        self._lock_connection: AsyncConnection | None = None
        self._lock_mutex = asyncio.Lock()
        self._poke = asyncio.Event()

    # -- waking ---------------------------------------------------------------------------

    def wake(self, server_ids: Iterable[int] | None = None) -> None:
        """Make the named nodes' workers (all, if None) sync now."""
        if server_ids is None:
            targets: Iterable[NodeWorker] = list(self.workers.values())
        else:
            targets = [w for i in server_ids if (w := self.workers.get(i)) is not None]
            if any(i not in self.workers for i in server_ids):
                self._poke.set()  # a node this hub has not seen yet: look now
        for worker in targets:
            worker.wake()

    # -- supervision ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        unsubscribe = self._events.subscribe(self.wake) if self._events is not None else None
        try:
            while True:
                try:
                    async with self._coordination():
                        try:
                            await self._supervise()
                        finally:
                            # Workers stop while the lock connection is still ours.
                            await self._stop_workers()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("hub_failed")
                await asyncio.sleep(self.settings.max_backoff_seconds / 4)
        finally:
            if unsubscribe is not None:
                unsubscribe()

    async def _supervise(self) -> None:
        next_prune = 0.0
        while True:
            targets = await self.store.targets()
            if targets and self._credentials is None:
                self._credentials = await self._load_credentials()
            self._reconcile_workers(targets)
            for target in targets:
                worker = self.workers.get(target.server_id)
                if worker is not None and worker.behind(target.desired_revision):
                    worker.wake()
            if self._lock_connection is not None:
                async with self._lock_mutex:  # a dead connection lost our locks: start over
                    await self._lock_connection.exec_driver_sql("SELECT 1")
            if time.monotonic() >= next_prune:
                deleted = await self.store.prune_stats(self.settings.stats_retention_days)
                if deleted:
                    log.info("server_stats_pruned", rows=deleted)
                next_prune = time.monotonic() + _STATS_PRUNE_SECONDS
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.settings.poll_seconds)

    async def _load_credentials(self) -> ClientCredentials | None:
        return await load_controller_credentials(self._uow, self._box)

    def _reconcile_workers(self, targets: list[NodeTarget]) -> None:
        wanted = {t.server_id: t for t in targets}
        for server_id in list(self._tasks):
            worker = self.workers[server_id]
            changed = server_id in wanted and (
                wanted[server_id].target != worker.target.target
                or wanted[server_id].node_id != worker.target.node_id  # re-enrollment
            )
            if server_id not in wanted or changed:
                self._tasks.pop(server_id).cancel()  # ended by the task set (not awaited here)
                del self.workers[server_id]
        if self._credentials is None:
            return
        for server_id, target in wanted.items():
            if server_id not in self._tasks:
                worker = NodeWorker(self, target, self._credentials)
                self.workers[server_id] = worker
                self._tasks[server_id] = self._owned.spawn(
                    worker.run(), name=f"hub:node:{target.name}"
                )

    async def _stop_workers(self) -> None:
        self._tasks.clear()
        self.workers.clear()
        await self._owned.cancel_all()
        await self.store.drain()

    # -- PostgreSQL: LISTEN/NOTIFY and advisory locks --------------------------------------

    @contextlib.asynccontextmanager
    async def _coordination(self) -> AsyncIterator[None]:
        if self._engine is None:
            yield
            return
        async with self._engine.connect() as connection:
            # Autocommit: this connection lives as long as the hub; it must never sit idle
            # inside a transaction. Advisory locks are session-level either way.
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            raw: Any = (await connection.get_raw_connection()).driver_connection

            def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                ids = [int(p) for p in payload.split(",") if p.strip().isdigit()]
                self.wake(ids)

            await raw.add_listener(NODES_CHANNEL, on_notify)
            self._lock_connection = connection
            try:
                yield
            finally:
                self._lock_connection = None
                with contextlib.suppress(Exception):
                    await raw.remove_listener(NODES_CHANNEL, on_notify)
                # Never hand a connection holding session-level advisory locks back to the
                # pool: closing it releases every lock this hub still held.
                with contextlib.suppress(Exception):
                    await connection.invalidate()

    @contextlib.asynccontextmanager
    async def ownership(self, server_id: int) -> AsyncIterator[None]:
        """Hold the node's advisory lock (PostgreSQL) while driving it; wait while another
        hub process holds it."""
        if self._lock_connection is None:
            yield
            return
        while True:
            async with self._lock_mutex:
                connection = self._lock_connection
                if connection is None:
                    raise RuntimeError("the hub lost its database connection")
                got = (
                    await connection.exec_driver_sql(
                        f"SELECT pg_try_advisory_lock({LOCK_CLASS}, {int(server_id)})"
                    )
                ).scalar()
            if got:
                break
            await asyncio.sleep(self.settings.resync_seconds / 4)
        try:
            yield
        finally:
            async with self._lock_mutex:
                if self._lock_connection is connection:
                    with contextlib.suppress(Exception):
                        await connection.exec_driver_sql(
                            f"SELECT pg_advisory_unlock({LOCK_CLASS}, {int(server_id)})"
                        )


class NodeWorker:
    """Drives one node. Remembers what it sent, to send deltas and skip no-op syncs."""

    def __init__(self, hub: Hub, target: NodeTarget, credentials: ClientCredentials) -> None:
        self.hub = hub
        self.target = target
        self.credentials = credentials
        self.settings = hub.settings
        self.store = hub.store
        self.event = asyncio.Event()
        self.event.set()
        self.boot_id: str | None = None
        self.agent_revision: int | None = None
        self.sent_state: NodeState | None = None
        self.desired_seen = -1
        self.online = False
        self.syncs = 0
        self.full_applies = 0
        self.delta_applies = 0
        self.converged = asyncio.Event()
        self._log = log.bind(
            server_id=target.server_id, node_name=target.name, node_id=target.node_id
        )

    def wake(self) -> None:
        self.event.set()

    def behind(self, desired_revision: int) -> bool:
        """A revision this worker has not built yet (one being applied does not count)."""
        if self.agent_revision is None:
            return True
        return desired_revision > max(self.agent_revision, self.desired_seen)

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self.hub.ownership(self.target.server_id):
                    await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = _reason(exc)
                if self.online or self.syncs == 0:
                    self._log.warning("node_unreachable", reason=reason)
                if self.online:  # it was serving: retry soon, as after a plain restart
                    backoff = 0.5
                self.online = False
                self.converged.clear()
                with contextlib.suppress(Exception):
                    await self.store.record_down(self.target.server_id, reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_seconds)
                self.event.set()

    async def _session(self) -> None:
        async with NodeClient(
            self.target.target,
            self.target.node_id,
            self.credentials,
            timeout=self.settings.rpc_timeout_seconds,
        ) as client:
            await self._check_info(client)
            if not self.online:
                self._log.info("node_online", boot_id=self.boot_id, revision=self.agent_revision)
            self.online = True
            now = time.monotonic()
            next_resync = now + self.settings.resync_seconds
            next_usage = now
            next_metrics = now
            self.event.set()
            while True:
                now = time.monotonic()
                if now >= next_resync:
                    await self._check_info(client)
                    self.event.set()
                    next_resync = now + self.settings.resync_seconds
                if self.event.is_set():
                    self.event.clear()
                    await self._sync(client)
                if now >= next_usage:
                    await self._read_usage(client)
                    next_usage = now + self.settings.usage_seconds
                if now >= next_metrics:
                    await self.store.record_metrics(self.target.server_id, await client.metrics())
                    next_metrics = now + self.settings.metrics_seconds
                wait = min(next_resync, next_usage, next_metrics) - time.monotonic()
                if wait > 0 and not self.event.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.event.wait(), wait)

    async def _check_info(self, client: NodeClient) -> None:
        info = await client.info()
        if info.node_id and info.node_id != self.target.node_id:
            raise RuntimeError(f"the agent says it is node {info.node_id[:64]!r}")
        if info.applied_revision > MAX_REVISION:
            raise RuntimeError(f"the agent reports an impossible revision {info.applied_revision}")
        if info.boot_id != self.boot_id or info.applied_revision != self.agent_revision:
            if self.boot_id is not None:
                self._log.info(
                    "agent_resync",
                    boot_id=info.boot_id,
                    revision=info.applied_revision,
                    expected_revision=self.agent_revision,
                )
            self.sent_state = None  # unknown contents: the next sync sends the full state
        self.boot_id, self.agent_revision = info.boot_id, info.applied_revision
        await self.store.record_info(self.target.server_id, info)

    async def _sync(self, client: NodeClient) -> None:
        desired = await self.store.desired(self.target.server_id)
        if desired is None or desired.state is None:
            return
        revision, state = desired.revision, desired.state
        self.desired_seen = max(self.desired_seen, revision)
        agent_revision = self.agent_revision or 0
        if self.sent_state is not None and state == self.sent_state and revision <= agent_revision:
            self.converged.set()
            return
        if (
            revision < agent_revision
            or revision == 0
            or (self.sent_state is not None and revision == agent_revision)
        ):
            # Changed without a bump (an expiry by time), or the agent is ahead of this
            # database (restored from a backup): label the state with a newer revision. (An
            # agent whose contents are unknown gets the full state under its own revision.)
            revision = await self.store.raise_revision(self.target.server_id, agent_revision)
        result = None
        if self.sent_state is not None:
            try:
                result = await client.apply_delta(
                    agent_revision, revision, diff(self.sent_state, state)
                )
                self.delta_applies += 1
            except NodeRpcError as exc:
                if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                self._log.info("delta_refused", reason=exc.details)
        if result is None:
            try:
                result = await client.apply_state(revision, to_proto(state))
            except NodeRpcError as exc:
                if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                    # The agent judged the state invalid and kept its previous one: a bug or
                    # a backend mismatch to fix by hand. Report it; retry at the next resync.
                    self._log.error("state_refused", reason=exc.details)
                    self.sent_state = None
                    await self.store.record_refused(self.target.server_id, exc.details)
                    return
                if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                # The agent holds a newer revision than ours: relabel and send again.
                self.agent_revision = max(agent_revision, revision)
                revision = await self.store.raise_revision(
                    self.target.server_id, self.agent_revision
                )
                result = await client.apply_state(revision, to_proto(state))
            self.full_applies += 1
        if result.applied_revision > MAX_REVISION:
            raise RuntimeError(
                f"the agent reports an impossible revision {result.applied_revision}"
            )
        self.sent_state = state
        self.agent_revision = result.applied_revision
        self.boot_id = result.boot_id
        self.syncs += 1
        await self.store.record_applied(self.target.server_id, result)
        self.converged.set()

    async def _read_usage(self, client: NodeClient) -> None:
        while True:
            page = await client.read_usage(0, USAGE_PAGE)
            if not page.entries:
                return
            await self.store.account_usage(self.target.server_id, page.ledger_id, page.entries)
            # Only now, with the totals committed, may the agent forget them.
            await client.ack_usage(page.last_cursor, page.ledger_id)
            if not page.more:
                return


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NodeRpcError):
        return f"{exc.code.name}: {exc.details}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]
