"""End to end with a real Reality server and client: our node's Reality parameters and our
exported ``vless://`` link, translated into sing-box (tests/e2e/singbox.py), in two network
namespaces.

srv: a TLS 1.3 "handshake target" for the server name (the site Reality impersonates), an HTTP
server with a known body on srv's loopback only, and the sing-box Reality server built from
``RealityPublicParams`` + the private key. cli: one sing-box client with a local proxy port per
share link (ours, ours with a wrong public key, ours with a wrong short id). The body is only
reachable through the tunnel, so a fetch that returns it went through Reality as our user.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.vpn.vless import parse_share_link, share_link
from node_agent.backends.base import RealityPublicParams
from node_agent.backends.xray.reality import generate_keys, generate_short_ids
from node_agent.model import VlessUser
from tests.conftest import need
from tests.e2e import singbox
from tests.e2e.controller_lab import REPO, clean_env, wait_until
from tests.e2e.netns import Host, Lab

SERVER_NAME = "www.example.com"
REALITY_PORT = 8443  # the namespaces are new per run, so fixed ports cannot collide
TARGET_PORT = 9443
HTTP_PORT = 9080
GOOD, WRONG_KEY, WRONG_SHORT_ID = 1080, 1081, 1082
REJECTED = "REALITY: processed invalid connection"


def require_reality_lab() -> None:
    need(os.geteuid() == 0, "network namespaces need root")
    missing = [p for p in ("ip", "curl") if shutil.which(p) is None]
    need(not missing, f"missing programs: {', '.join(missing)}")
    try:
        import singbox as _  # noqa: F401
    except ImportError:
        need(False, "sing-box-python is not installed (pip install sing-box-python)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_reality_lab()
    with Lab() as lab:
        yield lab


class Daemon:
    """A helper process inside a lab host that prints a line once it serves."""

    def __init__(self, host: Host, argv: list[str], log: Path, ready: str) -> None:
        self.log = log
        self._stderr = log.open("w")
        self.process = subprocess.Popen(
            host.argv(*argv),
            cwd=REPO,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._wait_for(ready, within=15)

    def _wait_for(self, ready: str, *, within: float) -> None:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], within)
        line = self.process.stdout.readline() if readable else ""
        if not line.startswith(ready):
            self.stop()
            raise AssertionError(
                f"{self.process.args!r} did not start (said {line!r}): {self.log.read_text()}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def self_signed(directory: Path, name: str) -> tuple[Path, Path, str]:
    """A certificate for ``name`` (the decoy site's), its key, and its DER's SHA-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "decoy.crt", directory / "decoy.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return cert_path, key_path, fingerprint


def fetch(host: Host, url: str, *, proxy_port: int | None) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "--max-time", "5"]
    if proxy_port is not None:
        argv += ["-x", f"socks5h://127.0.0.1:{proxy_port}"]
    return host.exec(*argv, url, check=False, timeout=15)


PROBE = """
import hashlib, socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as raw:
    with context.wrap_socket(raw, server_hostname=sys.argv[3]) as tls:
        print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
"""


def test_reality_share_link_through_sing_box(lab: Lab, tmp_path: Path) -> None:
    srv, cli = lab.server, lab.client

    # What the node generates and reports, and what it keeps to itself.
    keys = generate_keys()
    short_ids = generate_short_ids(2)
    params = RealityPublicParams(
        port=REALITY_PORT,
        public_key=keys.public_key,
        short_ids=short_ids,
        server_names=(SERVER_NAME,),
        flow="xtls-rprx-vision",
        fingerprint="chrome",
    )
    user = VlessUser(uuid=str(uuid.uuid4()), flow=params.flow, email="client-1")

    cert, key, decoy_fingerprint = self_signed(tmp_path, SERVER_NAME)
    body = f"through reality {secrets.token_hex(8)}\n"
    www = tmp_path / "www"
    www.mkdir()
    (www / "body.txt").write_text(body)

    server_log = tmp_path / "server.log"
    (tmp_path / "server.json").write_text(
        json.dumps(
            singbox.server_config(
                params,
                private_key=keys.private_key,
                users=[user],
                handshake=("127.0.0.1", TARGET_PORT),
                listen=srv.address,
                log_output=server_log,
            )
        )
    )

    # What the controller exports, parsed back the way a client app reads it.
    def link(public_key: str = params.public_key, short_id: str = params.short_ids[0]) -> str:
        return share_link(
            uuid=user.uuid,
            host=srv.address,
            port=params.port,
            public_key=public_key,
            short_id=short_id,
            server_name=params.server_names[0],
            fingerprint=params.fingerprint,
            flow=user.flow,
            name="Нидерланды · Reality",
        )

    exported = link()
    assert parse_share_link(exported).name == "Нидерланды · Reality"
    other_short_id = next(s for s in generate_short_ids(3) if s not in short_ids)
    links = {
        GOOD: parse_share_link(exported),
        WRONG_KEY: parse_share_link(link(public_key=generate_keys().public_key)),
        WRONG_SHORT_ID: parse_share_link(link(short_id=other_short_id)),
    }
    client_log = tmp_path / "client.log"
    (tmp_path / "client.json").write_text(
        json.dumps(singbox.client_config(links, log_output=client_log))
    )

    python = sys.executable
    daemons: list[Daemon] = []
    try:
        daemons.append(
            Daemon(
                srv,
                [python, "-m", "tests.e2e.singbox", "decoy", str(cert), str(key),
                 "127.0.0.1", str(TARGET_PORT)],
                tmp_path / "decoy.err",
                singbox.READY,
            )
        )  # fmt: skip
        daemons.append(
            Daemon(
                srv,
                [python, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                 "--directory", str(www), str(HTTP_PORT)],
                tmp_path / "http.err",
                "Serving HTTP",
            )
        )  # fmt: skip
        daemons.append(
            Daemon(
                srv,
                [python, "-m", "tests.e2e.singbox", "run", str(tmp_path / "server.json")],
                tmp_path / "server.err",
                singbox.READY,
            )
        )
        daemons.append(
            Daemon(
                cli,
                [python, "-m", "tests.e2e.singbox", "run", str(tmp_path / "client.json")],
                tmp_path / "client.err",
                singbox.READY,
            )
        )

        # The body lives on srv's loopback: cli cannot reach it except through the tunnel.
        direct = fetch(cli, f"http://127.0.0.1:{HTTP_PORT}/body.txt", proxy_port=None)
        assert direct.returncode != 0, direct.stdout

        url = f"http://127.0.0.1:{HTTP_PORT}/body.txt"
        results: list[subprocess.CompletedProcess[str]] = []

        def fetched() -> bool:
            results.append(fetch(cli, url, proxy_port=GOOD))
            return results[-1].returncode == 0

        wait_until(fetched, within=20, what="a fetch through our share link")
        assert results[-1].stdout == body
        wait_until(
            lambda: (
                f"[{user.email}] inbound connection to 127.0.0.1:{HTTP_PORT}"
                in server_log.read_text()
            ),
            within=5,
            what="the Reality server to log our user's connection",
        )

        # A wrong public key or short id: the server does not authenticate the client and
        # hands the connection to the decoy, whose certificate the client then refuses.
        for port, what in ((WRONG_KEY, "public key"), (WRONG_SHORT_ID, "short id")):
            rejected_before = server_log.read_text().count(REJECTED)
            refused = fetch(cli, url, proxy_port=port)
            assert refused.returncode != 0, f"wrong {what} fetched {refused.stdout!r}"
            assert body not in refused.stdout
            wait_until(
                lambda before=rejected_before: server_log.read_text().count(REJECTED) > before,
                within=5,
                what=f"the Reality server to reject the wrong {what}",
            )

        # An active probe of the Reality port sees the decoy's certificate, not a proxy.
        probe = cli.exec(
            python, "-c", PROBE, srv.address, str(REALITY_PORT), SERVER_NAME, timeout=15
        )
        assert probe.stdout.strip() == decoy_fingerprint

        # And the good link still works after the refusals.
        assert fetch(cli, url, proxy_port=GOOD).stdout == body
    except AssertionError:
        for log in (server_log, client_log):
            if log.exists():
                print(f"--- {log.name}\n{log.read_text()[-4000:]}")
        raise
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
