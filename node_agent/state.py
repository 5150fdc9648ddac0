"""The persisted desired state: what the node must serve when no controller is around.

It lives in the state directory (readable by the agent's user only: it holds WireGuard
preshared keys) with the revision the controller assigned.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node_agent.errors import ConfigError
from node_agent.model import (
    Client,
    ClientSpec,
    DesiredState,
    OpenVpnClient,
    VlessUser,
    WireGuardPeer,
)
from node_agent.sqlite import connect, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    backend   TEXT NOT NULL,
    client_id TEXT NOT NULL,
    spec      TEXT NOT NULL,
    PRIMARY KEY (backend, client_id)
);
"""


def _spec_to_json(spec: ClientSpec) -> dict[str, Any]:
    if isinstance(spec, WireGuardPeer):
        return {
            "wireguard": {
                "public_key": spec.public_key,
                "preshared_key": spec.preshared_key,
                "allowed_ips": list(spec.allowed_ips),
                "persistent_keepalive": spec.persistent_keepalive,
            }
        }
    if isinstance(spec, OpenVpnClient):
        return {"openvpn": {"common_name": spec.common_name}}
    return {"vless": {"uuid": spec.uuid, "flow": spec.flow, "email": spec.email}}


def _spec_from_json(data: dict[str, Any]) -> ClientSpec:
    if "wireguard" in data:
        wg = data["wireguard"]
        return WireGuardPeer(
            public_key=wg["public_key"],
            preshared_key=wg.get("preshared_key"),
            allowed_ips=tuple(wg["allowed_ips"]),
            persistent_keepalive=int(wg.get("persistent_keepalive", 0)),
        )
    if "openvpn" in data:
        return OpenVpnClient(common_name=data["openvpn"]["common_name"])
    vless = data["vless"]
    return VlessUser(uuid=vless["uuid"], flow=vless.get("flow", ""), email=vless.get("email", ""))


class StateStore:
    """SQLite: one row per client plus the revision, changed in one transaction.

    A delta touches only its rows (a single-peer change costs one small fsync, not a rewrite
    of 10k peers); a full state replaces them all. WAL with synchronous=FULL: a state the
    agent answered for survives a crash.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = connect(path, _SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is unusable ({exc}); move it aside to start empty") from None

    def close(self) -> None:
        self._db.close()

    def load(self) -> tuple[int, DesiredState]:
        """The persisted (revision, state); (0, empty) on a node that never got one."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
            backends: dict[str, list[Client]] = {}
            for backend, client_id, spec in self._db.execute(
                "SELECT backend, client_id, spec FROM clients ORDER BY backend, rowid"
            ):
                backends.setdefault(backend, []).append(
                    Client(client_id, _spec_from_json(json.loads(spec)))
                )
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.path} is unreadable ({exc}); move it aside to start empty and let the "
                "controller resend the state"
            ) from None
        state = DesiredState({k: tuple(v) for k, v in backends.items()})
        return (int(row[0]) if row else 0), state

    def save(self, revision: int, state: DesiredState) -> None:
        rows = [
            (name, client.id, json.dumps(_spec_to_json(client.spec)))
            for name, clients in state.backends.items()
            for client in clients
        ]
        with transaction(self._db):
            self._db.execute("DELETE FROM clients")
            self._db.executemany(
                "INSERT INTO clients (backend, client_id, spec) VALUES (?, ?, ?)", rows
            )
            self._set_revision(revision)

    def save_delta(
        self,
        revision: int,
        upserts: Mapping[str, Sequence[Client]],
        removals: Mapping[str, Sequence[str]],
    ) -> None:
        with transaction(self._db):
            for name, ids in removals.items():
                self._db.executemany(
                    "DELETE FROM clients WHERE backend = ? AND client_id = ?",
                    [(name, i) for i in ids],
                )
            for name, clients in upserts.items():
                self._db.executemany(
                    "INSERT INTO clients (backend, client_id, spec) VALUES (?, ?, ?) "
                    "ON CONFLICT (backend, client_id) DO UPDATE SET spec = excluded.spec",
                    [(name, c.id, json.dumps(_spec_to_json(c.spec))) for c in clients],
                )
            self._set_revision(revision)

    def _set_revision(self, revision: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('revision', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(revision),),
        )
