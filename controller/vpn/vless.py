"""The ``vless://`` share link of a VLESS-Reality client (what v2rayN, v2rayNG, Hiddify, Happ,
Streisand and the other apps import from text or a QR code).

The format is the de-facto standard of XTLS/Xray-core issue #91, later discussion #716
("VMessAEAD / VLESS 分享链接标准提案")::

    vless://UUID@HOST:PORT?type=tcp&security=reality&pbk=..&sid=..&sni=..&fp=..&flow=..&encryption=none#NAME

Every value is percent-encoded (``encodeURIComponent``); parameter names are case-sensitive and
may not repeat; an IPv6 host is written in brackets; an IDN host as ``xn--`` punycode; the name
is the percent-encoded fragment. ``flow`` and ``sid`` are omitted when empty (an empty short id
is a valid Reality short id: the server lists ``""``).

Only what this project serves is modelled: VLESS over plain TCP with Reality. Parsing refuses
links it could not reproduce (another transport or security, a header, unknown parameters)
instead of silently dropping what they ask for. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

SCHEME = "vless://"
FLOWS = ("xtls-rprx-vision", "xtls-rprx-vision-udp443")

_HEX_ID = re.compile(r"^(?:[0-9a-fA-F]{2}){0,8}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# Parameters a link may carry that change nothing about reaching the server: ``spx`` is where an
# Xray client starts crawling, browser-like, when the server fails Reality verification.
_IGNORED = frozenset({"spx"})
_KNOWN = frozenset(
    {"type", "security", "encryption", "pbk", "sid", "sni", "fp", "flow", "headerType"}
)


@dataclass(frozen=True, slots=True)
class ShareLink:
    uuid: str
    host: str  # a DNS name (ASCII) or an IP address, IPv6 without brackets
    port: int
    public_key: str  # Reality X25519 public key, base64url without padding
    short_id: str  # hex, 0-16 digits of even length
    server_name: str  # the SNI the client sends (one of the server's Reality server names)
    fingerprint: str  # uTLS fingerprint: chrome, firefox, safari, ...
    flow: str  # one of FLOWS, or "" (none)
    name: str  # what the app shows; any Unicode text


def share_link(
    *,
    uuid: str,
    host: str,
    port: int,
    public_key: str,
    short_id: str,
    server_name: str,
    fingerprint: str,
    flow: str,
    name: str,
) -> str:
    """The ``vless://`` link for one client of a Reality inbound; ValueError for bad values."""
    link = _checked(
        ShareLink(
            uuid=uuid,
            host=_host(host),
            port=port,
            public_key=public_key,
            short_id=short_id,
            server_name=server_name,
            fingerprint=fingerprint,
            flow=flow,
            name=name,
        )
    )
    params = [("type", "tcp"), ("security", "reality"), ("pbk", link.public_key)]
    if link.short_id:
        params.append(("sid", link.short_id))
    params += [("sni", link.server_name), ("fp", link.fingerprint)]
    if link.flow:
        params.append(("flow", link.flow))
    params.append(("encryption", "none"))
    query = "&".join(f"{key}={_encode(value)}" for key, value in params)
    address = f"[{link.host}]" if ":" in link.host else link.host
    fragment = f"#{_encode(link.name)}" if link.name else ""
    return f"{SCHEME}{link.uuid}@{address}:{link.port}?{query}{fragment}"


def parse_share_link(link: str) -> ShareLink:
    """The fields of a VLESS TCP + Reality share link; ValueError saying what is wrong."""
    if not isinstance(link, str):
        raise ValueError("a share link is a string")
    text = link.strip()
    if not text.startswith(SCHEME):
        raise ValueError(f"a VLESS share link starts with {SCHEME!r}")
    rest = text[len(SCHEME) :]
    rest, _, fragment = rest.partition("#")
    authority, _, query = rest.partition("?")
    if "/" in authority:
        authority, _, path = authority.partition("/")
        if path:
            raise ValueError("a VLESS share link has no path")
    user, at, address = authority.rpartition("@")
    if not at or not user:
        raise ValueError("the share link has no user id before '@'")
    host, port = _split_address(address)
    params = _query(query)

    network = params.pop("type", "tcp")
    if network not in ("tcp", "raw"):
        raise ValueError(f"transport {network!r} is not supported (only tcp)")
    security = params.pop("security", "")
    if security != "reality":
        raise ValueError(f"security {security or '(none)'!r} is not supported (only reality)")
    encryption = params.pop("encryption", "none")
    if encryption != "none":
        raise ValueError(f"VLESS encryption {encryption!r} is not supported (only none)")
    header = params.pop("headerType", "none")
    if header != "none":
        raise ValueError(f"TCP header {header!r} is not supported (only none)")
    for key in ("pbk", "sni", "fp"):
        if not params.get(key):
            raise ValueError(f"the share link lacks {key!r}, which Reality needs")
    result = ShareLink(
        uuid=unquote(user, errors="strict"),
        host=host,
        port=port,
        public_key=params.pop("pbk"),
        short_id=params.pop("sid", ""),
        server_name=params.pop("sni"),
        fingerprint=params.pop("fp"),
        flow=params.pop("flow", ""),
        name=_decode(fragment, "name"),
    )
    return _checked(result)


def _checked(link: ShareLink) -> ShareLink:
    if not _UUID.fullmatch(link.uuid):
        raise ValueError(f"user id {link.uuid!r} is not a UUID")
    if isinstance(link.port, bool) or not isinstance(link.port, int):
        raise ValueError("the port is an integer")
    if not 1 <= link.port <= 65535:
        raise ValueError(f"port {link.port} is outside 1..65535")
    _check_public_key(link.public_key)
    if not _HEX_ID.fullmatch(link.short_id):
        raise ValueError(f"short id {link.short_id!r} is not 0-16 hex digits of even length")
    if not _is_dns_name(link.server_name):
        raise ValueError(f"server name {link.server_name!r} is not a DNS name")
    if not _TOKEN.fullmatch(link.fingerprint):
        raise ValueError(f"fingerprint {link.fingerprint!r} is not a uTLS fingerprint name")
    if link.flow and link.flow not in FLOWS:
        raise ValueError(f"flow {link.flow!r} is not one of {', '.join(FLOWS)} or empty")
    return link


def _check_public_key(value: str) -> None:
    # The same rule as the node's key helpers: 32 bytes, canonical base64url, no padding.
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != value:
        raise ValueError("the Reality public key is 32 bytes in base64url without padding")


def _host(value: str) -> str:
    """A host as the link model keeps it: IP addresses normalised, IDN names as punycode."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise ValueError("the host is empty")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"host {value!r} is not a valid internationalised name") from None
    if not _is_dns_name(text):
        raise ValueError(f"host {value!r} is neither an IP address nor a DNS name")
    return text


def _is_dns_name(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def _split_address(address: str) -> tuple[str, int]:
    if address.startswith("["):
        inside, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError("an IPv6 host is written as [ADDRESS]:PORT")
        host_text, port_text = inside, rest[1:]
        try:
            host = str(ipaddress.IPv6Address(host_text))
        except ValueError:
            raise ValueError(f"{host_text!r} in brackets is not an IPv6 address") from None
    else:
        host_text, colon, port_text = address.rpartition(":")
        if not colon:
            raise ValueError("the share link has no port after the host")
        if ":" in host_text:
            raise ValueError("an IPv6 host must be written in brackets")
        host = _host(_decode(host_text, "host"))
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"port {port_text!r} is not a number")
    return host, int(port_text)


def _query(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in query.split("&") if query else ():
        key, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"parameter {key!r} has no value")
        key = _decode(key, "parameter name")
        if key in params:
            raise ValueError(f"parameter {key!r} appears twice")
        if key not in _KNOWN and key not in _IGNORED:
            raise ValueError(f"parameter {key!r} is not supported")
        params[key] = _decode(value, key)
    for key in _IGNORED:
        params.pop(key, None)
    return params


def _encode(value: str) -> str:
    return quote(value, safe="")


def _decode(value: str, what: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the {what} is not valid percent-encoded UTF-8") from None
