"""Reality key material, generated on the node: an X25519 key pair and short ids.

Xray and sing-box spell X25519 keys as base64url without padding (32 bytes → 43 characters);
short ids are 0-16 hex digits of even length.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent.errors import ConfigError
from node_agent.files import write_atomic

_SHORT_ID = re.compile(r"^(?:[0-9a-f]{2}){0,8}$")


@dataclass(frozen=True, slots=True)
class RealityKeys:
    private_key: str
    public_key: str


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_key(value: str) -> bytes:
    """The 32 raw bytes of a base64url X25519 key; ConfigError when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError("a Reality key is base64url without padding") from None
    if len(raw) != 32 or _b64url(raw) != value:
        raise ConfigError("a Reality key is 32 bytes in canonical base64url without padding")
    return raw


def generate_keys() -> RealityKeys:
    private = X25519PrivateKey.generate()
    return RealityKeys(
        private_key=_b64url(private.private_bytes_raw()),
        public_key=_b64url(private.public_key().public_bytes_raw()),
    )


def public_key(private_key: str) -> str:
    """The public key of a base64url private key."""
    key = X25519PrivateKey.from_private_bytes(decode_key(private_key))
    return _b64url(key.public_key().public_bytes_raw())


def generate_short_ids(count: int, length: int = 8) -> tuple[str, ...]:
    """``count`` distinct random short ids of ``length`` bytes (hex: 2×length digits)."""
    if not 1 <= length <= 8:
        raise ValueError("a short id is 1..8 bytes")
    ids: list[str] = []
    while len(ids) < count:
        candidate = secrets.token_hex(length)
        if candidate not in ids:
            ids.append(candidate)
    return tuple(ids)


def valid_short_id(value: str) -> bool:
    return bool(_SHORT_ID.fullmatch(value))


@dataclass(frozen=True, slots=True)
class RealityMaterial:
    """What a node's Reality inbound is made of; only ``public_key`` and ``short_ids`` are
    ever given to clients."""

    private_key: str
    public_key: str
    short_ids: tuple[str, ...]


def load_or_create_material(path: Path, short_id_count: int) -> RealityMaterial:
    """The node's Reality key pair and short ids, generated on first use and kept in ``path``
    (JSON, 0600).

    Short ids are never dropped or replaced once made: clients' share links carry them. A
    larger ``short_id_count`` adds new ones; a smaller one keeps the existing ones.
    """
    if not 1 <= short_id_count <= 8:
        raise ConfigError("short_id_count is 1..8")
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        keys = generate_keys()
        material = RealityMaterial(
            keys.private_key, keys.public_key, generate_short_ids(short_id_count)
        )
        _save(path, material)
        return material
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable Reality material ({exc})") from None
    try:
        private = str(data["private_key"])
        short_ids = tuple(str(s) for s in data["short_ids"])
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: Reality material needs private_key and short_ids") from None
    if not short_ids or not all(valid_short_id(s) and s for s in short_ids):
        raise ConfigError(f"{path}: short ids must be 2..16 hex digits of even length")
    material = RealityMaterial(private, public_key(private), short_ids)
    if len(short_ids) < short_id_count:
        extra = [s for s in generate_short_ids(8) if s not in short_ids]
        material = RealityMaterial(
            private,
            material.public_key,
            short_ids + tuple(extra[: short_id_count - len(short_ids)]),
        )
        _save(path, material)
    return material


def _save(path: Path, material: RealityMaterial) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"private_key": material.private_key, "short_ids": list(material.short_ids)}
    write_atomic(path, (json.dumps(body, indent=2) + "\n").encode(), mode=0o600)
