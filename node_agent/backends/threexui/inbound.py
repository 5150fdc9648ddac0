"""The panel's inbound as JSON, and the clients we put into it.

``settings`` and ``streamSettings`` arrive as JSON strings (2.x, 3.0) or as objects (3.1+).
A VLESS client is ``model.Client`` of the panel: ``id`` is the UUID; ``email`` is unique
panel-wide (case-insensitively) and may not contain whitespace, ``/``, ``\\`` or control
characters (3.1+ ``validateClientEmail``). Reality public parameters sit in
``streamSettings.realitySettings``: ``shortIds``, ``serverNames`` and, under ``settings``, the
``publicKey`` and ``fingerprint`` the panel shows in share links.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from node_agent.backends.base import RealityPublicParams
from node_agent.backends.threexui.session import PanelError

VISION = "xtls-rprx-vision"
COMMENT = "managed by vpnbot: changes made here are reverted"


@dataclass(frozen=True, slots=True)
class InboundView:
    id: int
    protocol: str
    port: int
    enable: bool
    clients: tuple[dict[str, Any], ...]
    stream: dict[str, Any]


def _json_field(value: Any, field: str, what: str) -> dict[str, Any]:
    """``settings``/``streamSettings``: a JSON string (older) or an object (newer)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise PanelError(f"{what}: the inbound's {field} is not valid JSON") from None
    if not isinstance(value, dict):
        raise PanelError(f"{what}: the inbound's {field} is not a JSON object")
    return value


def parse_inbound(obj: Any, inbound_id: int, what: str) -> InboundView:
    if not isinstance(obj, dict):
        raise PanelError(f"{what}: the panel's inbound {inbound_id} is not an object")
    settings = _json_field(obj.get("settings"), "settings", what)
    clients = settings.get("clients") or []
    if not isinstance(clients, list) or not all(isinstance(c, dict) for c in clients):
        raise PanelError(f"{what}: the inbound's settings.clients is not a list of objects")
    try:
        port = int(obj.get("port") or 0)
    except (TypeError, ValueError):
        raise PanelError(f"{what}: the inbound's port is not a number") from None
    return InboundView(
        id=inbound_id,
        protocol=str(obj.get("protocol") or ""),
        port=port,
        enable=bool(obj.get("enable", True)),
        clients=tuple(clients),
        stream=_json_field(obj.get("streamSettings"), "streamSettings", what),
    )


def forbidden_email_char(text: str) -> str | None:
    """The first character 3X-UI refuses in an email (``hasForbiddenClientChar``), if any."""
    for ch in text:
        if ch in "/\\" or ch.isspace() or not ch.isprintable():
            return ch
    return None


def sub_id(email: str) -> str:
    """A stable, panel-unique subscription id (3X-UI wants one per client)."""
    return hashlib.sha256(f"vpnbot:{email}".encode()).hexdigest()[:16]


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # very old panels kept comma-separated strings
        value = value.split(",")
    if not isinstance(value, list):
        return ()
    return tuple(v.strip() for v in value if isinstance(v, str))


def reality_params(view: InboundView) -> RealityPublicParams | None:
    """Port, public key, short ids, server names and fingerprint of a Reality inbound."""
    stream = view.stream
    reality = stream.get("realitySettings")
    if stream.get("security") != "reality" or not isinstance(reality, dict):
        return None
    settings = reality.get("settings")
    settings = settings if isinstance(settings, dict) else {}
    public_key = settings.get("publicKey")
    if not isinstance(public_key, str) or not public_key:
        return None
    fingerprint = settings.get("fingerprint")
    return RealityPublicParams(
        port=view.port,
        public_key=public_key,
        short_ids=_strings(reality.get("shortIds")),
        server_names=tuple(n for n in _strings(reality.get("serverNames")) if n),
        flow=VISION if flow_capable(view) else "",
        fingerprint=fingerprint if isinstance(fingerprint, str) and fingerprint else "chrome",
    )


def flow_capable(view: InboundView) -> bool:
    # Vision needs raw TCP under TLS or Reality; 3.1+ panels strip the flow elsewhere.
    network = view.stream.get("network") or "tcp"
    return network in ("tcp", "raw") and view.stream.get("security") in ("tls", "reality")


def client_object(email: str, user_id: str, flow: str, enable: bool = True) -> dict[str, Any]:
    """The whole client as we want the panel to hold it (an update replaces, not patches)."""
    return {
        "id": user_id,
        "flow": flow,
        "email": email,
        "enable": enable,
        "limitIp": 0,
        "totalGB": 0,
        "expiryTime": 0,
        "reset": 0,
        "subId": sub_id(email),
        "comment": COMMENT,
    }
