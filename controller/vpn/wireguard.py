"""WireGuard client material: key pairs, preshared keys and the client ``.conf`` file."""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_key: str
    public_key: str


def generate_keypair() -> KeyPair:
    key = X25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return KeyPair(base64.b64encode(private).decode(), base64.b64encode(public).decode())


def generate_preshared_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def free_address(subnet_with_server: str, taken: set[str]) -> Iterable[str]:
    """Client addresses of the node's tunnel subnet (``10.8.0.1/24`` = the server's address
    and prefix), lowest first, skipping the server's own and ``taken``."""
    interface = ipaddress.ip_interface(subnet_with_server)
    network = interface.network
    for host in network.hosts():
        text = str(host)
        if host != interface.ip and text not in taken:
            yield text


@dataclass(frozen=True, slots=True)
class ClientConfig:
    private_key: str
    address: str  # with prefix, e.g. 10.8.0.2/32
    dns: Sequence[str]
    server_public_key: str
    preshared_key: str
    endpoint: str  # host:port ([v6]:port)
    allowed_ips: Sequence[str]
    persistent_keepalive: int


def endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render(config: ClientConfig) -> str:
    """The ``.conf`` file wg-quick and the official apps import."""
    lines = [
        "[Interface]",
        f"PrivateKey = {config.private_key}",
        f"Address = {config.address}",
    ]
    if config.dns:
        lines.append(f"DNS = {', '.join(config.dns)}")
    lines += [
        "",
        "[Peer]",
        f"PublicKey = {config.server_public_key}",
        f"PresharedKey = {config.preshared_key}",
        f"Endpoint = {config.endpoint}",
        f"AllowedIPs = {', '.join(config.allowed_ips)}",
    ]
    if config.persistent_keepalive:
        lines.append(f"PersistentKeepalive = {config.persistent_keepalive}")
    return "\n".join(lines) + "\n"
