"""A config's sealed secrets are bound to their row: a blob copied into another config (a
bad restore, a hand-edited database, an attacker with write access to one column) does not
decrypt there, so one client's private key or preshared key is never handed to another.

The binding is the AES-GCM associated data ``vpn_config:<id>`` (see controller/crypto.py and
``config_secret_context`` in controller/crypto.py). SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.crypto import DecryptionError, SecretBox
from controller.crypto import config_secret_context as secret_context
from controller.crypto import open_config_secret as open_secret
from controller.db.uow import UnitOfWorkFactory
from controller.nodes.store import HubStore
from controller.services import build_services
from controller.services.nodes import NodeDraft
from node_agent.tls import create_key_and_csr
from proto.nodeapi.v1 import node_agent_pb2 as pb
from proto.nodeapi.v1.enrollment import EnrollmentToken
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN

SERVER_WG_KEY = base64.b64encode(b"s" * 32).decode()


def _info() -> pb.AgentInfo:
    return pb.AgentInfo(
        agent_version="test",
        boot_id="boot-1",
        backends=[
            pb.BackendInfo(
                name="wg",
                kind=pb.BACKEND_KIND_WIREGUARD,
                status=pb.BackendStatus(health=pb.BACKEND_HEALTH_OK),
                wireguard=pb.WireGuardParams(
                    public_key=SERVER_WG_KEY,
                    listen_port=51820,
                    addresses=["10.8.0.1/24"],
                    interface="wg0",
                ),
            )
        ],
    )


def _conf(text: str) -> dict[str, str]:
    return {
        key.strip(): value.strip()
        for key, sep, value in (line.partition(" = ") for line in text.splitlines())
        if sep
    }


async def _blob(engine: AsyncEngine, config_id: int) -> bytes:
    async with engine.connect() as connection:
        value = (
            await connection.execute(
                sa.text("SELECT secret_encrypted FROM vpn_configs WHERE id = :id"),
                {"id": config_id},
            )
        ).scalar_one()
    return bytes(value)


async def _store_blob(engine: AsyncEngine, config_id: int, blob: bytes) -> None:
    # Straight to the column, as a restore or a hand edit would: no service is involved.
    async with engine.begin() as connection:
        await connection.execute(
            sa.text("UPDATE vpn_configs SET secret_encrypted = :blob WHERE id = :id"),
            {"blob": blob, "id": config_id},
        )


async def test_a_secret_copied_to_another_config_row_does_not_decrypt(
    engine: AsyncEngine, uow_factory: UnitOfWorkFactory, clock: FakeClock, tmp_path: Path
) -> None:
    box = SecretBox(os.urandom(32))
    services = build_services(uow_factory, clock, secrets=box)
    store = HubStore(uow_factory, box, clock)
    server, token_text = await services.nodes.add(
        ADMIN, NodeDraft(name="nl-1", address="nl-1.example.net", max_users=10)
    )
    token = EnrollmentToken.decode(token_text)
    await services.nodes.enroll(token.secret, create_key_and_csr(tmp_path, token.node_id))
    await store.record_info(server.id, _info())
    for telegram_id in (1, 2):
        await services.subscriptions.grant(ADMIN, telegram_id, days=30, devices=1)
    alice = await services.configs.export(1)
    bob = await services.configs.export(2)
    assert alice.config_id != bob.config_id
    alice_keys = _conf(alice.text)
    before = await store.desired(server.id)
    assert before is not None and before.state is not None
    assert len(before.state["wg"]) == 2  # both peers build while each row has its own blob

    # Bob's row now carries Alice's sealed private key and PSK.
    await _store_blob(engine, bob.config_id, await _blob(engine, alice.config_id))

    with pytest.raises(DecryptionError, match="wrong key or context") as refused:
        await services.configs.render(bob.config_id)
    assert alice_keys["PrivateKey"] not in str(refused.value)
    # The hub, building the node's peers, refuses it too rather than give Bob's peer
    # Alice's preshared key.
    fresh_store = HubStore(uow_factory, box, clock)  # no PSK cached from before the copy
    with pytest.raises(DecryptionError):
        await fresh_store.desired(server.id)
    # Alice's own row is untouched and still renders her keys.
    again = _conf((await services.configs.render(alice.config_id)).text)
    assert again["PrivateKey"] == alice_keys["PrivateKey"]
    assert again["PresharedKey"] == alice_keys["PresharedKey"]


async def test_every_sealed_secret_kind_is_bound_to_its_config_id() -> None:
    """Private key and PSK (WireGuard) and the OpenVPN profile are all sealed under
    ``secret_context(id)`` and opened only under the same id."""
    box = SecretBox(os.urandom(32))
    for secret in (
        {"private_key": "cHJpdmF0ZQ==", "preshared_key": "cHNr"},
        {"profile": "client\n<key>\nPRIVATE\n</key>\n"},
    ):
        blob = box.encrypt(json.dumps(secret).encode(), secret_context(41))
        assert open_secret(box, 41, blob) == secret
        for other in (42, 4, 410, 0):
            with pytest.raises(DecryptionError):
                open_secret(box, other, blob)
    assert secret_context(41) != secret_context(410)
