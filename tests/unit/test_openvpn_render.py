"""What the OpenVPN backend writes: the server config, the client profile, and the session-end
hook (run for real by /bin/sh, as openvpn runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from node_agent.backends.openvpn.render import (
    ServerPaths,
    render_hook,
    render_profile,
    render_server,
    server_address,
)
from node_agent.config import OpenVpnConfig
from tests.conftest import need


def paths(base: Path) -> ServerPaths:
    return ServerPaths(
        ca=base / "ca.crt",
        cert=base / "server.crt",
        key=base / "server.key",
        tls_crypt=base / "tls-crypt.key",
        crl=base / "crl.pem",
        management=base / "management.sock",
        log=base / "openvpn.log",
        pid=base / "openvpn.pid",
        hook=base / "client-disconnect.sh",
    )


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_server_config_has_every_directive_the_backend_relies_on() -> None:
    spec = OpenVpnConfig(type="openvpn", port=1195, interface="tun-ovpn", subnet="10.9.8.0/24")
    text = render_server("main", spec, paths(Path("/var/lib/agent/openvpn-main")))
    lines = directives(text)

    for expected in [
        "port 1195",
        "proto udp",
        "dev tun-ovpn",
        "dev-type tun",
        "topology subnet",
        "server 10.9.8.0 255.255.255.0",
        "dh none",
        "tls-groups X25519:prime256v1",
        "tls-crypt /var/lib/agent/openvpn-main/tls-crypt.key",
        "crl-verify /var/lib/agent/openvpn-main/crl.pem",
        "remote-cert-tls client",
        "keepalive 10 60",
        "management /var/lib/agent/openvpn-main/management.sock unix",
        "client-disconnect /var/lib/agent/openvpn-main/client-disconnect.sh",
        "writepid /var/lib/agent/openvpn-main/openvpn.pid",
        "log-append /var/lib/agent/openvpn-main/openvpn.log",
        "daemon openvpn-main",
        "explicit-exit-notify 1",
        'push "redirect-gateway def1 bypass-dhcp"',
    ]:
        assert expected in lines, expected
    assert not [line for line in lines if line.startswith("status ")]
    assert server_address(spec.subnet) == "10.9.8.1"


def test_tcp_no_redirect_and_dns_pushes() -> None:
    spec = OpenVpnConfig(
        type="openvpn",
        transport="tcp",
        push_redirect_gateway=False,
        push_dns=["1.1.1.1", "2606:4700:4700::1111"],
        keepalive=(5, 30),
    )
    lines = directives(render_server("main", spec, paths(Path("/s"))))

    assert "proto tcp-server" in lines
    assert "explicit-exit-notify 1" not in lines  # UDP only
    assert not [line for line in lines if "redirect-gateway" in line]
    assert 'push "dhcp-option DNS 1.1.1.1"' in lines
    assert 'push "dhcp-option DNS 2606:4700:4700::1111"' in lines
    assert "keepalive 5 30" in lines


def test_paths_with_spaces_are_quoted() -> None:
    spec = OpenVpnConfig(type="openvpn")
    lines = directives(render_server("main", spec, paths(Path("/srv/my agent"))))
    assert 'crl-verify "/srv/my agent/crl.pem"' in lines
    assert 'management "/srv/my agent/management.sock" unix' in lines
    # A command line is split once more when openvpn runs it: quoted twice.
    assert 'client-disconnect "\\"/srv/my agent/client-disconnect.sh\\""' in lines


def test_the_profile_is_inline_and_has_no_remote() -> None:
    profile = render_profile(
        transport="udp",
        ca_pem="-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
        cert_pem="-----BEGIN CERTIFICATE-----\nME\n-----END CERTIFICATE-----\n",
        key_pem="-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n",
        tls_crypt_key=(
            "#\n-----BEGIN OpenVPN Static key V1-----\nab\n-----END OpenVPN Static key V1-----\n"
        ),
    )
    lines = profile.splitlines()
    for expected in ["client", "dev tun", "proto udp", "nobind", "remote-cert-tls server"]:
        assert expected in lines
    assert not [line for line in lines if line.startswith("remote ")]
    for tag in ("ca", "cert", "key", "tls-crypt"):
        assert lines.count(f"<{tag}>") == 1 and lines.count(f"</{tag}>") == 1
    assert "<key>\n-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n</key>" in profile


def test_the_hook_leaves_one_complete_file_per_session(tmp_path: Path) -> None:
    need(shutil.which("sh") is not None, "no /bin/sh")
    spool = tmp_path / "my spool's dir"  # quoting must hold
    spool.mkdir()
    hook = tmp_path / "hook.sh"
    hook.write_text(render_hook(spool))
    hook.chmod(0o700)
    # openvpn runs the hook with its own variables and no PATH.
    env = {
        "common_name": "alice",
        "time_unix": "1795692752",
        "bytes_received": "7945",
        "bytes_sent": "7957",
    }

    for _ in range(2):
        subprocess.run([str(hook)], env=env, check=True, timeout=10)

    files = sorted(os.listdir(spool))
    assert len(files) == 2 and all(f.startswith("1795692752.") for f in files)
    assert all(f.endswith(".session") for f in files)
    for name in files:
        assert (spool / name).read_text() == "alice\t1795692752\t7945\t7957\n"
