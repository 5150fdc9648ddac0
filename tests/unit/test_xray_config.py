"""The Xray backend's settings (``XrayConfig``), the core config file it renders, its Reality
material and the core-lifetime tracking behind the usage epoch."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from node_agent.backends.xray import reality, xray_config
from node_agent.backends.xray.lifetime import CoreLifetime
from node_agent.backends.xray.users import CoreUser
from node_agent.config import AgentConfig, XrayConfig, load_config
from node_agent.errors import ConfigError
from tests.conftest import need

U1 = "0b4a3a3e-9a57-4b57-9c38-7d3b0a7c3e11"
U2 = "1b4a3a3e-9a57-4b57-9c38-7d3b0a7c3e12"
REALITY = {"server_names": ["www.example.com"], "dest": "www.example.com:443"}


def xray(**fields: Any) -> XrayConfig:
    return XrayConfig.model_validate({"type": "xray", **fields})


# --- XrayConfig ------------------------------------------------------------------------------


def test_defaults_with_reality() -> None:
    spec = xray(**REALITY)
    assert (spec.api, spec.api_prefix, spec.inbound_tag) == (
        "127.0.0.1:10085",
        "xray.",
        "vless-reality",
    )
    assert (spec.listen, spec.port, spec.security) == ("0.0.0.0", 443, "reality")
    assert (spec.flow, spec.fingerprint, spec.short_id_count) == ("xtls-rprx-vision", "chrome", 2)
    assert spec.command is None and spec.config_path is None
    assert "127.0.0.0/8" in spec.blocked_networks and "10.0.0.0/8" in spec.blocked_networks


def test_plain_vless_defaults_to_no_flow() -> None:
    spec = xray(security="none", api_prefix="v2ray.core.")
    assert spec.flow == ""
    assert spec.server_names == [] and spec.dest is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, 'security = "reality" needs at least one server name'),
        ({"server_names": ["a.example"]}, 'needs dest = "HOST:PORT"'),
        ({**REALITY, "server_names": ["Bad Name"]}, "'Bad Name' is not a lowercase host name"),
        ({**REALITY, "server_names": ["a.example", "a.example"]}, "distinct"),
        ({**REALITY, "dest": "example.com"}, "HOST:PORT"),
        ({**REALITY, "api": "localhost:10085"}, "IP:PORT"),
        ({**REALITY, "api": "127.0.0.1"}, "IP:PORT"),
        ({**REALITY, "api_prefix": "v2fly."}, "api_prefix"),
        ({**REALITY, "port": 10085}, "need different ports"),
        ({**REALITY, "listen": "any"}, "an IP address"),
        ({**REALITY, "inbound_tag": "api"}, "not 'api'"),
        ({**REALITY, "short_id_count": 9}, "short_id_count"),
        ({**REALITY, "fingerprint": "netscape"}, "fingerprint"),
        ({**REALITY, "flow": "xtls-rprx-direct"}, "flow"),
        ({"security": "none", "flow": "xtls-rprx-vision"}, 'needs security = "reality"'),
        ({**REALITY, "command": []}, "non-empty argv"),
        ({**REALITY, "blocked_networks": ["10.0.0.1/8"]}, "is not a network"),
        ({**REALITY, "typo": 1}, "typo"),
    ],
)
def test_bad_settings_are_refused(fields: dict[str, Any], message: str, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    lines = [f'state_dir = "{tmp_path}"', "[backends.vless]", 'type = "xray"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="invalid configuration") as error:
        load_config(config, {})
    assert message in str(error.value)


def test_a_toml_table_becomes_an_xray_backend(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n'
        "[backends.vless]\n"
        'type = "xray"\n'
        'server_names = ["www.example.com"]\n'
        'dest = "www.example.com:443"\n'
        'command = ["xray", "run", "-c", "{config}"]\n'
    )
    loaded = load_config(config, {})
    assert isinstance(loaded, AgentConfig)
    spec = loaded.backends["vless"]
    assert isinstance(spec, XrayConfig)
    assert spec.command == ["xray", "run", "-c", "{config}"]


# --- the config file -------------------------------------------------------------------------


def settings(*, with_reality: bool) -> xray_config.CoreSettings:
    server = (
        xray_config.RealityServer(
            "PRIVATE", ("ab12", "cd34"), ("www.example.com",), "www.example.com:443"
        )
        if with_reality
        else None
    )
    return xray_config.CoreSettings(
        api_host="127.0.0.1",
        api_port=10085,
        inbound_tag="vless-reality",
        listen="0.0.0.0",
        port=443,
        reality=server,
        blocked_networks=("127.0.0.0/8",),
    )


USERS = [CoreUser("b.2", U2, ""), CoreUser("a.1", U1, "xtls-rprx-vision")]


def inbound(config: dict[str, Any], tag: str) -> dict[str, Any]:
    (found,) = [i for i in config["inbounds"] if i["tag"] == tag]
    return found


def test_the_rendered_config_holds_users_reality_api_and_stats() -> None:
    config = xray_config.render(settings(with_reality=True), USERS)
    vless = inbound(config, "vless-reality")
    assert vless["protocol"] == "vless" and vless["port"] == 443
    assert vless["settings"]["decryption"] == "none"
    assert vless["settings"]["clients"] == [  # sorted by email
        {"id": U1, "email": "a.1", "flow": "xtls-rprx-vision", "level": 0},
        {"id": U2, "email": "b.2", "flow": "", "level": 0},
    ]
    assert vless["streamSettings"] == {
        "network": "tcp",
        "security": "reality",
        "realitySettings": {
            "show": False,
            "dest": "www.example.com:443",
            "xver": 0,
            "serverNames": ["www.example.com"],
            "privateKey": "PRIVATE",
            "shortIds": ["ab12", "cd34"],
        },
    }
    api = inbound(config, "api")
    assert (api["protocol"], api["listen"], api["port"]) == ("dokodemo-door", "127.0.0.1", 10085)
    assert config["api"] == {"tag": "api", "services": ["HandlerService", "StatsService"]}
    assert config["stats"] == {}
    assert config["policy"]["levels"]["0"] == {"statsUserUplink": True, "statsUserDownlink": True}
    assert config["routing"]["rules"] == [
        {"type": "field", "inboundTag": ["api"], "outboundTag": "api"},
        # Whatever a client's domain resolves to, nothing of theirs reaches the API's port.
        {
            "type": "field",
            "inboundTag": ["vless-reality"],
            "port": "10085",
            "outboundTag": "blocked",
        },
        {"type": "field", "ip": ["127.0.0.0/8"], "outboundTag": "blocked"},
    ]
    assert config["outbounds"][0]["protocol"] == "freedom"  # the default outbound
    assert config["log"]["access"] == "none"


def test_plain_vless_has_no_reality_block() -> None:
    vless = inbound(xray_config.render(settings(with_reality=False), USERS), "vless-reality")
    assert vless["streamSettings"] == {"network": "tcp", "security": "none"}


def test_the_file_is_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "core" / "config.json"
    assert xray_config.read_users(path, "vless-reality") is None
    xray_config.write(path, settings(with_reality=True), USERS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the private key
    assert xray_config.read_users(path, "vless-reality") == {u.email: u for u in USERS}
    with pytest.raises(ConfigError, match="no VLESS inbound 'other'"):
        xray_config.read_users(path, "other")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON config"):
        xray_config.read_users(path, "vless-reality")


def test_v2ray_accepts_the_plain_config(tmp_path: Path) -> None:
    need(shutil.which("v2ray") is not None, "v2ray is not installed (apt-get install v2ray)")
    path = tmp_path / "config.json"
    xray_config.write(path, settings(with_reality=False), [CoreUser("b.2", U2, "")])
    result = subprocess.run(
        ["v2ray", "-test", "-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration OK" in result.stdout


def test_split_host_port() -> None:
    assert xray_config.split_host_port("127.0.0.1:10085") == ("127.0.0.1", 10085)
    assert xray_config.split_host_port("[::1]:10085") == ("::1", 10085)
    with pytest.raises(ValueError, match="HOST:PORT"):
        xray_config.split_host_port("127.0.0.1")


# --- Reality material ------------------------------------------------------------------------


def test_material_is_made_once_kept_0600_and_only_grows(tmp_path: Path) -> None:
    path = tmp_path / "reality.json"
    first = reality.load_or_create_material(path, 2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert reality.public_key(first.private_key) == first.public_key
    assert len(first.short_ids) == 2 and all(reality.valid_short_id(s) for s in first.short_ids)
    assert reality.load_or_create_material(path, 2) == first
    assert reality.load_or_create_material(path, 1) == first  # links carry these: never dropped
    grown = reality.load_or_create_material(path, 4)
    assert grown.short_ids[:2] == first.short_ids and len(set(grown.short_ids)) == 4
    assert grown.private_key == first.private_key
    assert "private_key" in json.loads(path.read_text())


def test_broken_material_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "reality.json"
    path.write_text('{"private_key": "short", "short_ids": ["ab"]}')
    with pytest.raises(ConfigError, match="Reality key"):
        reality.load_or_create_material(path, 2)
    path.write_text('{"private_key": "x"}')
    with pytest.raises(ConfigError, match="needs private_key and short_ids"):
        reality.load_or_create_material(path, 2)
    keys = reality.generate_keys()
    path.write_text(json.dumps({"private_key": keys.private_key, "short_ids": ["xyz"]}))
    with pytest.raises(ConfigError, match="short ids"):
        reality.load_or_create_material(path, 2)


# --- the core's lifetime (usage epoch) ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_epoch_follows_the_cores_start_time(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "core.json"
    life = CoreLifetime(path, clock=clock, boot_id=lambda: "boot-1")
    assert life.observe(10) is True  # the first reading
    epoch = life.epoch
    clock.now += 30.4
    assert life.observe(40) is False  # truncated seconds: the same start time
    clock.now += 0.9
    assert life.observe(41) is False
    clock.now += 5
    assert life.observe(2) is True  # the uptime went back: restarted
    assert life.epoch != epoch
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_quick_restart_is_seen_from_the_uptime_going_back(tmp_path: Path) -> None:
    clock = Clock()
    life = CoreLifetime(tmp_path / "core.json", clock=clock, boot_id=lambda: "boot-1")
    life.observe(2)
    epoch = life.epoch
    clock.now += 1
    assert life.observe(0) is True  # started within the tolerance, but the uptime fell
    assert life.epoch != epoch


def test_an_agent_restart_keeps_the_epoch_of_a_running_core(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "core.json"
    first = CoreLifetime(path, clock=clock, boot_id=lambda: "boot-1")
    first.observe(100)
    clock.now += 60
    again = CoreLifetime(path, clock=clock, boot_id=lambda: "boot-1")
    assert again.observe(161) is True  # new to this agent...
    assert again.epoch == first.epoch  # ...but the same core: the ledger must not recount
    rebooted = CoreLifetime(path, clock=clock, boot_id=lambda: "boot-2")
    rebooted.observe(161)
    assert rebooted.epoch != first.epoch  # another boot: the monotonic clock restarted
    clock.now += 100
    later = CoreLifetime(path, clock=clock, boot_id=lambda: "boot-2")
    later.observe(3)
    assert later.epoch != rebooted.epoch
