"""The core's complete JSON config: what a plain restart of Xray (or v2ray 4.x) reads.

It holds, besides the VLESS inbound with **every current user** (so a restart keeps them):

* the API: a ``dokodemo-door`` inbound tagged ``api`` on the configured address, routed to
  the ``api`` handler with HandlerService and StatsService enabled;
* ``stats`` and a level-0 policy with ``statsUserUplink``/``statsUserDownlink``, so the core
  counts traffic per user;
* a ``freedom`` outbound (the default) and a ``blackhole`` one that the routing sends
  ``blocked_networks`` to. The default blocks loopback and private ranges: without it any VPN
  user could reach the unauthenticated API on 127.0.0.1 through the tunnel, or the
  provider's internal network. ``IPIfNonMatch`` resolves domain names before that rule, so
  ``localhost`` is blocked too.

The same JSON works for v2ray 4.34 with ``security = "none"`` (v2ray needs
``"decryption": "none"`` on a VLESS inbound; it ignores Reality, which is why Reality is
never tested with it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent.backends.xray.users import CoreUser
from node_agent.errors import ConfigError
from node_agent.files import write_atomic

API_TAG = "api"
DIRECT_TAG = "direct"
BLOCKED_TAG = "blocked"


@dataclass(frozen=True, slots=True)
class RealityServer:
    private_key: str
    short_ids: tuple[str, ...]
    server_names: tuple[str, ...]
    dest: str  # host:port of the site Reality hands unauthenticated handshakes to


@dataclass(frozen=True, slots=True)
class CoreSettings:
    api_host: str
    api_port: int
    inbound_tag: str
    listen: str
    port: int
    reality: RealityServer | None  # None: plain VLESS over TCP
    blocked_networks: tuple[str, ...] = ()
    log_level: str = "warning"


def split_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` into (host without brackets, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: use HOST:PORT, or [IPv6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _client(user: CoreUser) -> dict[str, Any]:
    return {"id": user.uuid, "email": user.email, "flow": user.flow, "level": 0}


def render(settings: CoreSettings, users: Iterable[CoreUser]) -> dict[str, Any]:
    """The whole config as a JSON-ready dict; users in email order (stable output)."""
    stream: dict[str, Any] = {"network": "tcp", "security": "none"}
    if settings.reality is not None:
        reality = settings.reality
        stream = {
            "network": "tcp",
            "security": "reality",
            "realitySettings": {
                "show": False,
                "dest": reality.dest,
                "xver": 0,
                "serverNames": list(reality.server_names),
                "privateKey": reality.private_key,
                "shortIds": list(reality.short_ids),
            },
        }
    rules: list[dict[str, Any]] = [
        {"type": "field", "inboundTag": [API_TAG], "outboundTag": API_TAG},
        # The API has no authentication. Blocking its address is not enough: a client's
        # domain may resolve to a public address for the router and to 127.0.0.1 when
        # freedom dials it (DNS rebinding). No client connection goes to the API's port.
        {
            "type": "field",
            "inboundTag": [settings.inbound_tag],
            "port": str(settings.api_port),
            "outboundTag": BLOCKED_TAG,
        },
    ]
    if settings.blocked_networks:
        rules.append(
            {"type": "field", "ip": list(settings.blocked_networks), "outboundTag": BLOCKED_TAG}
        )
    return {
        # No access log: it would record every user connection (privacy) and grow forever.
        "log": {"loglevel": settings.log_level, "access": "none"},
        "api": {"tag": API_TAG, "services": ["HandlerService", "StatsService"]},
        "stats": {},
        "policy": {
            "levels": {"0": {"statsUserUplink": True, "statsUserDownlink": True}},
        },
        "inbounds": [
            {
                "tag": API_TAG,
                "listen": settings.api_host,
                "port": settings.api_port,
                "protocol": "dokodemo-door",
                "settings": {"address": settings.api_host},
            },
            {
                "tag": settings.inbound_tag,
                "listen": settings.listen,
                "port": settings.port,
                "protocol": "vless",
                "settings": {
                    "clients": [_client(u) for u in sorted(users, key=lambda u: u.email)],
                    "decryption": "none",
                },
                "streamSettings": stream,
            },
        ],
        "outbounds": [
            {"tag": DIRECT_TAG, "protocol": "freedom"},
            {"tag": BLOCKED_TAG, "protocol": "blackhole"},
        ],
        "routing": {"domainStrategy": "IPIfNonMatch", "rules": rules},
    }


def dump(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2) + "\n").encode()


def write(path: Path, settings: CoreSettings, users: Iterable[CoreUser]) -> None:
    """Write the config atomically, 0600 (it holds the Reality private key)."""
    write_bytes(path, dump(render(settings, users)))


def write_bytes(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, body, mode=0o600)


def read_users(path: Path, inbound_tag: str) -> dict[str, CoreUser] | None:
    """The users of ``inbound_tag`` in a config file we wrote, by email; None when there is
    no file. ConfigError when it is not a config of that shape."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON config ({exc})") from None
    try:
        (inbound,) = [i for i in data["inbounds"] if i.get("tag") == inbound_tag]
        clients = inbound["settings"]["clients"]
        users = [
            CoreUser(str(c["email"]), str(c["id"]).lower(), str(c.get("flow", ""))) for c in clients
        ]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(
            f"{path}: no VLESS inbound {inbound_tag!r} with clients; move the file away "
            "or fix inbound_tag"
        ) from None
    return {u.email: u for u in users}
