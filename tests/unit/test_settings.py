"""Settings from the environment and ``.env``; the master key."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from controller.settings import (
    MASTER_KEY_BYTES,
    MASTER_KEY_FILE_NAME,
    DatabaseSettings,
    Settings,
    SettingsError,
    check_unknown_env,
    env_name,
    generate_master_key,
    is_placeholder,
    load_master_key,
    load_settings,
)

pytestmark = pytest.mark.usefixtures("clean_env")

REAL_TOKEN = "7012345678:AAFk3j5Lq9sX0pQwErTyUiOpAsDfGhJkLzX"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _decode_generated(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- defaults and plain values --------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.env == "dev"
    assert settings.is_dev
    assert settings.data_dir == Path("data")
    assert settings.default_currency == "RUB"
    assert settings.api.host == "127.0.0.1"
    assert settings.api.port == 8080
    assert settings.database.url is None
    assert settings.telegram.client_bot_token is None
    assert settings.security.master_key is None
    assert settings.scheduler.enabled is True
    assert settings.scheduler.expiry_sweep_seconds == 60.0
    # The default database is SQLite in the data directory (relative to the CWD).
    expected = (tmp_path / "data" / "vpnbot.db").resolve()
    assert settings.database_url == f"sqlite+aiosqlite:///{expected}"


def test_default_database_follows_data_dir_from_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "state"
    monkeypatch.setenv("VPNBOT_DATA_DIR", str(data_dir))
    settings = load_settings()
    assert settings.data_dir == data_dir
    assert settings.database_url == f"sqlite+aiosqlite:///{data_dir / 'vpnbot.db'}"


def test_default_database_follows_data_dir_override(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "other")
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'other' / 'vpnbot.db'}"


def test_nested_values_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_ENV", "production")
    monkeypatch.setenv("VPNBOT_API__PORT", "9090")
    monkeypatch.setenv("VPNBOT_API__HOST", "0.0.0.0")
    monkeypatch.setenv("VPNBOT_API__PUBLIC_URL", "https://vpn.example.org/")
    monkeypatch.setenv("VPNBOT_DATABASE__POOL_SIZE", "25")
    monkeypatch.setenv("VPNBOT_DATABASE__AUTO_MIGRATE", "false")
    monkeypatch.setenv("VPNBOT_LOG__LEVEL", "debug")
    monkeypatch.setenv("VPNBOT_DEFAULT_CURRENCY", "usd")
    monkeypatch.setenv("VPNBOT_REDIS__URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("VPNBOT_SCHEDULER__EXPIRY_SWEEP_SECONDS", "15")
    monkeypatch.setenv("VPNBOT_TELEGRAM__CLIENT_BOT_TOKEN", REAL_TOKEN)
    settings = load_settings()
    assert settings.env == "production"
    assert not settings.is_dev
    assert settings.api.port == 9090
    assert settings.api.host == "0.0.0.0"
    assert settings.api.public_url == "https://vpn.example.org"
    assert settings.database.pool_size == 25
    assert settings.database.auto_migrate is False
    assert settings.log.level == "DEBUG"
    assert settings.default_currency == "USD"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.scheduler.expiry_sweep_seconds == 15.0
    assert settings.telegram.client_bot_token is not None
    assert settings.telegram.client_bot_token.get_secret_value() == REAL_TOKEN


def test_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VPNBOT_DATA_DIR", str(tmp_path / "from-env"))
    settings = load_settings(data_dir=tmp_path / "override")
    assert settings.data_dir == tmp_path / "override"


def test_empty_token_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_TELEGRAM__ADMIN_BOT_TOKEN", "   ")
    assert load_settings().telegram.admin_bot_token is None


def test_secrets_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_master_key()
    monkeypatch.setenv("VPNBOT_TELEGRAM__CLIENT_BOT_TOKEN", REAL_TOKEN)
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", key)
    settings = load_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert REAL_TOKEN not in text
        assert key not in text


def test_env_name() -> None:
    assert env_name("api", "port") == "VPNBOT_API__PORT"
    assert env_name("data_dir") == "VPNBOT_DATA_DIR"
    assert env_name("security", "master_key") == "VPNBOT_SECURITY__MASTER_KEY"


# --- invalid values name the variable -------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VPNBOT_API__PORT", "99999"),
        ("VPNBOT_API__PORT", "0"),
        ("VPNBOT_API__PORT", "http"),
        ("VPNBOT_API__PUBLIC_URL", "vpn.example.org"),
        ("VPNBOT_ENV", "staging"),
        ("VPNBOT_DATABASE__POOL_SIZE", "0"),
        ("VPNBOT_DATABASE__URL", "mysql://user@host/db"),
        ("VPNBOT_DATABASE__ECHO", "maybe"),
        ("VPNBOT_LOG__LEVEL", "verbose"),
        ("VPNBOT_LOG__FORMAT", "xml"),
        ("VPNBOT_REDIS__URL", "http://127.0.0.1:6379"),
        ("VPNBOT_DEFAULT_CURRENCY", "GBP"),
        ("VPNBOT_SCHEDULER__EXPIRY_SWEEP_SECONDS", "0.5"),
        ("VPNBOT_SCHEDULER__EXPIRY_SWEEP_SECONDS", "nan"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match="invalid setting") as info:
        load_settings()
    assert variable in str(info.value)


def test_invalid_port_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_API__PORT", "99999")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("invalid setting VPNBOT_API__PORT:")
    assert "65535" in str(info.value)


def test_invalid_override_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="VPNBOT_DEFAULT_CURRENCY"):
        load_settings(default_currency="BTC")


# --- unknown variables ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "VPNBOT_APIX",
        "VPNBOT_API__PROT",
        "VPNBOT_API__PORT__EXTRA",
        "VPNBOT_DATA_DIR__SUB",
        "VPNBOT_ENV__X",
        "VPNBOT_DATABASE_URL",  # single underscore: a common typo
        "VPNBOT_",
    ],
)
def test_unknown_variable_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(SettingsError, match="unknown setting") as info:
        load_settings()
    assert variable in str(info.value)


def test_check_unknown_env_on_a_mapping() -> None:
    check_unknown_env(
        {
            "PATH": "/usr/bin",
            "VPNBOTX": "not our prefix",
            "VPNBOT_TEST_POSTGRES_URL": "postgresql://x",
            "VPNBOT_TEST_ANYTHING__AT__ALL": "1",
            "VPNBOT_API__PORT": "1",
            "VPNBOT_DATA_DIR": "/x",
            "VPNBOT_SECURITY__MASTER_KEY_FILE": "/k",
        }
    )
    with pytest.raises(SettingsError, match="VPNBOT_REDIS__URI"):
        check_unknown_env({"VPNBOT_REDIS__URI": "redis://x"})
    with pytest.raises(SettingsError, match="has no sub-keys"):
        check_unknown_env({"VPNBOT_DEFAULT_CURRENCY__X": "1"})


def test_every_setting_is_a_known_variable() -> None:
    names = {}
    for top, field in Settings.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub:
            for key in sub:
                names[env_name(top, key)] = "x"
        else:
            names[env_name(top)] = "x"
    assert "VPNBOT_API__PORT" in names
    check_unknown_env(names)


def test_test_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_TEST_STRICT", "1")
    monkeypatch.setenv("VPNBOT_TEST_SOMETHING_NEW", "x")
    assert load_settings().api.port == 8080


def test_lowercase_unknown_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("vpnbot_api__port", "9999")
    assert load_settings().api.port == 9999  # lower-case names are read...
    monkeypatch.setenv("vpnbot_api__prot", "1")
    with pytest.raises(SettingsError):  # ...so lower-case typos must be refused too
        load_settings()


# --- database URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/vpn", "postgresql+asyncpg://u:p@db:5432/vpn"),
        ("postgresql://u@db/vpn", "postgresql+asyncpg://u@db/vpn"),
        ("postgresql+asyncpg://u@db/vpn", "postgresql+asyncpg://u@db/vpn"),
        ("sqlite:///var/lib/vpn.db", "sqlite+aiosqlite:///var/lib/vpn.db"),
        ("sqlite:////abs/vpn.db", "sqlite+aiosqlite:////abs/vpn.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("  postgres://u@db/vpn  ", "postgresql+asyncpg://u@db/vpn"),
    ],
)
def test_database_url_is_normalized(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    assert DatabaseSettings(url=url).url == expected
    monkeypatch.setenv("VPNBOT_DATABASE__URL", url)
    settings = load_settings()
    assert settings.database.url == expected
    assert settings.database_url == expected


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h/db",
        "mariadb://u@h/db",
        "postgresql+psycopg2://u@h/db",
        "sqlite+pysqlite:///x.db",
        "db.sqlite",
        "postgres:/u@h/db",
    ],
)
def test_unsupported_database_url_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("VPNBOT_DATABASE__URL", url)
    with pytest.raises(SettingsError, match="VPNBOT_DATABASE__URL"):
        load_settings()


def test_blank_database_url_means_default_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VPNBOT_DATABASE__URL", "  ")
    settings = load_settings(data_dir=tmp_path)
    assert settings.database.url is None
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'vpnbot.db'}"


# --- placeholder secrets --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "changeme",
        "CHANGE-ME",
        "change_me_later",
        "<your bot token>",
        "your-token-here",
        "placeholder",
        "secret",
        " TODO ",
        "token",
        "xxx",
        "example",
        "test",
    ],
)
def test_is_placeholder(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", [REAL_TOKEN, generate_master_key(), "s3cr3t-Value-9"])
def test_real_values_are_not_placeholders(value: str) -> None:
    assert not is_placeholder(value)


@pytest.mark.parametrize(
    "variable",
    [
        "VPNBOT_TELEGRAM__CLIENT_BOT_TOKEN",
        "VPNBOT_TELEGRAM__SUPPORT_BOT_TOKEN",
        "VPNBOT_TELEGRAM__ADMIN_BOT_TOKEN",
        "VPNBOT_SECURITY__MASTER_KEY",
    ],
)
def test_placeholder_secret_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv("VPNBOT_ENV", "production")
    monkeypatch.setenv(variable, "changeme")
    with pytest.raises(SettingsError, match="placeholder") as info:
        load_settings()
    assert variable in str(info.value)


def test_placeholder_secret_accepted_in_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_TELEGRAM__CLIENT_BOT_TOKEN", "changeme")
    settings = load_settings()
    assert settings.telegram.client_bot_token is not None
    assert settings.telegram.client_bot_token.get_secret_value() == "changeme"


def test_real_secrets_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPNBOT_ENV", "production")
    monkeypatch.setenv("VPNBOT_TELEGRAM__CLIENT_BOT_TOKEN", REAL_TOKEN)
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", generate_master_key())
    assert load_settings().env == "production"


# --- the master key -------------------------------------------------------------------------


def test_generate_master_key_is_32_random_bytes() -> None:
    first, second = generate_master_key(), generate_master_key()
    assert first != second
    for text in (first, second):
        assert "=" not in text
        assert len(_decode_generated(text)) == MASTER_KEY_BYTES


def test_explicit_master_key_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    text = generate_master_key()
    monkeypatch.setenv("VPNBOT_ENV", "production")
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", text)
    assert load_master_key(load_settings()) == _decode_generated(text)


def test_standard_padded_base64_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = bytes(range(200, 232))  # encodes with '+' and '/' in the standard alphabet
    text = _b64(raw)
    assert "+" in text or "/" in text
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", text)
    assert load_master_key(load_settings()) == raw


def test_production_without_master_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VPNBOT_ENV", "production")
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(SettingsError, match="VPNBOT_SECURITY__MASTER_KEY"):
        load_master_key(settings)
    # Production never silently generates a key file.
    assert not (tmp_path / MASTER_KEY_FILE_NAME).exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", "not base64"),
        (_b64(b"k" * 16), "got 16"),
        (_b64(b"k" * 31), "got 31"),
        (_b64(b"k" * 33), "got 33"),
        (_b64(b"k" * 64), "got 64"),
        ("!!!!", "not base64"),
    ],
)
def test_bad_master_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", value)
    with pytest.raises(SettingsError, match="VPNBOT_SECURITY__MASTER_KEY") as info:
        load_master_key(load_settings())
    assert expected in str(info.value)


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_master_key_settings_mean_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blank: str
) -> None:
    # .env.example ships both variables empty: in dev that means "generate one".
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", blank)
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY_FILE", blank)
    settings = load_settings(data_dir=tmp_path)
    assert settings.security.master_key is None
    assert settings.security.master_key_file is None
    assert len(load_master_key(settings)) == MASTER_KEY_BYTES
    assert (tmp_path / MASTER_KEY_FILE_NAME).is_file()


def test_blank_master_key_in_production_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VPNBOT_ENV", "production")
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", "")
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY_FILE", "")
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(SettingsError, match="missing setting VPNBOT_SECURITY__MASTER_KEY"):
        load_master_key(settings)


def test_dev_generates_a_private_key_file_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    settings = load_settings(data_dir=data_dir)
    first = load_master_key(settings)
    path = data_dir / MASTER_KEY_FILE_NAME
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == MASTER_KEY_BYTES
    assert _decode_generated(path.read_text(encoding="ascii")) == first
    content = path.read_bytes()

    second = load_master_key(load_settings(data_dir=data_dir))
    assert second == first
    assert path.read_bytes() == content


def test_dev_keys_differ_between_data_dirs(tmp_path: Path) -> None:
    one = load_master_key(load_settings(data_dir=tmp_path / "one"))
    two = load_master_key(load_settings(data_dir=tmp_path / "two"))
    assert one != two


def test_dev_reuses_an_existing_key_file(tmp_path: Path) -> None:
    raw = os.urandom(MASTER_KEY_BYTES)
    (tmp_path / MASTER_KEY_FILE_NAME).write_text(_b64(raw) + "\n", encoding="ascii")
    assert load_master_key(load_settings(data_dir=tmp_path)) == raw


def test_dev_refuses_a_corrupt_key_file(tmp_path: Path) -> None:
    path = tmp_path / MASTER_KEY_FILE_NAME
    path.write_text(_b64(b"short"), encoding="ascii")
    with pytest.raises(SettingsError, match="got 5") as info:
        load_master_key(load_settings(data_dir=tmp_path))
    assert str(path) in str(info.value)
    assert path.read_text(encoding="ascii") == _b64(b"short")  # never overwritten


def test_explicit_key_wins_over_dev_generation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = generate_master_key()
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", text)
    assert load_master_key(load_settings(data_dir=tmp_path)) == _decode_generated(text)
    assert not (tmp_path / MASTER_KEY_FILE_NAME).exists()


def test_master_key_file_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = os.urandom(MASTER_KEY_BYTES)
    key_file = tmp_path / "secrets" / "vpnbot.key"
    key_file.parent.mkdir()
    key_file.write_text(base64.urlsafe_b64encode(raw).decode() + "\n", encoding="ascii")
    monkeypatch.setenv("VPNBOT_ENV", "production")
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY_FILE", str(key_file))
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.security.master_key_file == key_file
    assert load_master_key(settings) == raw
    assert not (tmp_path / "data" / MASTER_KEY_FILE_NAME).exists()


def test_missing_master_key_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY_FILE", str(tmp_path / "absent.key"))
    with pytest.raises(SettingsError, match="VPNBOT_SECURITY__MASTER_KEY_FILE") as info:
        load_master_key(load_settings(data_dir=tmp_path))
    assert "absent.key" in str(info.value)


def test_bad_master_key_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "bad.key"
    key_file.write_text(_b64(b"x" * 20), encoding="ascii")
    monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY_FILE", str(key_file))
    with pytest.raises(SettingsError, match="VPNBOT_SECURITY__MASTER_KEY_FILE"):
        load_master_key(load_settings(data_dir=tmp_path))


# --- the .env file --------------------------------------------------------------------------


def test_dotenv_value_is_used(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nVPNBOT_API__PORT=9090\nVPNBOT_DEFAULT_CURRENCY=eur\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.api.port == 9090
    assert settings.default_currency == "EUR"


def test_dotenv_is_read_from_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("VPNBOT_API__PORT=9090\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_settings().api.port == 8080


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VPNBOT_API__PORT=9090\n", encoding="utf-8")
    monkeypatch.setenv("VPNBOT_API__PORT", "7070")
    assert load_settings().api.port == 7070


def test_invalid_dotenv_value_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VPNBOT_API__PORT=99999\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="VPNBOT_API__PORT"):
        load_settings()


def test_dotenv_placeholder_refused_in_production(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "VPNBOT_ENV=production\nVPNBOT_TELEGRAM__SUPPORT_BOT_TOKEN=changeme\n", encoding="utf-8"
    )
    with pytest.raises(SettingsError, match="VPNBOT_TELEGRAM__SUPPORT_BOT_TOKEN"):
        load_settings()


def test_dotenv_top_level_typo_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VPNBOT_APIX=1\n", encoding="utf-8")
    with pytest.raises(SettingsError):
        load_settings()


def test_dotenv_typo_message_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VPNBOT_APIX=1\n", encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "VPNBOT_APIX" in str(info.value)
    assert "VPNBOT_VPNBOT_" not in str(info.value)


@pytest.mark.parametrize("line", ["VPNBOT_API__PROT=1", "VPNBOT_DATABASE__ULR=postgres://u@h/db"])
def test_dotenv_nested_typo_is_refused(tmp_path: Path, line: str) -> None:
    (tmp_path / ".env").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="VPNBOT_"):
        load_settings()


def test_master_key_accepts_both_base64_alphabets(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    # 0xfb 0xff... encodes to '+' and '/' in the standard alphabet, '-' and '_' URL-safe.
    key = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFB, 0xFF])
    for encoded in (base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
        assert any(c in encoded for c in "+/-_")
        monkeypatch.setenv("VPNBOT_SECURITY__MASTER_KEY", encoded)
        assert load_master_key(load_settings()) == key


def test_master_key_creation_is_safe_when_processes_start_together(tmp_path: Path) -> None:
    """Several processes creating the dev key at once all end up with the same, whole key."""
    import subprocess
    import sys

    for round_number in range(5):
        data_dir = tmp_path / f"round{round_number}"
        script = (
            "import base64,sys;from controller.settings import load_settings,load_master_key;"
            f"k=load_master_key(load_settings(data_dir={str(data_dir)!r}));"
            "sys.stdout.write(base64.b64encode(k).decode())"
        )
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmp_path,
            )
            for _ in range(4)
        ]
        results = [p.communicate(timeout=60) for p in processes]
        assert all(p.returncode == 0 for p in processes), results
        keys = {out for out, _err in results}
        assert len(keys) == 1
        assert sorted(p.name for p in data_dir.iterdir()) == ["master.key"]


def test_kubernetes_service_links_are_not_mistaken_for_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "VPNBOT_PORT": "tcp://10.0.0.1:8080",
        "VPNBOT_PORT_8080_TCP": "tcp://10.0.0.1:8080",
        "VPNBOT_PORT_8080_TCP_ADDR": "10.0.0.1",
        "VPNBOT_SERVICE_HOST": "10.0.0.1",
        "VPNBOT_SERVICE_PORT_HTTP": "8080",
        "VPNBOT_POSTGRESQL_SERVICE_HOST": "10.0.0.2",
        "VPNBOT_REDIS_PORT": "tcp://10.0.0.5:6379",
        "VPNBOT_REDIS_PORT_6379_TCP_PROTO": "tcp",
        "VPNBOT_API_SERVICE_PORT": "8080",
    }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().api.port == 8080
    # A look-alike typo of a real setting is still refused.
    monkeypatch.setenv("VPNBOT_API_PORT", "9000")
    with pytest.raises(SettingsError, match="VPNBOT_API_PORT"):
        load_settings()


def test_placeholder_database_password_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VPNBOT_DATABASE__URL", "postgresql://vpnbot:changeme@db/vpnbot")
    assert load_settings().database.url  # fine in dev
    monkeypatch.setenv("VPNBOT_ENV", "production")
    with pytest.raises(SettingsError, match="VPNBOT_DATABASE__URL"):
        load_settings()
    monkeypatch.setenv("VPNBOT_DATABASE__URL", "postgresql://vpnbot:Zq8f3kP1x@db/vpnbot")
    settings = load_settings()
    assert "Zq8f3kP1x" not in repr(settings)


def test_master_key_file_on_a_filesystem_without_hard_links(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """vfat and some network mounts refuse link(2) with EPERM; the key is still created."""
    import errno
    import os

    def no_links(_src: object, _dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    data_dir = tmp_path / "vfat"
    first = load_master_key(load_settings(data_dir=data_dir))
    second = load_master_key(load_settings(data_dir=data_dir))
    assert first == second and len(first) == 32
    assert sorted(p.name for p in data_dir.iterdir()) == ["master.key"]
    assert (data_dir / "master.key").stat().st_mode & 0o777 == 0o600
