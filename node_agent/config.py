"""The agent's configuration: a TOML file, overridden by environment, overridden by flags.

    # /etc/vpn-node-agent/agent.toml
    state_dir = "/var/lib/vpn-node-agent"
    listen = "0.0.0.0:50051"          # or "unix:/run/vpn-node-agent.sock"

    [backends.wireguard]              # the table name is the backend name desired state uses
    type = "wireguard"                # defaults to the table name
    driver = "uapi"                   # "uapi" (wireguard-go) or "netlink" (kernel module)
    interface = "wg0"
    listen_port = 51820
    addresses = ["10.8.0.1/24"]

Environment: VPN_NODE_AGENT_CONFIG (the file), VPN_NODE_AGENT_STATE_DIR, VPN_NODE_AGENT_LISTEN.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from node_agent.errors import ConfigError

ENV_PREFIX = "VPN_NODE_AGENT_"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_addresses(value: list[str]) -> list[str]:
    for text in value:
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an address with a prefix, e.g. 10.8.0.1/24"
            ) from None
        if "/" not in text or iface.ip == iface.network.network_address:
            raise ValueError(
                f"{text!r}: give the server's own address and prefix, e.g. 10.8.0.1/24"
            )
    return value


class WireGuardConfig(_Strict):
    type: Literal["wireguard"]
    driver: Literal["uapi", "netlink"] = "uapi"
    interface: str = "wg0"
    listen_port: int = Field(51820, ge=1, le=65535)
    addresses: list[str] = Field(default_factory=lambda: ["10.8.0.1/24"], min_length=1)
    mtu: int | None = Field(None, ge=1280, le=9000)
    wireguard_go: str = "wireguard-go"
    socket_dir: Path = Path("/var/run/wireguard")

    @field_validator("interface")
    @classmethod
    def _ifname(cls, value: str) -> str:
        if not _IFNAME.fullmatch(value):
            raise ValueError("an interface name is 1..15 letters, digits, '_', '.' or '-'")
        return value

    _addresses = field_validator("addresses")(_check_addresses)


class FakeConfig(_Strict):
    """No VPN software: clients are kept in memory (for trying the agent, and for tests).
    With ``addresses`` it reports itself as a WireGuard server of that subnet."""

    type: Literal["fake"]
    addresses: list[str] = []
    listen_port: int = Field(51820, ge=1, le=65535)

    _addresses = field_validator("addresses")(_check_addresses)


class OpenVpnConfig(_Strict):
    """An OpenVPN server the agent runs, with its own PKI (the CA key never leaves the node).

    [backends.openvpn]
    type = "openvpn"
    port = 1194
    transport = "udp"                 # or "tcp"
    interface = "ovpn0"
    subnet = "10.9.0.0/24"            # the server takes the first address, clients the rest
    push_redirect_gateway = true      # send all of a client's traffic through the tunnel
    push_dns = ["1.1.1.1"]
    client_valid_days = 3650          # the longest a client certificate is issued for
    keepalive = [10, 60]              # ping every 10 s, drop a client silent for 60 s
    openvpn = "openvpn"               # the program
    command_prefix = []               # run it through e.g. ["ip", "netns", "exec", "vpn"]
    # Default: in the state dir. Elsewhere, in a directory only root can enter: whoever
    # connects to it controls the server.
    # management_socket = "/run/vpn-node-agent/openvpn.sock"
    """

    type: Literal["openvpn"]
    port: int = Field(1194, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    interface: str = "ovpn0"
    subnet: str = "10.9.0.0/24"
    push_redirect_gateway: bool = True
    push_dns: list[str] = []
    client_valid_days: int = Field(3650, ge=1, le=3650)
    keepalive: tuple[int, int] = (10, 60)
    openvpn: str = "openvpn"
    command_prefix: list[str] = []
    management_socket: Path | None = None
    start_timeout: float = Field(15.0, ge=1, le=300)

    @field_validator("interface")
    @classmethod
    def _ovpn_ifname(cls, value: str) -> str:
        if not _IFNAME.fullmatch(value):
            raise ValueError("an interface name is 1..15 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("subnet")
    @classmethod
    def _ovpn_subnet(cls, value: str) -> str:
        try:
            network = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IPv4 network with its prefix, e.g. 10.9.0.0/24 "
                "(host bits must be zero)"
            ) from None
        if not 8 <= network.prefixlen <= 29:
            raise ValueError(f"{value!r}: the prefix must be /8../29 to leave room for clients")
        return str(network)

    @field_validator("push_dns")
    @classmethod
    def _ovpn_dns(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address") from None
        return value

    @field_validator("keepalive")
    @classmethod
    def _ovpn_keepalive(cls, value: tuple[int, int]) -> tuple[int, int]:
        interval, timeout = value
        if not 1 <= interval <= 3600 or not 2 * interval <= timeout <= 86400:
            raise ValueError(
                "keepalive is [interval, timeout] in seconds: interval 1..3600 and a timeout "
                "at least twice the interval"
            )
        return value

    @field_validator("openvpn")
    @classmethod
    def _ovpn_program(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name the openvpn program (a name on PATH or a path)")
        return value

    @field_validator("command_prefix")
    @classmethod
    def _ovpn_prefix(cls, value: list[str]) -> list[str]:
        if any(not part for part in value):
            raise ValueError("command_prefix entries must not be empty")
        return value


class XrayConfig(_Strict):
    """A VLESS inbound (Reality) of an Xray core, driven over Xray's gRPC API.

        [backends.vless]
        type = "xray"
        port = 443
        server_names = ["www.example.com"]   # what clients put in SNI (Reality: required)
        dest = "www.example.com:443"         # the real site unauthenticated probes reach
        # api = "127.0.0.1:10085"            # the core's API (dokodemo-door inbound "api")
        # api_prefix = "xray."               # "v2ray.core." for v2ray 4.x
        # command = ["xray", "run", "-c", "{config}"]  # unset: systemd runs the core

    The agent writes the core's whole config to ``config_path`` (default
    ``STATE_DIR/xray-NAME.json``, mode 0600: it holds the Reality private key, so the core
    runs as the agent's user); point the core (or its unit) at that file. ``flow``
    defaults to ``xtls-rprx-vision`` with Reality and to "" (none) with ``security = "none"``
    (plain VLESS over TCP, e.g. for v2ray, which has no Reality).
    """

    type: Literal["xray"]
    api: str = "127.0.0.1:10085"
    api_prefix: Literal["xray.", "v2ray.core."] = "xray."
    api_timeout: float = Field(5.0, gt=0, le=120)
    inbound_tag: str = "vless-reality"
    listen: str = "0.0.0.0"  # noqa: S104 - the VLESS inbound serves the internet
    port: int = Field(443, ge=1, le=65535)
    security: Literal["reality", "none"] = "reality"
    server_names: list[str] = Field(default_factory=list, validate_default=True)
    dest: str | None = Field(None, validate_default=True)
    short_id_count: int = Field(2, ge=1, le=8)
    fingerprint: Literal[
        "chrome", "firefox", "safari", "ios", "android", "edge", "360", "qq", "random", "randomized"
    ] = "chrome"
    flow: Literal["", "xtls-rprx-vision"] | None = Field(None, validate_default=True)
    config_path: Path | None = None
    command: list[str] | None = None
    start_timeout: float = Field(15.0, gt=0, le=300)
    blocked_networks: list[str] = Field(
        default_factory=lambda: [
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "::/128",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ]
    )

    @field_validator("api")
    @classmethod
    def _api(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            bare = ""
        if not sep or not bare or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("use IP:PORT, e.g. 127.0.0.1:10085 or [::1]:10085")
        return value

    @field_validator("listen")
    @classmethod
    def _listen_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("an IP address, e.g. 0.0.0.0 or ::") from None
        return value

    @field_validator("inbound_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value) or value == "api":
            raise ValueError("1..64 letters, digits, '_', '.' or '-', and not 'api'")
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int, info: Any) -> int:
        api = info.data.get("api")
        if api is not None and api.rpartition(":")[2] == str(value):
            raise ValueError(f"the VLESS inbound and the API ({api}) need different ports")
        return value

    @field_validator("server_names")
    @classmethod
    def _server_names(cls, value: list[str], info: Any) -> list[str]:
        label = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
        for name in value:
            if len(name) > 253 or not re.fullmatch(rf"({label}\.)*{label}", name):
                raise ValueError(f"{name!r} is not a lowercase host name")
        if len(set(value)) != len(value):
            raise ValueError("server names must be distinct")
        if not value and info.data.get("security") == "reality":
            raise ValueError('security = "reality" needs at least one server name')
        return value

    @field_validator("dest")
    @classmethod
    def _dest(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            if info.data.get("security") == "reality":
                raise ValueError('security = "reality" needs dest = "HOST:PORT"')
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("use HOST:PORT of the site Reality imitates, e.g. example.com:443")
        return value

    @field_validator("flow")
    @classmethod
    def _flow(cls, value: str | None, info: Any) -> str:
        security = info.data.get("security", "reality")
        if value is None:
            return "xtls-rprx-vision" if security == "reality" else ""
        if value and security != "reality":
            raise ValueError(f'flow {value!r} needs security = "reality"; use flow = ""')
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(a and "\0" not in a for a in value)):
            raise ValueError('a non-empty argv list, e.g. ["xray", "run", "-c", "{config}"]')
        return value

    @field_validator("blocked_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ipaddress.ip_network(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a network, e.g. 10.0.0.0/8") from None
        return value


class ThreeXuiConfig(_Strict):
    """An inbound of a 3X-UI panel on this host, driven over the panel's HTTP API.

    ``url`` is the panel's address with its web base path (``https://127.0.0.1:2053/secret/``).
    Credentials: ``username`` with ``password`` or ``password_file``, or an API token in
    ``api_token_file`` (3X-UI 3.1+). ``two_factor_secret_file`` holds the base32 TOTP secret
    when the panel has 2FA on. Files are read at every login, so rotating them needs no
    restart. The agent manages only those clients of ``inbound_id`` whose email starts with
    ``email_prefix``; give each backend on one panel its own prefix.
    """

    type: Literal["threexui"]
    url: str
    username: str = ""
    password: str | None = Field(None, repr=False)
    password_file: Path | None = None
    api_token_file: Path | None = None
    two_factor_secret_file: Path | None = None
    inbound_id: int = Field(ge=1)
    api: Literal["auto", "inbounds", "clients"] = "auto"
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout: float = Field(10.0, gt=0, le=300)
    email_prefix: str = Field("vpnbot-", min_length=1, max_length=32)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or rest.startswith("/"):
            raise ValueError("use http(s)://HOST[:PORT][/BASE_PATH/], the panel's own address")
        if any(ch in rest for ch in "?#@") or any(ch.isspace() for ch in rest):
            raise ValueError("the panel url takes no query, fragment, user info or spaces")
        return value if value.endswith("/") else value + "/"

    @field_validator("email_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # What 3X-UI refuses in an email (and what would break the /clients/del/EMAIL path).
        if any(ch in "/\\" or ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("the email prefix takes no spaces, '/', '\\' or control characters")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        has_password = self.password is not None or self.password_file is not None
        if self.api_token_file is not None:
            if has_password or self.username:
                raise ValueError("give api_token_file, or username and password; not both")
        elif not self.username or not has_password:
            raise ValueError("give username with password or password_file, or api_token_file")
        if not self.verify_tls and self.ca_file is not None:
            raise ValueError("ca_file has no effect with verify_tls = false")


BackendConfig = Annotated[
    WireGuardConfig | OpenVpnConfig | XrayConfig | ThreeXuiConfig | FakeConfig,
    Field(discriminator="type"),
]


class AgentConfig(_Strict):
    state_dir: Path
    listen: str = "0.0.0.0:50051"
    usage_interval: float = Field(30.0, ge=1, le=3600)
    reconcile_interval: float = Field(60.0, ge=5, le=86400)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "console", "json"] = "auto"
    backends: dict[str, BackendConfig] = Field(default_factory=dict)

    @field_validator("backends", mode="before")
    @classmethod
    def _default_types(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for name, table in value.items():
                if not isinstance(name, str) or not _NAME.fullmatch(name):
                    raise ValueError(
                        f"backend name {name!r}: lowercase letter first, then letters, digits, "
                        "'_' or '-', at most 32"
                    )
                if isinstance(table, dict):
                    table.setdefault("type", name)
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value.startswith("unix:"):
            if len(value) <= len("unix:"):
                raise ValueError("unix: needs a socket path")
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("use HOST:PORT (e.g. 0.0.0.0:50051, [::]:50051) or unix:PATH")
        return value


def load_config(
    path: Path | None, overrides: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> AgentConfig:
    """File < environment < ``overrides`` (flags; None values ignored)."""
    env = os.environ if env is None else env
    path = path or (Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    for key in ("state_dir", "listen"):
        if env.get(f"{ENV_PREFIX}{key.upper()}"):
            data[key] = env[f"{ENV_PREFIX}{key.upper()}"]
    data.update({k: v for k, v in overrides.items() if v is not None})
    if "state_dir" not in data:
        raise ConfigError(
            f"no state directory: pass --state-dir, set {ENV_PREFIX}STATE_DIR or state_dir "
            "in the config file"
        )
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
