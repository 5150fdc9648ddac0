"""Provisioning of VLESS-Reality and OpenVPN configs through the config service, the desired
state the hub builds from them, and what a client receives (share link, .ovpn)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from controller.crypto import SecretBox
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import VpnProtocol
from controller.domain.errors import InvalidInput, NoServerAvailable, Unavailable
from controller.nodes.issuer import NodeIssuer
from controller.nodes.store import HubStore, params_from_info
from controller.services import build_services
from controller.services.config_render import ProfileIssuer
from controller.services.nodes import NodeDraft
from controller.services.users import TelegramProfile
from controller.vpn import vless
from node_agent.backends.fake import FakeBackend
from node_agent.backends.xray.reality import generate_keys
from node_agent.tls import CA_FILE, CERT_FILE, create_key_and_csr
from proto.nodeapi.v1 import node_agent_pb2 as pb
from proto.nodeapi.v1.enrollment import EnrollmentToken
from tests.agent_support import running_agent
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN
from tests.integration.test_provisioning import World, agent_info

REALITY_KEY = generate_keys().public_key
BOX = SecretBox(os.urandom(32))
OVPN_CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def reality_backend(**overrides: object) -> pb.BackendInfo:
    values: dict[str, object] = {
        "port": 443,
        "public_key": REALITY_KEY,
        "short_ids": ["a1b2c3d4", "0f"],
        "server_names": ["www.example.com", "example.com"],
        "flow": "xtls-rprx-vision",
        "fingerprint": "chrome",
    }
    values.update(overrides)
    return pb.BackendInfo(
        name="reality",
        kind=pb.BACKEND_KIND_XRAY,
        status=pb.BackendStatus(health=pb.BACKEND_HEALTH_OK),
        reality=pb.RealityParams(**values),  # type: ignore[arg-type]
    )


def openvpn_backend() -> pb.BackendInfo:
    return pb.BackendInfo(
        name="ovpn",
        kind=pb.BACKEND_KIND_OPENVPN,
        status=pb.BackendStatus(health=pb.BACKEND_HEALTH_OK),
        openvpn=pb.OpenVpnParams(port=1194, transport="udp", ca_certificate_pem=OVPN_CA),
    )


def full_info(*extra: pb.BackendInfo) -> pb.AgentInfo:
    info = agent_info()
    info.backends.extend(extra)
    return info


ALL = (VpnProtocol.WIREGUARD, VpnProtocol.VLESS, VpnProtocol.OPENVPN)


@pytest.fixture
def world(uow_factory: UnitOfWorkFactory, clock: FakeClock, tmp_path: Path) -> World:
    return World(
        build_services(uow_factory, clock, secrets=BOX),
        HubStore(uow_factory, BOX, clock),
        uow_factory,
        clock,
        tmp_path,
    )


async def _clients(world: World, server_id: int, backend: str) -> dict[str, pb.Client]:
    desired = await world.store.desired(server_id)
    assert desired is not None and desired.state is not None
    return desired.state.get(backend, {})


async def test_vless_config_reaches_desired_state_and_renders_a_share_link(world: World) -> None:
    node = await world.node("nl-1", protocols=ALL, info=full_info(reality_backend()))
    await world.grant(1)
    bumped = await world.bumped_by(lambda: world.svc.configs.provision(1, VpnProtocol.VLESS))
    assert bumped == {node}

    [config] = await world.svc.configs.list_for_user(1)
    assert config.protocol is VpnProtocol.VLESS
    assert str(uuid.UUID(config.client_id)) == config.client_id
    clients = await _clients(world, node, "reality")
    assert list(clients) == [config.client_id]
    user = clients[config.client_id].vless
    assert (user.uuid, user.flow, user.email) == (
        config.client_id,
        "xtls-rprx-vision",
        f"config-{config.id}",
    )

    rendered = await world.svc.configs.render(config.id)
    assert rendered.filename.endswith(".txt")
    link = vless.parse_share_link(rendered.text)
    assert (link.uuid, link.host, link.port) == (config.client_id, "nl-1.example.net", 443)
    assert (link.public_key, link.server_name, link.fingerprint, link.flow) == (
        REALITY_KEY,
        "www.example.com",
        "chrome",
        "xtls-rprx-vision",
    )
    assert link.short_id in ("a1b2c3d4", "0f")
    assert link.name.startswith("nl-1 ")

    # Re-issue: a new UUID on the node, the old one gone, the link follows.
    old = config.client_id
    assert await world.bumped_by(lambda: world.svc.configs.reissue(config.id)) == {node}
    clients = await _clients(world, node, "reality")
    assert old not in clients and len(clients) == 1
    new_link = vless.parse_share_link((await world.svc.configs.render(config.id)).text)
    assert new_link.uuid != old and new_link.uuid in clients


async def test_russian_users_get_vless_first_others_wireguard(world: World) -> None:
    await world.node("nl-1", protocols=ALL, info=full_info(reality_backend()))
    await world.svc.users.register(TelegramProfile(telegram_id=1, language_code="ru"))
    await world.svc.users.register(TelegramProfile(telegram_id=2, language_code="en"))
    await world.grant(1)
    await world.grant(2)
    assert (await world.svc.configs.export(1)).protocol is VpnProtocol.VLESS
    assert (await world.svc.configs.export(2)).protocol is VpnProtocol.WIREGUARD


@pytest.mark.parametrize(
    "bad",
    [
        {"public_key": "not-a-key"},
        {"public_key": REALITY_KEY + "="},
        {"server_names": []},
        {"server_names": ["bad name"]},
        {"short_ids": ["xyz"]},
        {"short_ids": ["abc"]},
        {"flow": "xtls-rprx-direct"},
        {"port": 0},
    ],
)
async def test_malformed_reality_params_mean_no_vless_on_that_node(
    world: World, bad: dict[str, object]
) -> None:
    info = full_info(reality_backend(**bad))
    found, invalid = params_from_info(info)
    assert found[VpnProtocol.VLESS] is None and invalid == ["reality"]
    await world.node("nl-1", protocols=ALL, info=info)
    await world.grant(1)
    with pytest.raises(NoServerAvailable, match="serves vless"):
        await world.svc.configs.provision(1, VpnProtocol.VLESS)
    assert await world.config_count() == 0


class _Issuer:
    """The node side of issuance, recorded: what the controller asked for, and a profile
    shaped like an agent's answer (the agent's own issuance is tested against real openvpn)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []
        self.fail: str | None = None

    async def issue_openvpn(
        self, *, node_id: str, host: str, port: int, backend: str, common_name: str
    ) -> str:
        self.calls.append(
            {"node_id": node_id, "host": host, "port": port, "backend": backend, "cn": common_name}
        )
        if self.fail:
            raise Unavailable(self.fail)
        return f"client\ndev tun\n<cert>\n{common_name}\n</cert>\n<key>\nsecret\n</key>\n"


@pytest.fixture
def issuer() -> _Issuer:
    return _Issuer()


@pytest.fixture
def ovpn_world(world: World, issuer: _Issuer) -> World:
    checked: ProfileIssuer = issuer
    world.svc = build_services(world.uow, world.clock, secrets=BOX, issuer=checked)
    return world


async def test_openvpn_profile_is_issued_once_stored_encrypted_and_gets_the_remote(
    ovpn_world: World, issuer: _Issuer, tmp_path: Path
) -> None:
    world = ovpn_world
    node = await world.node("nl-1", protocols=ALL, info=full_info(openvpn_backend()))
    await world.grant(1)
    config = await world.svc.configs.provision(1, VpnProtocol.OPENVPN)
    assert config.client_id.startswith("vpnbot-") and config.secret_encrypted is None
    clients = await _clients(world, node, "ovpn")
    assert clients[config.client_id].openvpn.common_name == config.client_id

    rendered = await world.svc.configs.render(config.id)
    assert rendered.filename.endswith(".ovpn")
    lines = rendered.text.splitlines()
    assert "remote nl-1.example.net 1194 udp" in lines
    assert config.client_id in lines  # the node's profile, as it answered
    server = await world.server(node)
    assert issuer.calls == [
        {
            "node_id": server.node_uid,
            "host": "nl-1.example.net",
            "port": server.grpc_port,
            "backend": "ovpn",
            "cn": config.client_id,
        }
    ]
    stored = await world.config(config.id)
    assert stored.secret_encrypted is not None
    assert b"secret" not in stored.secret_encrypted  # sealed, not plain

    # Rendering again uses the stored profile: the node is not asked twice (a second
    # issuance would revoke the first certificate).
    assert (await world.svc.configs.render(config.id)).text == rendered.text
    assert len(issuer.calls) == 1

    # Re-issue: a new common name on the node, the stored profile dropped, issued anew.
    await world.svc.configs.reissue(config.id)
    fresh = await world.config(config.id)
    assert fresh.client_id != config.client_id and fresh.secret_encrypted is None
    assert list(await _clients(world, node, "ovpn")) == [fresh.client_id]
    again = await world.svc.configs.render(config.id)
    assert fresh.client_id in again.text.splitlines()
    assert len(issuer.calls) == 2


async def test_an_unreachable_node_leaves_the_openvpn_config_without_a_profile(
    ovpn_world: World, issuer: _Issuer
) -> None:
    world = ovpn_world
    await world.node("nl-1", protocols=ALL, info=full_info(openvpn_backend()))
    await world.grant(1)
    config = await world.svc.configs.provision(1, VpnProtocol.OPENVPN)
    issuer.fail = "the node could not issue the OpenVPN profile now (UNAVAILABLE: down)"
    with pytest.raises(Unavailable, match="could not issue"):
        await world.svc.configs.render(config.id)
    assert (await world.config(config.id)).secret_encrypted is None
    issuer.fail = None
    assert "remote " in (await world.svc.configs.render(config.id)).text


async def test_without_an_issuer_openvpn_export_says_why(world: World) -> None:
    await world.node("nl-1", protocols=ALL, info=full_info(openvpn_backend()))
    await world.grant(1)
    config = await world.svc.configs.provision(1, VpnProtocol.OPENVPN)
    with pytest.raises(Unavailable, match="cannot reach nodes"):
        await world.svc.configs.render(config.id)


async def test_node_issuer_asks_the_real_agent_over_mtls(world: World, tmp_path: Path) -> None:
    """The controller's issuer against a real agent: one whose backends do not issue
    OpenVPN clients answers UNIMPLEMENTED, which the export reports in one line."""
    server, token_text = await world.svc.nodes.add(
        ADMIN,
        NodeDraft(name="nl-1", address="127.0.0.1", protocols=ALL, max_users=10),
    )
    token = EnrollmentToken.decode(token_text)
    state_dir = tmp_path / "agent"
    state_dir.mkdir()
    enrolled = await world.svc.nodes.enroll(
        token.secret, create_key_and_csr(state_dir, token.node_id)
    )
    (state_dir / CERT_FILE).write_bytes(enrolled.certificate_pem)
    (state_dir / CA_FILE).write_bytes(enrolled.ca_certificate_pem)
    await world.store.record_info(server.id, full_info(openvpn_backend()))
    async with running_agent(state_dir, {"ovpn": FakeBackend("ovpn")}) as running:
        await world.set_node(server.id, grpc_port=int(running.target.rsplit(":", 1)[1]))
        world.svc = build_services(
            world.uow,
            world.clock,
            secrets=BOX,
            issuer=NodeIssuer(world.uow, BOX),
        )
        await world.grant(1)
        config = await world.svc.configs.provision(1, VpnProtocol.OPENVPN)
        with pytest.raises(Unavailable, match="does not issue clients"):
            await world.svc.configs.render(config.id)
    assert (await world.config(config.id)).secret_encrypted is None


class _SlowIssuer(_Issuer):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def issue_openvpn(
        self, *, node_id: str, host: str, port: int, backend: str, common_name: str
    ) -> str:
        await self.release.wait()
        return await super().issue_openvpn(
            node_id=node_id, host=host, port=port, backend=backend, common_name=common_name
        )


async def test_two_processes_exporting_at_once_issue_one_profile(world: World) -> None:
    """Two controllers (say the bot and the CLI) export the same new OpenVPN config at once:
    the node is asked once (a second issuance would revoke the first certificate) and both
    hand out the same, live profile."""
    issuer = _SlowIssuer()
    first = build_services(world.uow, world.clock, secrets=BOX, issuer=issuer)
    second = build_services(world.uow, world.clock, secrets=BOX, issuer=issuer)
    await world.node("nl-1", protocols=ALL, info=full_info(openvpn_backend()))
    await world.grant(1)
    config = await first.configs.provision(1, VpnProtocol.OPENVPN)

    exports = [
        asyncio.create_task(first.configs.render(config.id)),
        asyncio.create_task(second.configs.render(config.id)),
    ]
    await asyncio.sleep(0.5)  # both are in: one issuing, one waiting for it
    assert len(issuer.calls) <= 1
    issuer.release.set()
    texts = {r.text for r in await asyncio.gather(*exports)}
    assert len(texts) == 1 and len(issuer.calls) == 1
    assert "issuing" not in (await world.config(config.id)).config_data


async def test_a_claim_left_by_a_dead_process_expires(world: World) -> None:
    issuer = _Issuer()
    services = build_services(world.uow, world.clock, secrets=BOX, issuer=issuer)
    await world.node("nl-1", protocols=ALL, info=full_info(openvpn_backend()))
    await world.grant(1)
    config = await services.configs.provision(1, VpnProtocol.OPENVPN)
    async with world.uow() as uow:
        row = await uow.configs.get(config.id, for_update=True)
        assert row is not None
        row.config_data = {"issuing": {"by": "dead", "at": world.clock().isoformat()}}
        await uow.commit()
    world.clock.advance(seconds=61)
    assert "remote " in (await services.configs.render(config.id)).text
    assert len(issuer.calls) == 1


async def test_a_device_name_cannot_carry_a_line_break(world: World) -> None:
    await world.node("nl-1", protocols=ALL, info=full_info(openvpn_backend()))
    await world.grant(1)
    with pytest.raises(InvalidInput, match="printable"):
        await world.svc.configs.provision(
            1, VpnProtocol.OPENVPN, device_name='x\nscript-security 2\nup "/bin/sh"'
        )
    assert await world.config_count() == 0
