"""The enrollment token and HTTP exchange shared by ``vpnbot node add`` and
``vpn-node-agent enroll``.

A token is ``vpnbot-enroll-v1.`` followed by unpadded base64url of a compact JSON object:

* ``u``: the controller's enrollment URL (``https://host:port``);
* ``n``: the node id the certificate will name;
* ``f``: the SHA-256 fingerprint (hex) of the cluster CA certificate, which the agent pins;
* ``s``: the single-use secret (the controller stores only its SHA-256).

The exchange: the agent downloads the CA certificate from ``CA_PATH`` (public data; it is
accepted only if its fingerprint equals ``f``), then, over HTTPS verified against that CA,
POSTs ``{"token": secret, "csr": PEM}`` to ``ENROLL_PATH`` and receives
``{"node_id", "certificate", "ca_certificate"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from proto.nodeapi.v1.identity import is_valid_node_id

PREFIX = "vpnbot-enroll-v1."
CA_PATH = "/api/v1/enroll/ca.pem"
ENROLL_PATH = "/api/v1/enroll"
SECRET_BYTES = 32
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")


_HOST_URL = re.compile(r"^https://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?/?$")


def is_host_url(url: str) -> bool:
    """``https://HOST[:PORT]`` and nothing else (no credentials, path, query or fragment)."""
    if not _HOST_URL.fullmatch(url):
        return False
    try:
        port = urlsplit(url).port
    except ValueError:
        return False
    return port is None or 1 <= port <= 65535


class TokenError(ValueError):
    """Not an enrollment token (mistyped, truncated, or from something else)."""


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    url: str
    node_id: str
    ca_fingerprint: str
    secret: str

    def encode(self) -> str:
        body = json.dumps(
            {"u": self.url, "n": self.node_id, "f": self.ca_fingerprint, "s": self.secret},
            separators=(",", ":"),
        ).encode()
        return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> EnrollmentToken:
        text = text.strip()
        if not text.startswith(PREFIX):
            raise TokenError(f"not an enrollment token (it must start with {PREFIX})")
        raw = text[len(PREFIX) :]
        try:
            body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise TokenError("the enrollment token is damaged (copy it again)") from None
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("u", "n", "f", "s")
        ):
            raise TokenError("the enrollment token is damaged (copy it again)")
        token = cls(body["u"], body["n"], body["f"], body["s"])
        token.validate()
        return token

    def validate(self) -> None:
        if not is_host_url(self.url):
            raise TokenError(f"the enrollment URL {self.url!r} is not https://HOST[:PORT]")
        if not is_valid_node_id(self.node_id):
            raise TokenError("the enrollment token names an invalid node id")
        if not _HEX64.fullmatch(self.ca_fingerprint):
            raise TokenError("the enrollment token's CA fingerprint is malformed")
        if not _SECRET.fullmatch(self.secret):
            raise TokenError("the enrollment token's secret is malformed")


def hash_secret(secret: str) -> str:
    """What the controller stores instead of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def pem_fingerprint(pem: bytes) -> str:
    """SHA-256 (hex) of the DER of the first certificate in ``pem``."""
    match = re.search(
        rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, flags=re.DOTALL
    )
    if match is None:
        raise ValueError("no PEM certificate found")
    der = base64.b64decode(b"".join(match.group(1).split()))
    return hashlib.sha256(der).hexdigest()
