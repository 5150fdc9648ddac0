"""Devices of other protocols through the bot: VLESS-Reality arrives as a share link plus its
QR code; the protocol list offers what the nodes serve; servers and a preferred location."""

from __future__ import annotations

import os
from pathlib import Path

from bots.client.callbacks import MenuCb, NewDeviceCb, Screen, ServerCb
from controller.crypto import SecretBox
from controller.db.uow import UnitOfWorkFactory
from controller.domain.enums import VpnProtocol
from controller.nodes.store import HubStore
from controller.services import Actor, build_services
from controller.vpn import vless
from tests.bots.harness import running_client_bot
from tests.conftest import FakeClock
from tests.fake_telegram import FakeTelegram
from tests.integration.test_provisioning import World
from tests.integration.test_provisioning_protocols import REALITY_KEY, full_info, reality_backend


async def test_a_vless_device_gets_a_share_link_and_its_qr_code(
    uow_factory: UnitOfWorkFactory, clock: FakeClock, tmp_path: Path, tg: FakeTelegram
) -> None:
    box = SecretBox(os.urandom(32))
    world = World(
        build_services(uow_factory, clock, secrets=box),
        HubStore(uow_factory, box, clock),
        uow_factory,
        clock,
        tmp_path,
    )
    node = await world.node(
        "nl-1",
        protocols=(VpnProtocol.WIREGUARD, VpnProtocol.VLESS),
        info=full_info(reality_backend()),
    )
    await world.set_node(node, country_code="NL", city="Amsterdam", country="Netherlands")
    async with running_client_bot(world.svc, tg):
        alice = tg.user(1001, first_name="Alice", language_code="en")
        await alice.send("/start")
        menu = await alice.wait_message(lambda m: "Hi, Alice" in m.text)
        await world.svc.subscriptions.grant(Actor.cli(), 1001, days=30, devices=2)

        await alice.forge_callback(menu, MenuCb(screen=Screen.SERVERS).pack())
        servers = await alice.wait_message(lambda m: "Servers" in m.text)
        assert "🇳🇱 Amsterdam, Netherlands — load 0%, up" in servers.text
        await alice.press(servers, data=ServerCb(server_id=node).pack())
        await alice.wait_message(lambda m: "Amsterdam, Netherlands — load 0%, up ✅" in m.text)

        await alice.forge_callback(menu, MenuCb(screen=Screen.NEW_DEVICE).pack())
        protocols = await alice.wait_message(lambda m: "Choose a protocol" in m.text)
        labels = [text for text, _ in protocols.buttons]
        assert labels[:3] == ["✨ Automatic", "VLESS-Reality", "WireGuard"]  # DPI-proof first
        await alice.press(protocols, data=NewDeviceCb(protocol="vless").pack())
        platforms = await alice.wait_message(lambda m: "Which device" in m.text)
        await alice.press(platforms, "iOS")

        shared = await alice.wait_message(lambda m: "vless://" in m.text)
        assert "Streisand" in shared.text  # the app for that platform
        link_text = shared.text[shared.text.index("vless://") :].split()[0]
        link = vless.parse_share_link(link_text)
        assert (link.public_key, link.flow, link.port) == (REALITY_KEY, "xtls-rprx-vision", 443)
        [config] = await world.svc.configs.list_for_user(1001)
        assert link.uuid == config.client_id and config.server_id == node
        photo = await alice.wait_message(lambda m: m.photo is not None)
        assert photo.photo is not None and photo.photo.startswith(b"\x89PNG")
        assert "QR code for iOS" in photo.text
