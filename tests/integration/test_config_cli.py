"""`vpnbot config list|export|reissue|delete` and `vpnbot user grant` on the embedded
default: the commands an admin uses to hand out and manage devices."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from controller.bootstrap import open_container
from controller.db.base import utcnow
from controller.nodes.store import HubStore
from controller.settings import load_settings
from controller.vpn import vless
from node_agent.backends.xray.reality import generate_keys
from proto.nodeapi.v1 import node_agent_pb2 as pb
from tests.hub_support import wireguard_info
from tests.integration.test_cli import Cli

SERVER_KEY = base64.b64encode(b"s" * 32).decode()


@pytest.fixture
def cli(clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def _node_reports_wireguard(
    name: str, subnet: str = "10.9.0.1/24", *, extra: tuple[pb.BackendInfo, ...] = ()
) -> None:
    """What the hub records when it first reaches the node's agent."""

    async def record() -> None:
        async with open_container(load_settings()) as container:
            server = await container.services.nodes.get(name)
            info = wireguard_info(subnet, SERVER_KEY)
            info.backends.extend(extra)
            store = HubStore(container.uow_factory, container.secrets, utcnow)
            async with container.uow_factory() as uow:
                await uow.nodes.update_fields(server.id, enrolled_at=utcnow())
                await uow.commit()
            await store.record_info(server.id, info)

    asyncio.run(record())


def _conf_value(text: str, key: str) -> str:
    match = re.search(rf"^{key} = (.+)$", text, flags=re.MULTILINE)
    assert match, (key, text)
    return match.group(1)


def _public_of(private_b64: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def test_grant_export_list_reissue_delete(cli: Cli, tmp_path: Path) -> None:
    cli.ok("node", "add", "nl-1", "--address", "203.0.113.7")
    _node_reports_wireguard("nl-1")
    assert "active until" in cli.ok("user", "grant", "5550001", "--days", "30", "--devices", "2")

    out = cli.ok("config", "export", "5550001", "--out", str(tmp_path / "a.conf"))
    assert "on node nl-1" in out
    first = (tmp_path / "a.conf").read_text()
    assert _conf_value(first, "Address") == "10.9.0.2/32"
    assert _conf_value(first, "Endpoint") == "203.0.113.7:51820"
    assert _conf_value(first, "PublicKey") == SERVER_KEY
    assert (tmp_path / "a.conf").stat().st_mode & 0o077 == 0  # holds a private key

    # The same protocol again: the existing config, not a second device.
    cli.ok(
        "config", "export", "5550001", "--protocol", "wireguard", "--out", str(tmp_path / "b.conf")
    )
    assert (tmp_path / "b.conf").read_text() == first

    listing = cli.ok("config", "list", "5550001")
    config_id = int(listing.splitlines()[1].split()[0])
    assert "10.9.0.2" in listing and "nl-1" in listing

    cli.ok("config", "reissue", str(config_id))
    cli.ok(
        "config", "export", "5550001", "--config", str(config_id), "--out", str(tmp_path / "c.conf")
    )
    rotated = (tmp_path / "c.conf").read_text()
    assert _conf_value(rotated, "PrivateKey") != _conf_value(first, "PrivateKey")
    assert _conf_value(rotated, "PresharedKey") != _conf_value(first, "PresharedKey")
    assert _conf_value(rotated, "Address") == "10.9.0.2/32"  # same device, same address

    # Another user cannot export it, nor can an unknown id be touched.
    cli.ok("user", "grant", "5550002", "--days", "1")
    assert "no config" in cli.fails(
        "config", "export", "5550002", "--config", str(config_id), "--out", str(tmp_path / "x")
    )
    assert not (tmp_path / "x").exists()
    assert "no config" in cli.fails("config", "delete", "999999")

    cli.ok("config", "delete", str(config_id))
    assert "has no configs" in cli.ok("config", "list", "5550001")
    assert "no config" in cli.fails("config", "reissue", str(config_id))


def test_export_refusals_are_one_line(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "none.conf"
    assert "no user" in cli.fails("config", "export", "7770001", "--out", str(out))
    cli.ok("user", "grant", "7770001", "--days", "3")
    assert "no healthy node" in cli.fails("config", "export", "7770001", "--out", str(out))
    cli.ok("node", "add", "de-1", "--address", "198.51.100.2", "--protocols", "wireguard,vless")
    _node_reports_wireguard("de-1")
    assert "no healthy node with free capacity serves vless" in cli.fails(
        "config", "export", "7770001", "--protocol", "vless", "--out", str(out)
    )
    assert not out.exists()
    cli.fails(
        "config",
        "export",
        "7770001",
        "--config",
        "1",
        "--protocol",
        "wireguard",
        "--out",
        str(out),
        code=2,
    )
    cli.fails("user", "grant", "7770001", code=2)  # neither --plan nor --days
    cli.fails("user", "grant", "7770001", "--plan", "1", "--days", "2", code=2)
    assert "no plan" in cli.fails("user", "grant", "7770001", "--plan", "99")


def test_ids_beyond_any_record_are_usage_errors(cli: Cli, tmp_path: Path) -> None:
    """A number no database id can be is refused as input (it used to reach the driver and
    come back as an "unexpected OverflowError")."""
    huge = str(2**64)
    cli.ok("user", "grant", "7770002", "--days", "3")
    for args in (
        ("config", "reissue", huge),
        ("config", "delete", huge),
        ("user", "grant", "7770002", "--plan", huge),
        ("config", "export", "7770002", "--config", huge, "--out", str(tmp_path / "x.conf")),
    ):
        assert "is not in the range" in cli.fails(*args, code=2), args
    assert "no config" in cli.fails("config", "delete", str(2**53))
    assert "has no configs" in cli.ok("config", "list", "7770002")


def test_vless_export_writes_the_share_link_and_its_qr(cli: Cli, tmp_path: Path) -> None:
    public_key = generate_keys().public_key
    cli.ok("node", "add", "de-2", "--address", "198.51.100.3", "--protocols", "wireguard,vless")
    _node_reports_wireguard(
        "de-2",
        extra=(
            pb.BackendInfo(
                name="vless",
                kind=pb.BACKEND_KIND_XRAY,
                reality=pb.RealityParams(
                    port=443,
                    public_key=public_key,
                    short_ids=["6ba85179e30d4fc2"],
                    server_names=["www.example.com"],
                    flow="xtls-rprx-vision",
                    fingerprint="chrome",
                ),
            ),
        ),
    )
    cli.ok("user", "grant", "7770002", "--days", "3")
    out, png = tmp_path / "link.txt", tmp_path / "link.png"
    said = cli.ok(
        "config", "export", "7770002", "--protocol", "vless", "--out", str(out), "--qr", str(png)
    )
    assert "vless config" in said and "de-2" in said
    link = vless.parse_share_link(out.read_text())
    assert (link.host, link.port, link.public_key, link.short_id) == (
        "198.51.100.3",
        443,
        public_key,
        "6ba85179e30d4fc2",
    )
    assert png.read_bytes().startswith(b"\x89PNG")
    assert out.stat().st_mode & 0o777 == 0o600

    # An OpenVPN profile is too large for a QR code: refused before anything is placed.
    ovpn = tmp_path / "client.ovpn"
    assert "does not fit a QR code" in cli.fails(
        "config",
        "export",
        "7770002",
        "--protocol",
        "openvpn",
        "--out",
        str(ovpn),
        "--qr",
        str(png),
        code=2,
    )
    assert not ovpn.exists()
