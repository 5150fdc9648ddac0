"""The ``[backends.NAME] type = "threexui"`` table: what is accepted, what is refused and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node_agent.backends.threexui.backend import ThreeXuiBackend
from node_agent.config import ThreeXuiConfig, load_config
from node_agent.errors import ConfigError


def config(tmp_path: Path, **table: Any) -> ThreeXuiConfig:
    table = {"type": "threexui", "url": "https://127.0.0.1:2053/secret", "inbound_id": 3} | table
    loaded = load_config(None, {"state_dir": str(tmp_path), "backends": {"xui": table}}, env={})
    spec = loaded.backends["xui"]
    assert isinstance(spec, ThreeXuiConfig)
    return spec


def refused(tmp_path: Path, **table: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, **table)
    return str(info.value)


def test_defaults_and_the_base_path_gets_its_slash(tmp_path: Path) -> None:
    spec = config(tmp_path, type="threexui", username="admin", password="pw")

    assert spec.url == "https://127.0.0.1:2053/secret/"
    assert spec.api == "auto"
    assert spec.verify_tls is True
    assert spec.email_prefix == "vpnbot-"
    assert spec.timeout == 10.0
    assert "pw" not in repr(spec)  # a logged config does not show the password


def test_the_type_defaults_to_the_table_name(tmp_path: Path) -> None:
    loaded = load_config(
        None,
        {
            "state_dir": str(tmp_path),
            "backends": {
                "threexui": {"url": "http://h/", "inbound_id": 1, "username": "a", "password": "b"}
            },
        },
        env={},
    )
    assert isinstance(loaded.backends["threexui"], ThreeXuiConfig)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"username": "a"}, "give username with password or password_file"),
        ({"password": "b"}, "give username with password or password_file"),
        ({"username": "a", "password": "b", "password_file": "/p"}, "not both"),
        ({"username": "a", "password": "b", "api_token_file": "/t"}, "not both"),
        ({"api_token_file": "/t", "verify_tls": False, "ca_file": "/ca"}, "no effect"),
        ({"api_token_file": "/t", "url": "ftp://h/"}, "http(s)://HOST"),
        ({"api_token_file": "/t", "url": "https:///path"}, "http(s)://HOST"),
        ({"api_token_file": "/t", "url": "https://user:pw@h/"}, "no query, fragment, user info"),
        ({"api_token_file": "/t", "url": "https://h/?a=1"}, "no query"),
        ({"api_token_file": "/t", "email_prefix": "vpn bot-"}, "no spaces"),
        ({"api_token_file": "/t", "email_prefix": "vpn/"}, "no spaces, '/'"),
        ({"api_token_file": "/t", "email_prefix": ""}, "email_prefix"),
        ({"api_token_file": "/t", "inbound_id": 0}, "inbound_id"),
        ({"api_token_file": "/t", "api": "v3"}, "api"),
        ({"api_token_file": "/t", "timeout": 0}, "timeout"),
        ({"api_token_file": "/t", "inbounds": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_tables_are_refused_with_the_reason(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    assert message in refused(tmp_path, **table)


def test_unreadable_secret_files_are_refused_when_the_backend_is_built(tmp_path: Path) -> None:
    spec = config(tmp_path, username="admin", password_file=str(tmp_path / "missing"))

    with pytest.raises(ConfigError, match=r"password_file .*missing is not a readable file"):
        ThreeXuiBackend("xui", spec, tmp_path)

    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    spec = config(tmp_path, username="a", password="b", ca_file=str(bad_ca))
    with pytest.raises(ConfigError, match="ca_file"):
        ThreeXuiBackend("xui", spec, tmp_path)


def test_a_readable_password_file_is_enough_to_build(tmp_path: Path) -> None:
    secret = tmp_path / "panel.pass"
    secret.write_text("hunter2\n")
    backend = ThreeXuiBackend(
        "xui", config(tmp_path, username="a", password_file=str(secret)), tmp_path
    )

    assert backend.kind == "threexui"
    assert backend.public_params() is None  # nothing read from the panel yet
