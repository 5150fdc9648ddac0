"""Text the OpenVPN backend writes: the server config, the session-end hook and the inline
client profile. Pure functions of their inputs, so what runs can be compared with what
would be rendered now.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path

from node_agent.config import OpenVpnConfig

# OpenVPN 2.6's default list, spelled out so a client profile and the server agree on it.
DATA_CIPHERS = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305"


@dataclass(frozen=True, slots=True)
class ServerPaths:
    """Where the server's files live (all inside the backend's state directory)."""

    ca: Path
    cert: Path
    key: Path
    tls_crypt: Path
    crl: Path
    management: Path
    log: Path
    pid: Path
    hook: Path


def server_address(subnet: str) -> str:
    """The address ``server`` gives the server itself: the first host of the subnet."""
    return str(next(ipaddress.IPv4Network(subnet).hosts()))


def _quote(path: Path | str) -> str:
    # OpenVPN's config parser takes double-quoted strings with backslash escapes.
    text = str(path)
    if any(c in text for c in " \t\"\\#;'") or not text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render_server(name: str, spec: OpenVpnConfig, paths: ServerPaths) -> str:
    network = ipaddress.IPv4Network(spec.subnet)
    interval, timeout = spec.keepalive
    lines = [
        f"# Written by vpn-node-agent for backend {name!r}; rewritten on every start.",
        f"port {spec.port}",
        f"proto {'udp' if spec.transport == 'udp' else 'tcp-server'}",
        f"dev {spec.interface}",
        "dev-type tun",
        "topology subnet",
        f"server {network.network_address} {network.netmask}",
        f"ca {_quote(paths.ca)}",
        f"cert {_quote(paths.cert)}",
        f"key {_quote(paths.key)}",
        "dh none",
        "tls-groups X25519:prime256v1",
        "tls-version-min 1.2",
        f"tls-crypt {_quote(paths.tls_crypt)}",
        # Re-read whenever the file changes: a disabled client is refused at its next handshake.
        f"crl-verify {_quote(paths.crl)}",
        "remote-cert-tls client",
        f"data-ciphers {DATA_CIPHERS}",
        f"keepalive {interval} {timeout}",
        f"management {_quote(paths.management)} unix",
        # Each session's final byte counts, for usage accounting of traffic since the last poll.
        "script-security 2",
        # A command line, split again when it runs: quoted twice.
        f"client-disconnect {_quote(_quote(paths.hook))}",
        f"writepid {_quote(paths.pid)}",
        # Appended to (O_APPEND), so the agent can rotate it by copy and truncate.
        f"log-append {_quote(paths.log)}",
        "verb 3",
        # A session of its own (the agent starts us with setsid): the server outlives the agent.
        f"daemon openvpn-{name}",
    ]
    if spec.transport == "udp":
        # Tell clients at shutdown, so they reconnect at once after a restart.
        lines.append("explicit-exit-notify 1")
    if spec.push_redirect_gateway:
        lines.append('push "redirect-gateway def1 bypass-dhcp"')
    lines.extend(f'push "dhcp-option DNS {dns}"' for dns in spec.push_dns)
    return "\n".join(lines) + "\n"


def render_hook(spool: Path) -> str:
    """The client-disconnect hook: one small file per finished session in ``spool``,
    written under a temporary name and renamed, so the agent never reads half of one.
    Common names are ours (letters, digits, '_', '.', '-'), so a tab-separated line is safe.
    """
    spool_dir = shlex.quote(str(spool))
    return (
        "#!/bin/sh\n"
        "# Written by vpn-node-agent: final byte counts of a finished OpenVPN session.\n"
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"dir={spool_dir}\n"
        'tmp="$dir/.$$.tmp"\n'
        'printf \'%s\\t%s\\t%s\\t%s\\n\' "$common_name" "$time_unix" "$bytes_received" '
        '"$bytes_sent" > "$tmp" && mv -f "$tmp" "$dir/$time_unix.$$.session"\n'
        "exit 0\n"
    )


def render_profile(
    *,
    transport: str,
    ca_pem: str,
    cert_pem: str,
    key_pem: str,
    tls_crypt_key: str,
) -> str:
    """An inline client profile without ``remote`` lines: the controller, which knows the
    node's public address, puts ``remote HOST PORT PROTO`` in front."""

    def block(tag: str, body: str) -> str:
        return f"<{tag}>\n{body.strip()}\n</{tag}>"

    return "\n".join(
        [
            "client",
            "dev tun",
            f"proto {transport}",
            "nobind",
            "resolv-retry infinite",
            "persist-key",
            "persist-tun",
            "remote-cert-tls server",
            "tls-version-min 1.2",
            f"data-ciphers {DATA_CIPHERS}",
            "verb 3",
            block("ca", ca_pem),
            block("cert", cert_pem),
            block("key", key_pem),
            block("tls-crypt", tls_crypt_key),
            "",
        ]
    )
