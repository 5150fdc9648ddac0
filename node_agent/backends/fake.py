"""An in-memory backend with the semantics of a real one, for tests and for trying the agent
without VPN software.

It keeps clients by id like a device keeps peers: an unchanged client keeps its counters, a
removed client loses them, ``restart()`` loses everything's counters and changes the epoch.
Tests drive traffic with ``add_traffic`` and failures with ``fail_next_apply``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from node_agent.backends.base import (
    ApplyReport,
    BackendStatus,
    Counters,
    Health,
    PublicParams,
    UsageSample,
)
from node_agent.backends.wireguard.peers import PeerIndex
from node_agent.errors import BackendError
from node_agent.model import Client, WireGuardPeer, validate_client_ids


class FakeBackend:
    kind = "fake"

    def __init__(self, name: str, params: PublicParams = None) -> None:
        self.name = name
        # What it reports in agent info: a fake standing in for a WireGuard server reports
        # WireGuard parameters, so a controller places WireGuard configs on it.
        self.params = params
        self.clients: dict[str, Client] = {}
        self.counters: dict[str, list[int]] = {}
        self.online: set[str] = set()
        self.started = False
        self.apply_calls = 0
        self.fail_next_apply: str | None = None
        self.epoch = f"fake-{uuid.uuid4().hex}"

    def validate(self, clients: Sequence[Client]) -> None:
        if clients and all(isinstance(c.spec, WireGuardPeer) for c in clients):
            PeerIndex.build(self.name, clients)
        else:
            validate_client_ids(self.name, clients)

    def validate_changes(self, upserts: Sequence[Client], removals: Sequence[str]) -> None:
        validate_client_ids(self.name, upserts)
        self.validate(self._merged(upserts, removals))

    async def apply_changes(
        self, upserts: Sequence[Client], removals: Sequence[str]
    ) -> ApplyReport:
        return await self.apply(self._merged(upserts, removals))

    def _merged(self, upserts: Sequence[Client], removals: Sequence[str]) -> list[Client]:
        merged = {i: c for i, c in self.clients.items() if i not in set(removals)}
        merged.update((c.id, c) for c in upserts)
        return list(merged.values())

    async def start(self) -> None:
        self.started = True

    async def apply(self, clients: Sequence[Client]) -> ApplyReport:
        self.apply_calls += 1
        if self.fail_next_apply is not None:
            reason, self.fail_next_apply = self.fail_next_apply, None
            raise BackendError(f"{self.name}: {reason}")
        wanted = {c.id: c for c in clients}
        removed = self.clients.keys() - wanted.keys()
        added = wanted.keys() - self.clients.keys()
        updated = {i for i in wanted.keys() & self.clients.keys() if wanted[i] != self.clients[i]}
        for client_id in removed:
            del self.clients[client_id]
            self.counters.pop(client_id, None)
            self.online.discard(client_id)
        for client_id in added | updated:
            self.clients[client_id] = wanted[client_id]
            self.counters.setdefault(client_id, [0, 0])
        return ApplyReport(
            added=len(added),
            updated=len(updated),
            removed=len(removed),
            reset_clients=frozenset(removed | added),
        )

    async def usage(self) -> UsageSample:
        return UsageSample(
            self.epoch, {cid: Counters(rx, tx) for cid, (rx, tx) in self.counters.items()}
        )

    async def status(self) -> BackendStatus:
        return BackendStatus(Health.OK, "", len(self.clients), len(self.online & set(self.clients)))

    def public_params(self) -> PublicParams:
        return self.params

    async def close(self) -> None:
        self.started = False

    # --- test controls -------------------------------------------------------------------

    def add_traffic(self, client_id: str, rx: int, tx: int) -> None:
        if client_id not in self.clients:
            raise KeyError(f"no client {client_id!r} on backend {self.name!r}")
        counters = self.counters[client_id]
        counters[0] += rx
        counters[1] += tx
        self.online.add(client_id)

    def restart(self) -> None:
        """Like a core restart: clients kept by the reconciler, counters back to zero."""
        self.epoch = f"fake-{uuid.uuid4().hex}"
        self.counters = {cid: [0, 0] for cid in self.clients}
        self.online.clear()
