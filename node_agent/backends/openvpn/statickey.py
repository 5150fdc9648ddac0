"""OpenVPN's static key file: what ``openvpn --genkey secret`` writes and ``tls-crypt`` reads.

2048 random bits as 16 lines of 32 hex digits between BEGIN/END markers, after a comment
header. Written here so the agent needs no openvpn binary to make its PKI.
"""

from __future__ import annotations

import secrets

STATIC_KEY_BITS = 2048
_BEGIN = "-----BEGIN OpenVPN Static key V1-----"
_END = "-----END OpenVPN Static key V1-----"


def format_static_key(raw: bytes) -> str:
    """OpenVPN's static key file (what ``openvpn --genkey secret`` writes) for ``raw``."""
    if len(raw) != STATIC_KEY_BITS // 8:
        raise ValueError(f"a static key is {STATIC_KEY_BITS // 8} bytes")
    hexed = raw.hex()
    lines = [hexed[i : i + 32] for i in range(0, len(hexed), 32)]
    return "\n".join(
        [
            "#",
            f"# {STATIC_KEY_BITS} bit OpenVPN static key",
            "#",
            _BEGIN,
            *lines,
            _END,
            "",
        ]
    )


def parse_static_key(text: str) -> bytes:
    """The raw bytes of an OpenVPN static key file; ValueError when it is not one."""
    body: list[str] = []
    inside = False
    for line in text.splitlines():
        line = line.strip()
        if line == _BEGIN:
            inside = True
        elif line == _END:
            if not inside:
                break
            raw = bytes.fromhex("".join(body))
            if len(raw) != STATIC_KEY_BITS // 8:
                raise ValueError(f"static key has {len(raw)} bytes, not {STATIC_KEY_BITS // 8}")
            return raw
        elif inside:
            body.append(line)
    raise ValueError("not an OpenVPN static key (no BEGIN/END block)")


def generate_static_key() -> str:
    return format_static_key(secrets.token_bytes(STATIC_KEY_BITS // 8))
