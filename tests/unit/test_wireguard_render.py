"""WireGuard client material: keys, addresses, endpoints, the ``.conf`` file (checked by the
real ``wg``/``wg-quick`` when installed) and its QR code."""

from __future__ import annotations

import base64
import io
import ipaddress
import os
import shutil
import subprocess
import uuid
from itertools import islice
from pathlib import Path

import qrcode
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M

from controller.vpn import qr
from controller.vpn.wireguard import (
    ClientConfig,
    endpoint,
    free_address,
    generate_keypair,
    generate_preshared_key,
    render,
)
from tests.conftest import need

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def derive_public(private_b64: str) -> str:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64, validate=True))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def config(**changes: object) -> ClientConfig:
    client, server = generate_keypair(), generate_keypair()
    fields: dict[str, object] = {
        "private_key": client.private_key,
        "address": "10.8.0.2/32",
        "dns": ["1.1.1.1", "1.0.0.1"],
        "server_public_key": server.public_key,
        "preshared_key": generate_preshared_key(),
        "endpoint": endpoint("203.0.113.7", 51820),
        "allowed_ips": ["0.0.0.0/0", "::/0"],
        "persistent_keepalive": 25,
    }
    fields.update(changes)
    return ClientConfig(**fields)  # type: ignore[arg-type]


def parse(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Sections in order, each with its (key, value) pairs in order."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("["):
            sections.append((line, []))
            continue
        key, sep, value = line.partition(" = ")
        assert sep, f"not a 'Key = value' line: {line!r}"
        sections[-1][1].append((key, value))
    return sections


# --- keys -------------------------------------------------------------------------------------


def test_keypair_is_32_byte_base64_and_matches() -> None:
    pair = generate_keypair()
    for value in (pair.private_key, pair.public_key):
        assert len(value) == 44 and value.endswith("=")
        assert len(base64.b64decode(value, validate=True)) == 32
    assert derive_public(pair.private_key) == pair.public_key


def test_keypairs_are_fresh() -> None:
    pairs = [generate_keypair() for _ in range(20)]
    assert len({p.private_key for p in pairs}) == 20
    assert len({p.public_key for p in pairs}) == 20
    assert all(derive_public(p.private_key) == p.public_key for p in pairs)


def test_preshared_key_is_32_random_bytes() -> None:
    keys = [generate_preshared_key() for _ in range(20)]
    for value in keys:
        assert len(base64.b64decode(value, validate=True)) == 32
    assert len(set(keys)) == 20


# --- addresses and endpoints ------------------------------------------------------------------


def test_free_address_skips_network_server_and_taken_in_order() -> None:
    addresses = list(free_address("10.8.0.1/24", {"10.8.0.2", "10.8.0.4"}))
    assert addresses[:3] == ["10.8.0.3", "10.8.0.5", "10.8.0.6"]
    assert "10.8.0.0" not in addresses  # network
    assert "10.8.0.1" not in addresses  # the server
    assert "10.8.0.255" not in addresses  # broadcast
    assert addresses[-1] == "10.8.0.254"
    assert len(addresses) == 254 - 1 - 2


def test_free_address_with_the_server_in_the_middle() -> None:
    assert list(free_address("10.9.0.5/29", set())) == [
        "10.9.0.1",
        "10.9.0.2",
        "10.9.0.3",
        "10.9.0.4",
        "10.9.0.6",
    ]


def test_free_address_of_a_full_subnet_is_empty() -> None:
    assert list(free_address("10.9.0.1/30", {"10.9.0.2"})) == []


def test_free_address_is_lazy_on_a_big_subnet() -> None:
    assert list(islice(free_address("10.0.0.1/8", {"10.0.0.2"}), 2)) == ["10.0.0.3", "10.0.0.4"]


def test_free_address_ipv6() -> None:
    addresses = list(free_address("fd00:8::1/120", {"fd00:8::2"}))
    assert addresses[:2] == ["fd00:8::3", "fd00:8::4"]
    assert "fd00:8::1" not in addresses
    assert "fd00:8::" not in addresses  # the subnet-router anycast address
    assert addresses[-1] == "fd00:8::ff"
    assert len(addresses) == 256 - 1 - 1 - 1
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("fd00:8::/120") for a in addresses)


def test_endpoint() -> None:
    assert endpoint("203.0.113.7", 51820) == "203.0.113.7:51820"
    assert endpoint("vpn.example.org", 443) == "vpn.example.org:443"
    assert endpoint("2001:db8::1", 51820) == "[2001:db8::1]:51820"


# --- render -----------------------------------------------------------------------------------


def test_render_has_exactly_the_documented_keys() -> None:
    cfg = config()
    sections = parse(render(cfg))
    assert sections == [
        (
            "[Interface]",
            [
                ("PrivateKey", cfg.private_key),
                ("Address", "10.8.0.2/32"),
                ("DNS", "1.1.1.1, 1.0.0.1"),
            ],
        ),
        (
            "[Peer]",
            [
                ("PublicKey", cfg.server_public_key),
                ("PresharedKey", cfg.preshared_key),
                ("Endpoint", "203.0.113.7:51820"),
                ("AllowedIPs", "0.0.0.0/0, ::/0"),
                ("PersistentKeepalive", "25"),
            ],
        ),
    ]


def test_render_omits_empty_dns_and_zero_keepalive() -> None:
    sections = dict(parse(render(config(dns=[], persistent_keepalive=0))))
    assert [k for k, _ in sections["[Interface]"]] == ["PrivateKey", "Address"]
    assert [k for k, _ in sections["[Peer]"]] == [
        "PublicKey",
        "PresharedKey",
        "Endpoint",
        "AllowedIPs",
    ]


def test_render_ipv6_endpoint_and_single_dns() -> None:
    text = render(config(endpoint=endpoint("2001:db8::1", 51820), dns=["9.9.9.9"]))
    assert "Endpoint = [2001:db8::1]:51820\n" in text
    assert "DNS = 9.9.9.9\n" in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def _wg(*argv: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=20, cwd=cwd, check=False
    )
    assert done.returncode == 0, f"{argv} failed: {done.stderr}"
    return done.stdout


def _need_wg_tools() -> None:
    need(
        shutil.which("wg") is not None and shutil.which("wg-quick") is not None,
        "wireguard-tools (wg, wg-quick) is not installed",
    )


def test_wireguard_tools_accept_the_rendered_file(tmp_path: Path) -> None:
    _need_wg_tools()
    cfg = config()
    path = tmp_path / "wgclient.conf"
    path.write_text(render(cfg))
    path.chmod(0o600)
    stripped = _wg("wg-quick", "strip", str(path))
    # wg-quick consumed its own keys and passes the rest on to `wg setconf`.
    assert "Address" not in stripped and "DNS" not in stripped
    assert f"PrivateKey = {cfg.private_key}" in stripped
    assert f"PresharedKey = {cfg.preshared_key}" in stripped
    assert _wg("wg", "pubkey", stdin=cfg.private_key + "\n").strip() == derive_public(
        cfg.private_key
    )


def test_wg_parses_the_stripped_file_into_a_device(tmp_path: Path) -> None:
    """`wg setconf` on a userspace device in a throw-away network namespace: the strongest
    check that every line is WireGuard syntax, short of a handshake (see the e2e tests)."""
    _need_wg_tools()
    need(os.geteuid() == 0, "needs root (a network namespace and a tun device)")
    need(shutil.which("wireguard-go") is not None, "wireguard-go is not installed")
    need(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    need(os.path.exists("/dev/net/tun"), "no /dev/net/tun")
    cfg = config(endpoint=endpoint("2001:db8::7", 51820))
    path = tmp_path / "wgclient.conf"
    path.write_text(render(cfg))
    path.chmod(0o600)
    (tmp_path / "stripped.conf").write_text(_wg("wg-quick", "strip", str(path)))
    name = f"wgt{uuid.uuid4().hex[:8]}"
    script = (
        f"wireguard-go {name} 2>/dev/null && wg setconf {name} stripped.conf && "
        f"wg showconf {name}; rc=$?; ip link del {name}; exit $rc"
    )
    shown = parse(_wg("unshare", "--net", "sh", "-c", script, cwd=tmp_path))
    interface, peer = dict(shown[0][1]), dict(shown[1][1])
    assert interface["PrivateKey"] == cfg.private_key
    assert peer["PublicKey"] == cfg.server_public_key
    assert peer["PresharedKey"] == cfg.preshared_key
    assert peer["Endpoint"] == "[2001:db8::7]:51820"
    assert peer["AllowedIPs"] == "0.0.0.0/0, ::/0"
    assert peer["PersistentKeepalive"] == "25"


# --- QR ---------------------------------------------------------------------------------------

# No QR decoder (zbar, opencv) is installed: the PNG is read back with Pillow and compared,
# module by module, with the matrix qrcode computes for the same text and settings as
# controller.vpn.qr (error correction M, 8-pixel modules, 4-module border).
BOX, BORDER = 8, 4


def expected_matrix(text: str) -> list[list[bool]]:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=BOX, border=BORDER)
    code.add_data(text)
    code.make(fit=True)
    matrix: list[list[bool]] = code.get_matrix()  # with the border; True is dark
    return matrix


def modules_of(png: bytes) -> list[list[bool]]:
    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    assert width == height and width % BOX == 0
    size = width // BOX
    pixels = image.load()
    assert pixels is not None
    rows = []
    for y in range(size):
        row = []
        for x in range(size):
            # Every pixel of the module, not just its centre, must agree.
            values = {pixels[x * BOX + dx, y * BOX + dy] for dx in range(BOX) for dy in range(BOX)}
            assert len(values) == 1, f"module ({x}, {y}) is not a solid {BOX}px square"
            (value,) = values
            assert value in (0, 255)
            row.append(value == 0)
        rows.append(row)
    return rows


def test_qr_png_is_a_png_of_the_text() -> None:
    text = render(config())
    png = qr.png(text)
    assert png.startswith(PNG_MAGIC)
    modules = modules_of(png)
    assert modules == expected_matrix(text)
    # Quiet zone is light, finder patterns sit in three corners.
    size = len(modules)
    assert not any(modules[0]) and not any(modules[-1])
    inner = size - 2 * BORDER
    for oy, ox in ((0, 0), (0, inner - 7), (inner - 7, 0)):
        ring = [modules[BORDER + oy][BORDER + ox + i] for i in range(7)]
        assert ring == [True] * 7
    # A config is long: the version grows past the smallest ones.
    assert inner >= 41


def test_qr_of_other_text_differs() -> None:
    # The comparison above can fail: another config gives other modules.
    a, b = render(config()), render(config())
    assert modules_of(qr.png(a)) != expected_matrix(b)
    assert modules_of(qr.png(a)) == expected_matrix(a)
