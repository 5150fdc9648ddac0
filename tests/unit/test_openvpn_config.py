"""The ``[backends.openvpn]`` table: defaults, and a clear ConfigError for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.config import OpenVpnConfig, load_config
from node_agent.errors import ConfigError


def load(tmp_path: Path, table: str) -> OpenVpnConfig:
    path = tmp_path / "agent.toml"
    path.write_text(f'state_dir = "/var/lib/agent"\n[backends.openvpn]\n{table}\n')
    spec = load_config(path, {}, {}).backends["openvpn"]
    assert isinstance(spec, OpenVpnConfig)
    return spec


def test_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, "")
    assert (spec.port, spec.transport, spec.interface, spec.subnet) == (
        1194,
        "udp",
        "ovpn0",
        "10.9.0.0/24",
    )
    assert spec.push_redirect_gateway and spec.push_dns == []
    assert (spec.client_valid_days, spec.keepalive) == (3650, (10, 60))
    assert (spec.openvpn, spec.command_prefix, spec.management_socket) == ("openvpn", [], None)


def test_everything_set(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        'port = 443\ntransport = "tcp"\ninterface = "tun-ovpn"\nsubnet = "10.20.0.0/16"\n'
        'push_redirect_gateway = false\npush_dns = ["1.1.1.1", "2606:4700:4700::1111"]\n'
        'client_valid_days = 90\nkeepalive = [5, 30]\nopenvpn = "/usr/sbin/openvpn"\n'
        'command_prefix = ["ip", "netns", "exec", "vpn"]\n'
        'management_socket = "/run/ovpn.sock"\n',
    )
    assert (spec.port, spec.transport, spec.subnet, spec.keepalive) == (
        443,
        "tcp",
        "10.20.0.0/16",
        (5, 30),
    )
    assert spec.command_prefix == ["ip", "netns", "exec", "vpn"]
    assert spec.management_socket == Path("/run/ovpn.sock")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('transport = "quic"', "transport"),
        ("port = 0", "port"),
        ('interface = "much-too-long-name"', "an interface name is 1..15"),
        ('subnet = "10.9.0.1/24"', "host bits must be zero"),
        ('subnet = "fd00::/64"', "not an IPv4 network"),
        ('subnet = "10.9.0.0/30"', "prefix must be /8../29"),
        ('push_dns = ["dns.example"]', "'dns.example' is not an IP address"),
        ("client_valid_days = 4000", "client_valid_days"),
        ("keepalive = [10, 15]", "at least twice the interval"),
        ("keepalive = [10]", "keepalive"),
        ('openvpn = " "', "name the openvpn program"),
        ('command_prefix = ["ip", ""]', "must not be empty"),
        ("bogus = 1", "bogus"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, table)
