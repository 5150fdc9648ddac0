"""The Xray backend: one VLESS inbound (Reality, or plain for v2ray) whose users are the
desired clients, changed live over the core's gRPC API.

What it keeps:

* ``_desired``: the users the node must serve (a ``UserIndex`` by client id). It is the
  target from the moment ``apply`` is called, also when the core then fails, so that a core
  coming back is converged to it, never to an older state.
* ``_present``: the users it believes the core has, by core email, changed one API call at a
  time as each succeeds. After a failure it says exactly what went through.
* the config file (``config_path``): after a successful change it holds exactly the desired
  users, so a plain restart of the core keeps them. After a failure it holds the desired
  users plus every user that may still be in the core, so that no removal is forgotten if the
  agent dies before retrying (the next agent starts from that file).

Restarts: every operation first reads the core's uptime (``lifetime``). A restart, or the
API having been unreachable, makes the next sync re-add every desired user (a duplicate add
is success) and remove whatever the file or ``_present`` may still hold. The usage epoch
changes only when the core's start time changed: a missed sample does not mean the counters
restarted, and a new epoch would make the ledger count them twice.

Usage: ``QueryStats("user>>>")`` without reset; uplink (client to server) is ``rx``, downlink
``tx``. A client counts as online while its counters grew within the last ``ONLINE_WINDOW``
seconds (v2ray has no API for online users).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from node_agent.backends.base import (
    ApplyReport,
    BackendStatus,
    Counters,
    Health,
    PublicParams,
    RealityPublicParams,
    UsageSample,
)
from node_agent.backends.xray import xray_config
from node_agent.backends.xray.api import XrayApi, XrayApiError, XrayUnavailable
from node_agent.backends.xray.lifetime import CoreLifetime
from node_agent.backends.xray.process import CoreProcess
from node_agent.backends.xray.reality import RealityMaterial, load_or_create_material
from node_agent.backends.xray.users import CoreUser, UserIndex, uuid_key
from node_agent.backends.xray.xray_config import CoreSettings, RealityServer
from node_agent.config import XrayConfig
from node_agent.errors import BackendError
from node_agent.model import Client

log = structlog.get_logger("node_agent.xray")

ONLINE_WINDOW = 180  # seconds since a client's counters last grew for it to count as online
CONCURRENCY = 16  # API calls in flight during a sync

_T = TypeVar("_T")


class XrayBackend:
    kind = "xray"

    def __init__(self, name: str, spec: XrayConfig, state_dir: Path) -> None:
        self.name = name
        self.spec = spec
        self.config_path = spec.config_path or state_dir / f"xray-{name}.json"
        self.flow = spec.flow or ""
        self.material: RealityMaterial | None = None
        reality: RealityServer | None = None
        if spec.security == "reality":
            assert spec.dest is not None  # the config requires it with Reality
            self.material = load_or_create_material(
                state_dir / f"xray-{name}.reality.json", spec.short_id_count
            )
            reality = RealityServer(
                self.material.private_key,
                self.material.short_ids,
                tuple(spec.server_names),
                spec.dest,
            )
        api_host, api_port = xray_config.split_host_port(spec.api)
        self.settings = CoreSettings(
            api_host=api_host,
            api_port=api_port,
            inbound_tag=spec.inbound_tag,
            listen=spec.listen,
            port=spec.port,
            reality=reality,
            blocked_networks=tuple(spec.blocked_networks),
        )
        self.api = XrayApi(spec.api, spec.api_prefix, spec.api_timeout)
        self.process = (
            CoreProcess(name, spec.command, self.config_path, state_dir / f"xray-{name}.log")
            if spec.command
            else None
        )
        self._lifetime = CoreLifetime(state_dir / f"xray-{name}.core.json")
        self._desired = UserIndex(name, allow_vision=reality is not None)
        # What the last agent left in the file may still be in the core: start from it.
        self._file_users = xray_config.read_users(self.config_path, spec.inbound_tag)
        self._file_bytes = self.config_path.read_bytes() if self._file_users is not None else b""
        self._present: dict[str, CoreUser] = dict(self._file_users or {})
        self._resync = True  # until the core has been seen and converged
        self._pending_reset: set[str] = set()
        self._activity: dict[str, tuple[int, int, float]] = {}
        self._activity_epoch: str | None = None
        self._online = 0
        self._lock = asyncio.Lock()
        self._log = log.bind(backend=name, inbound=spec.inbound_tag)

    # --- validation -----------------------------------------------------------------------

    def validate(self, clients: Sequence[Client]) -> None:
        UserIndex.build(self.name, clients, allow_vision=self.settings.reality is not None)

    def validate_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        self._desired.check_changes(upserts, removals)

    # --- the core -------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            # Settings may have changed since the file was written: a restart must get them.
            self._write_config(self._superset())
            try:
                stats = await self.api.sys_stats()
            except XrayUnavailable as exc:
                if self.process is None:
                    raise BackendError(
                        f"{self.name}: the core is not answering ({exc}); start it (its unit) "
                        f"with {self.config_path}, or set command to let the agent run it"
                    ) from None
                await self._spawn()
                return
            except XrayApiError as exc:
                raise BackendError(f"{self.name}: {exc}") from None
            self._observe(stats.uptime)

    async def _spawn(self) -> None:
        assert self.process is not None
        if not self.process.running():
            await self.process.spawn()
            self._log.info("xray_core_started", pid=self.process.pid, config=str(self.config_path))
        deadline = time.monotonic() + self.spec.start_timeout
        while True:
            status = self.process.exit_status()
            if status is not None:
                raise BackendError(
                    f"{self.name}: the core exited with status {status}: "
                    f"{self.process.log_tail() or 'no output'}"
                )
            try:
                stats = await self.api.sys_stats()
                break
            except XrayUnavailable:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"{self.name}: the core started but its API at {self.spec.api} did not "
                        f"answer within {self.spec.start_timeout:g} s"
                    ) from None
                await asyncio.sleep(0.1)
            except XrayApiError as exc:
                raise BackendError(f"{self.name}: {exc}") from None
        self._observe(stats.uptime)
        # We started it from the file we just wrote: it has exactly those users.
        self._present = dict(self._file_users or {})
        self._resync = False

    def _observe(self, uptime: int) -> None:
        if self._lifetime.observe(uptime):
            self._log.info("xray_core_lifetime", epoch=self._lifetime.epoch, uptime=uptime)
            # It may have loaded any file we wrote: whatever that holds may be in it now.
            self._present.update(self._file_users or {})
            self._resync = True

    async def _check_core(self) -> None:
        """Read the core's uptime; a restart (or an outage) marks every user for re-adding."""
        try:
            stats = await self.api.sys_stats()
        except XrayUnavailable as exc:
            self._resync = True
            raise BackendError(f"{self.name}: {exc}") from None
        except XrayApiError as exc:
            raise BackendError(f"{self.name}: {exc}") from None
        self._observe(stats.uptime)

    # --- users ----------------------------------------------------------------------------

    async def apply(self, clients: Sequence[Client]) -> ApplyReport:
        index = UserIndex.build(self.name, clients, allow_vision=self.settings.reality is not None)
        async with self._lock:
            old = self._desired
            self._desired = index
            report = _report(old, index, None)
            self._pending_reset |= report.reset_clients
            await self._sync(old, None)
            return self._take_resets(report)

    async def apply_changes(
        self, upserts: Sequence[Client], removals: Sequence[str]
    ) -> ApplyReport:
        async with self._lock:
            old = self._desired
            index = old.copy()
            index.apply_changes(upserts, removals)
            self._desired = index
            touched = {*removals, *(c.id for c in upserts)}
            report = _report(old, index, touched)
            self._pending_reset |= report.reset_clients
            await self._sync(old, touched)
            return self._take_resets(report)

    def _take_resets(self, report: ApplyReport) -> ApplyReport:
        # Clients whose core email changed have a fresh counter: the ledger moves their
        # baseline, also for a change that only got through on a retry.
        reset = frozenset(self._pending_reset & self._desired.entries.keys())
        self._pending_reset.clear()
        return ApplyReport(report.added, report.updated, report.removed, reset)

    async def _sync(self, old: UserIndex, touched: Collection[str] | None) -> None:
        """Converge the core to ``_desired``: everything, or only the ``touched`` clients of a
        delta when the core is known to match ``old`` otherwise."""
        target = self._desired.users()
        try:
            await self._check_core()
        except BackendError:
            # A core restarted by its unit meanwhile must find the new users in the file.
            self._write_config(self._superset())
            raise
        if self._resync or touched is None:
            stale = (self._present.keys() | old.email_owner.keys()) - target.keys()
            adds = [u for u in target.values() if self._resync or self._present.get(u.email) != u]
        else:
            stale, adds = set(), []
            for client_id in touched:
                before, after = old.entries.get(client_id), self._desired.entries.get(client_id)
                if before is not None and before.user.email not in target:
                    stale.add(before.user.email)
                if after is not None and self._present.get(after.user.email) != after.user:
                    adds.append(after.user)
        ok = False
        try:
            # Removals first: Xray indexes users by UUID too, and removing an old user after
            # a new one with the same UUID was added would take the new one's UUID with it.
            await self._run(self._remove, sorted(stale))
            await self._run(self._add, adds)
            ok = True
        finally:
            self._write_config(target if ok else self._superset())
        self._resync = False

    async def _remove(self, email: str) -> None:
        await self.api.remove_user(self.spec.inbound_tag, email)
        self._present.pop(email, None)

    async def _add(self, user: CoreUser) -> None:
        await self.api.add_vless_user(
            self.spec.inbound_tag, email=user.email, uuid=user.uuid, flow=user.flow
        )
        self._present[user.email] = user

    async def _run(self, operation: Callable[[_T], Awaitable[None]], items: Iterable[_T]) -> None:
        """Run ``operation`` on every item, ``CONCURRENCY`` at a time; on the first failure
        start no more and raise it as BackendError (what went through stays recorded)."""
        failures: list[XrayApiError] = []
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(item: _T) -> None:
            async with gate:
                if failures:
                    return
                try:
                    await operation(item)
                except XrayApiError as exc:
                    failures.append(exc)

        await asyncio.gather(*(one(item) for item in items))
        if failures:
            if any(isinstance(f, XrayUnavailable) for f in failures):
                self._resync = True
            raise BackendError(f"{self.name}: {failures[0]}")

    def _superset(self) -> dict[str, CoreUser]:
        """The desired users plus those the core may still have. On a UUID clash the user
        that may still be in the core wins: its removal must not be forgotten, and the core
        must not load two users with one UUID."""
        present = {u.email: u for u in self._present.values()}
        taken = {uuid_key(u.uuid) for u in present.values()}
        for user in self._desired.users().values():
            if user.email not in present and uuid_key(user.uuid) not in taken:
                present[user.email] = user
        return present

    def _write_config(self, users: dict[str, CoreUser]) -> None:
        body = xray_config.dump(xray_config.render(self.settings, users.values()))
        if body == self._file_bytes:
            return
        try:
            xray_config.write_bytes(self.config_path, body)
        except OSError as exc:
            raise BackendError(f"{self.name}: cannot write {self.config_path}: {exc}") from None
        self._file_users, self._file_bytes = dict(users), body

    # --- reading --------------------------------------------------------------------------

    async def usage(self) -> UsageSample:
        async with self._lock:
            await self._check_core()
            if self._resync:
                await self._sync(self._desired, None)
            try:
                traffic = await self.api.user_traffic()
            except XrayApiError as exc:
                raise BackendError(f"{self.name}: {exc}") from None
            epoch = self._lifetime.epoch
        assert epoch is not None  # _check_core observed the core
        counters: dict[str, Counters] = {}
        owner = self._desired.email_owner
        for email, counted in traffic.items():
            client_id = owner.get(email)
            # A client whose counter restarted (new core email) but whose reset the ledger
            # has not been told of yet (the apply failed) is left out until an apply reports
            # it: the ledger would count the new counter as a restart now, and again from
            # zero after the reset.
            if client_id is not None and client_id not in self._pending_reset:
                counters[client_id] = Counters(counted.uplink, counted.downlink)
        self._track_online(epoch, counters)
        return UsageSample(f"{self.spec.inbound_tag}@{epoch}", counters)

    def _track_online(self, epoch: str, counters: dict[str, Counters]) -> None:
        now = time.monotonic()
        if epoch != self._activity_epoch:
            self._activity.clear()
            self._activity_epoch = epoch
        for client_id, c in counters.items():
            seen = self._activity.get(client_id)
            if seen is None:  # counters first seen: how old they are is unknown
                self._activity[client_id] = (c.rx_bytes, c.tx_bytes, 0.0)
            elif (c.rx_bytes, c.tx_bytes) != seen[:2]:
                self._activity[client_id] = (c.rx_bytes, c.tx_bytes, now)
        for client_id in self._activity.keys() - counters.keys():
            del self._activity[client_id]
        self._online = sum(1 for *_, t in self._activity.values() if t and now - t < ONLINE_WINDOW)

    async def status(self) -> BackendStatus:
        clients = len(self._desired.entries)
        try:
            await self.api.sys_stats()
        except XrayApiError as exc:
            reason = str(exc)
            if self.process is not None and self.process.exit_status() is not None:
                reason += (
                    f"; the core the agent started exited with status "
                    f"{self.process.exit_status()}: {self.process.log_tail() or 'no output'}"
                )
            return BackendStatus(Health.DOWN, reason, clients, 0)
        if self._resync:
            return BackendStatus(
                Health.DEGRADED,
                "the core restarted or was unreachable: users are re-added at the next sync",
                clients,
                0,
            )
        return BackendStatus(Health.OK, "", clients, self._online)

    def core_users(self) -> dict[str, CoreUser]:
        """The desired users by client id, as the core knows them (email, uuid, flow)."""
        return {cid: e.user for cid, e in self._desired.entries.items()}

    def public_params(self) -> PublicParams:
        if self.material is None:
            # Plain VLESS (security = "none") is for tests with v2ray, not something to sell:
            # nothing is advertised, so the controller places no VLESS config here.
            return None
        return RealityPublicParams(
            port=self.spec.port,
            public_key=self.material.public_key,
            short_ids=self.material.short_ids,
            server_names=tuple(self.spec.server_names),
            flow=self.flow,
            fingerprint=self.spec.fingerprint,
        )

    async def close(self) -> None:
        """Close the API channel; the core keeps running so clients stay connected."""
        await self.api.close()


def _report(old: UserIndex, new: UserIndex, touched: Collection[str] | None) -> ApplyReport:
    ids = old.entries.keys() | new.entries.keys() if touched is None else touched
    added = updated = removed = 0
    reset: set[str] = set()
    for client_id in ids:
        before, after = old.entries.get(client_id), new.entries.get(client_id)
        if before is None and after is not None:
            added += 1
        elif before is not None and after is None:
            removed += 1
        elif before is not None and after is not None and before != after:
            updated += 1
            if before.user.email != after.user.email:
                reset.add(client_id)
    return ApplyReport(added, updated, removed, frozenset(reset))
