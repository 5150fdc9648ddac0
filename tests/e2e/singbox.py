"""sing-box as a stand-in Reality server and client for the end-to-end tests.

Xray-core is not installable here and v2ray ignores Reality (shared LAB notes), so the tests
translate what our node reports (``RealityPublicParams`` + the private key it keeps) into a
sing-box *server* config, and what our controller exports (a ``vless://`` link, parsed back)
into a sing-box *client* config. sing-box JSON differs from Xray JSON; the mapping (sing-box
1.14 docs, configuration/shared/tls and inbound|outbound/vless):

==========================  =================================================================
ours                        sing-box
==========================  =================================================================
params.port                 inbound ``listen_port``
VlessUser uuid, flow        inbound ``users[] {name, uuid, flow}``
params.server_names[0]      inbound ``tls.server_name`` (sing-box serves one name per inbound)
private key                 inbound ``tls.reality.private_key``
params.short_ids            inbound ``tls.reality.short_id[]``
Xray ``target`` (dest)      inbound ``tls.reality.handshake {server, server_port}``
link host, port             outbound ``server``, ``server_port``
link uuid, flow             outbound ``uuid``, ``flow``
link sni                    outbound ``tls.server_name``
link fp                     outbound ``tls.utls {enabled, fingerprint}``
link pbk, sid               outbound ``tls.reality {enabled, public_key, short_id}``
==========================  =================================================================

Run as ``python -m tests.e2e.singbox run CONFIG`` (one sing-box instance in this process:
sing-box-python runs in-process, so each network namespace needs its own process) or
``python -m tests.e2e.singbox decoy CERT KEY HOST PORT`` (the TLS 1.3 "handshake target" a
Reality server borrows its handshake from).
"""

from __future__ import annotations

import http.server
import signal
import ssl
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.vpn.vless import ShareLink
from node_agent.backends.base import RealityPublicParams
from node_agent.backends.xray import reality
from node_agent.model import VlessUser

# uTLS fingerprints sing-box knows (configuration/shared/tls, ``utls.fingerprint``).
FINGERPRINTS = frozenset(
    {"chrome", "firefox", "edge", "safari", "360", "qq", "ios", "android", "random", "randomized"}
)
READY = "sing-box started"


def _log(output: Path | None) -> dict[str, Any]:
    log: dict[str, Any] = {"level": "debug", "timestamp": True}
    if output is not None:
        log["output"] = str(output)
    return log


def server_config(
    params: RealityPublicParams,
    *,
    private_key: str,
    users: Sequence[VlessUser],
    handshake: tuple[str, int],
    listen: str = "0.0.0.0",
    log_output: Path | None = None,
) -> dict[str, Any]:
    """A sing-box config serving our node's Reality inbound to ``users``."""
    if reality.public_key(private_key) != params.public_key:
        raise ValueError("the private key does not belong to the reported public key")
    if not params.server_names or not params.short_ids:
        raise ValueError("Reality needs at least one server name and one short id")
    server, server_port = handshake
    return {
        "log": _log(log_output),
        "inbounds": [
            {
                "type": "vless",
                "tag": "reality-in",
                "listen": listen,
                "listen_port": params.port,
                "users": [
                    {"name": user.email or user.uuid, "uuid": user.uuid, "flow": user.flow}
                    for user in users
                ],
                "tls": {
                    "enabled": True,
                    "server_name": params.server_names[0],
                    "reality": {
                        "enabled": True,
                        "handshake": {"server": server, "server_port": server_port},
                        "private_key": private_key,
                        "short_id": list(params.short_ids),
                    },
                },
            }
        ],
        "outbounds": [{"type": "direct", "tag": "direct"}],
    }


def client_outbound(link: ShareLink, tag: str) -> dict[str, Any]:
    """The sing-box VLESS outbound a client app would build from ``link``."""
    if link.fingerprint not in FINGERPRINTS:
        raise ValueError(f"sing-box has no uTLS fingerprint {link.fingerprint!r}")
    outbound: dict[str, Any] = {
        "type": "vless",
        "tag": tag,
        "server": link.host,
        "server_port": link.port,
        "uuid": link.uuid,
        "network": "tcp",
        "tls": {
            "enabled": True,
            "server_name": link.server_name,
            "utls": {"enabled": True, "fingerprint": link.fingerprint},
            "reality": {
                "enabled": True,
                "public_key": link.public_key,
                "short_id": link.short_id,
            },
        },
    }
    if link.flow:
        outbound["flow"] = link.flow
    return outbound


def client_config(
    links: Mapping[int, ShareLink],
    *,
    listen: str = "127.0.0.1",
    log_output: Path | None = None,
) -> dict[str, Any]:
    """One client instance with a local socks/http ("mixed") port per link: traffic entering
    port P leaves through the outbound built from ``links[P]`` and nothing else."""
    inbounds = [
        {"type": "mixed", "tag": f"in-{port}", "listen": listen, "listen_port": port}
        for port in links
    ]
    outbounds = [client_outbound(link, f"out-{port}") for port, link in links.items()]
    rules = [{"inbound": [f"in-{port}"], "outbound": f"out-{port}"} for port in links]
    return {
        "log": _log(log_output),
        "inbounds": inbounds,
        "outbounds": outbounds,
        "route": {"rules": rules},
    }


def _run(config_path: str) -> int:
    import singbox

    box = singbox.SingBox()
    try:
        box.startFromJSON(Path(config_path).read_text())
    except singbox.SingBoxError as exc:
        print(f"sing-box refused to start: {exc}", file=sys.stderr, flush=True)
        return 1
    print(READY, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    box.stop()
    return 0


class _Decoy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"decoy\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


def _decoy(cert: str, key: str, host: str, port: int) -> int:
    """A TLS 1.3 HTTPS server: the site a Reality server impersonates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer((host, port), _Decoy)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(READY, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.shutdown()
    return 0


def main(argv: Sequence[str]) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if len(argv) == 2 and argv[0] == "run":
        return _run(argv[1])
    if len(argv) == 5 and argv[0] == "decoy":
        return _decoy(argv[1], argv[2], argv[3], int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
