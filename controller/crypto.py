"""AES-256-GCM encryption of secrets at rest (client private keys, provider tokens...).

Blob layout: ``version (1 byte) | nonce (12 bytes) | ciphertext+tag``. The nonce is random
per message. ``context`` is authenticated but not stored: a blob encrypted for
``b"vpn_config:42"`` cannot be replayed into another row, because decrypting it under any
other context fails.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32


class DecryptionError(Exception):
    """The blob is corrupt, was made with another key, or belongs to another context."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the master key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        # A separate key for derivations, so a derived value never touches the AES key.
        self._prf_key = hmac.new(key, b"vpnbot derive v1", hashlib.sha256).digest()

    def derive(self, label: bytes) -> bytes:
        """A stable secret for ``label`` (e.g. a bot's webhook token), the same in every
        process that has the master key."""
        return hmac.new(self._prf_key, label, hashlib.sha256).digest()

    def __repr__(self) -> str:  # never show the key
        return "SecretBox(<key hidden>)"

    def encrypt(self, plaintext: bytes, context: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return bytes([VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, context)

    def decrypt(self, blob: bytes, context: bytes = b"") -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != VERSION:
            raise DecryptionError("not a vpnbot secret blob (wrong length or version)")
        nonce = blob[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + NONCE_BYTES :], context)
        except InvalidTag:
            raise DecryptionError("secret does not decrypt: wrong key or context") from None

    def encrypt_text(self, text: str, context: str = "") -> bytes:
        return self.encrypt(text.encode("utf-8"), context.encode("utf-8"))

    def decrypt_text(self, blob: bytes, context: str = "") -> str:
        return self.decrypt(blob, context.encode("utf-8")).decode("utf-8")


def config_secret_context(config_id: int) -> bytes:
    """The context a client config's secrets (keys, profile) are sealed under: its row id."""
    return f"vpn_config:{config_id}".encode()


def open_config_secret(box: SecretBox, config_id: int, blob: bytes | None) -> dict[str, str | None]:
    """The secrets of config ``config_id``; a blob copied from another row does not open."""
    if blob is None:
        return {}
    value = json.loads(box.decrypt(blob, config_secret_context(config_id)))
    return value if isinstance(value, dict) else {}
