"""Reality key material, generated on the node: an X25519 key pair and short ids.

Xray and sing-box spell X25519 keys as base64url without padding (32 bytes → 43 characters);
short ids are 0-16 hex digits of even length.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent.errors import ConfigError

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
