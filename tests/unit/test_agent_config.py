"""`load_config`: file < environment < flags, and every mistake is a ConfigError naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node_agent.config import FakeConfig, WireGuardConfig, load_config
from node_agent.errors import ConfigError

NO_ENV: dict[str, str] = {}
# Where a field of a [backends.wireguard] table is reported (the union tag may repeat in it).
WG = r"backends\.wireguard\.(wireguard\.)?"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_a_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'state_dir = "/var/lib/agent"\n'), {}, NO_ENV)

    assert config.state_dir == Path("/var/lib/agent")
    assert config.listen == "0.0.0.0:50051"
    assert config.backends == {}


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/from/file"\nlisten = "10.0.0.1:1000"\n')
    env = {"VPN_NODE_AGENT_STATE_DIR": "/from/env", "VPN_NODE_AGENT_LISTEN": "10.0.0.2:2000"}

    assert load_config(path, {}, NO_ENV).listen == "10.0.0.1:1000"

    from_env = load_config(path, {}, env)
    assert (from_env.state_dir, from_env.listen) == (Path("/from/env"), "10.0.0.2:2000")

    flags = load_config(path, {"listen": "10.0.0.3:3000", "state_dir": None}, env)
    assert (flags.state_dir, flags.listen) == (Path("/from/env"), "10.0.0.3:3000")


def test_empty_environment_values_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/from/file"\n')

    config = load_config(path, {}, {"VPN_NODE_AGENT_STATE_DIR": "", "VPN_NODE_AGENT_LISTEN": ""})

    assert config.state_dir == Path("/from/file")


def test_the_file_may_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/from/file"\n')

    config = load_config(None, {}, {"VPN_NODE_AGENT_CONFIG": str(path)})

    assert config.state_dir == Path("/from/file")


def test_no_file_at_all_with_flags_only(tmp_path: Path) -> None:
    config = load_config(None, {"state_dir": str(tmp_path), "listen": "unix:/run/a.sock"}, NO_ENV)

    assert (config.state_dir, config.listen) == (tmp_path, "unix:/run/a.sock")


def test_backend_type_defaults_to_the_table_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'state_dir = "/s"\n'
        "[backends.wireguard]\n"
        'addresses = ["10.8.0.1/24", "fd00::1/64"]\n'
        "[backends.fake]\n"
        "[backends.wg2]\n"
        'type = "wireguard"\n'
        'interface = "wg2"\n'
        "listen_port = 51821\n",
    )

    backends = load_config(path, {}, NO_ENV).backends

    assert isinstance(backends["wireguard"], WireGuardConfig)
    assert backends["wireguard"].addresses == ["10.8.0.1/24", "fd00::1/64"]
    assert isinstance(backends["fake"], FakeConfig)
    assert isinstance(backends["wg2"], WireGuardConfig)
    assert (backends["wg2"].interface, backends["wg2"].listen_port) == ("wg2", 51821)


def test_a_table_named_otherwise_needs_its_type(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/s"\n[backends.wg]\ninterface = "wg0"\n')

    with pytest.raises(ConfigError, match=r"backends\.wg.*'wg'"):
        load_config(path, {}, NO_ENV)


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        pytest.param('listen = "0.0.0.0"', r"listen: .*HOST:PORT", id="no-port"),
        pytest.param('listen = "0.0.0.0:0"', r"listen: .*HOST:PORT", id="port-0"),
        pytest.param('listen = "0.0.0.0:70000"', r"listen: .*HOST:PORT", id="port-70000"),
        pytest.param('listen = ":50051"', r"listen: .*HOST:PORT", id="no-host"),
        pytest.param('listen = "unix:"', r"listen: .*unix: needs a socket path", id="unix-empty"),
        pytest.param("bogus = 1", r"bogus: Extra inputs are not permitted", id="unknown-key"),
        pytest.param("usage_interval = 0", r"usage_interval", id="interval-too-small"),
        pytest.param('log_level = "LOUD"', r"log_level", id="bad-log-level"),
        pytest.param(
            '[backends.wireguard]\ninterface = "wg-0123456789abc"',
            rf"{WG}interface: .*1\.\.15",
            id="ifname-16-chars",
        ),
        pytest.param(
            '[backends.wireguard]\ninterface = "wg 0"',
            rf"{WG}interface",
            id="ifname-space",
        ),
        pytest.param(
            '[backends.wireguard]\naddresses = ["10.8.0.1"]',
            rf"{WG}addresses: .*'10\.8\.0\.1'.*prefix",
            id="address-without-prefix",
        ),
        pytest.param(
            '[backends.wireguard]\naddresses = ["10.8.0.0/24"]',
            rf"{WG}addresses: .*'10\.8\.0\.0/24'.*own address",
            id="network-address",
        ),
        pytest.param(
            '[backends.wireguard]\naddresses = ["10.8.0.300/24"]',
            rf"{WG}addresses: .*not an address",
            id="not-an-address",
        ),
        pytest.param(
            "[backends.wireguard]\naddresses = []",
            rf"{WG}addresses",
            id="no-addresses",
        ),
        pytest.param("[backends.wireguard]\nlisten_port = 0", rf"{WG}listen_port", id="port"),
        pytest.param(
            "[backends.wireguard]\nmystery = true",
            rf"{WG}mystery: Extra inputs",
            id="unknown-backend-key",
        ),
        pytest.param('[backends.wireguard]\ndriver = "kernel"', rf"{WG}driver", id="driver"),
        pytest.param('[backends.vpn]\ntype = "pptp"', r"backends\.vpn.*'pptp'", id="unknown-type"),
        pytest.param("[backends.Upper]", r"backend name 'Upper'", id="bad-backend-name"),
    ],
)
def test_invalid_configuration_names_the_problem(tmp_path: Path, toml: str, problem: str) -> None:
    path = write(tmp_path, f'state_dir = "/s"\n{toml}\n')

    with pytest.raises(ConfigError, match=problem) as error:
        load_config(path, {}, NO_ENV)

    assert str(error.value).startswith("invalid configuration: ")


def test_an_invalid_override_is_reported_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="listen"):
        load_config(None, {"state_dir": str(tmp_path), "listen": "nowhere"}, NO_ENV)


def test_a_missing_state_dir(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:1"\n')

    with pytest.raises(ConfigError, match=r"no state directory.*VPN_NODE_AGENT_STATE_DIR"):
        load_config(path, {}, NO_ENV)
    with pytest.raises(ConfigError, match="no state directory"):
        load_config(None, {}, NO_ENV)


def test_a_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(missing))} not found"):
        load_config(missing, {"state_dir": "/s"}, NO_ENV)
    with pytest.raises(ConfigError, match="not found"):
        load_config(None, {"state_dir": "/s"}, {"VPN_NODE_AGENT_CONFIG": str(missing)})


def test_broken_toml(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/s"\n[backends.wireguard\n')

    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(path))}: .*line 2"):
        load_config(path, {}, NO_ENV)


def test_a_config_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b"\xff\xfe\x00state")

    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(path))}"):
        load_config(path, {}, NO_ENV)
