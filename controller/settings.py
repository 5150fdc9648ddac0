"""The one settings object of the controller.

Every value comes from the environment (prefix ``VPNBOT_``, nested keys joined by ``__``) or
from a ``.env`` file in the working directory; ``.env.example`` documents each variable.
Invalid values refuse start-up with a :class:`SettingsError` that names the variable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError as PydanticSettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "VPNBOT_"
NESTED_DELIMITER = "__"
MASTER_KEY_FILE_NAME = "master.key"
MASTER_KEY_BYTES = 32

_PLACEHOLDER_MARKERS = ("changeme", "change-me", "change_me", "placeholder", "your-", "your_")
_PLACEHOLDER_VALUES = {"", "secret", "password", "token", "xxx", "todo", "example", "test"}


class SettingsError(Exception):
    """Settings that refuse start-up. The message names the offending variable."""


def env_name(*path: str | int) -> str:
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in path)


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _PLACEHOLDER_VALUES or lowered.startswith("<"):
        return True
    return any(marker in lowered for marker in _PLACEHOLDER_MARKERS)


class _Section(BaseModel):
    # A misspelled key inside a section (also in JSON values) is an error, not a silent default.
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; empty means SQLite in the data directory",
        repr=False,  # may carry a password
    )
    echo: bool = False
    pool_size: int = Field(default=10, ge=1, le=200)
    auto_migrate: bool = True

    @field_validator("url")
    @classmethod
    def _normalize_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError("must be a URL such as postgresql://user@host/db or sqlite:///path")
        drivers = {
            "postgres": "postgresql+asyncpg",
            "postgresql": "postgresql+asyncpg",
            "postgresql+asyncpg": "postgresql+asyncpg",
            "sqlite": "sqlite+aiosqlite",
            "sqlite+aiosqlite": "sqlite+aiosqlite",
        }
        if scheme not in drivers:
            raise ValueError(f"unsupported database {scheme!r}: use postgresql:// or sqlite://")
        try:
            url = make_url(f"{drivers[scheme]}://{rest}")
        except ArgumentError as exc:
            raise ValueError(str(exc)) from None
        if url.get_backend_name() == "postgresql" and "sslmode" in url.query:
            # libpq spells it sslmode=, asyncpg ssl=; accept the familiar one.
            query = dict(url.query)
            query["ssl"] = query.pop("sslmode")
            url = url.set(query=query)
        return url.render_as_string(hide_password=False)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// behind a TLS proxy)")
        return value.rstrip("/")


class TelegramSettings(_Section):
    client_bot_token: SecretStr | None = None
    support_bot_token: SecretStr | None = None
    admin_bot_token: SecretStr | None = None
    api_url: str = "https://api.telegram.org"
    # auto: webhook when VPNBOT_API__PUBLIC_URL is set, long polling otherwise.
    mode: Literal["auto", "polling", "webhook"] = "auto"
    # Per user: at most this many updates per window; a flood's last action is kept and
    # handled when the window ends, the ones before it are dropped.
    throttle_updates: int = Field(default=4, ge=1, le=1000)
    throttle_window_seconds: float = Field(default=2.0, ge=0.1, le=3600.0)
    drop_pending_updates: bool = False

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL of a Bot API server")
        return value

    @field_validator("client_bot_token", "support_bot_token", "admin_bot_token")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return value


class SecuritySettings(_Section):
    master_key: SecretStr | None = Field(
        default=None, description="base64 of 32 random bytes; encrypts secrets at rest"
    )
    master_key_file: Path | None = None

    @field_validator("master_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        if (
            isinstance(value, str | SecretStr)
            and not str(value.get_secret_value() if isinstance(value, SecretStr) else value).strip()
        ):
            return None
        return value

    @field_validator("master_key_file", mode="before")
    @classmethod
    def _empty_file_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class RedisSettings(_Section):
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class PaymentSettings(_Section):
    # Telegram Stars (XTR) need no provider account. Plans priced in XTR are charged as they
    # are; plans in other currencies at this price of one star, in minor units of the plan's
    # currency (150 = 1.50 RUB), rounded up to whole stars.
    stars_enabled: bool = True
    stars_unit_price_minor: int = Field(default=150, ge=1, le=10**9)


class ReferralSettings(_Section):
    # Days the referrer gets when someone they invited pays for the first time (0 = none).
    reward_days: int = Field(default=7, ge=0, le=3650)


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "console", "json"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class SchedulerSettings(_Section):
    enabled: bool = True
    expiry_sweep_seconds: float = Field(default=60.0, ge=1.0, le=86400.0)


class EnrollmentSettings(_Section):
    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104 - agents on other hosts must reach it
    port: int = Field(default=8443, ge=0, le=65535)
    public_url: str | None = None
    token_ttl_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from proto.nodeapi.v1.enrollment import is_host_url

        if not is_host_url(value.strip()):
            raise ValueError("must be https://HOST[:PORT] (the enrollment listener itself)")
        return value.strip().rstrip("/")


def _address_list(value: str, what: str, *, networks: bool) -> str:
    items = [item.strip() for item in value.split(",") if item.strip()]
    for item in items:
        try:
            if networks:
                ipaddress.ip_network(item, strict=False)
            else:
                ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(f"{item!r} is not {what}") from None
    return ", ".join(items)


class VpnSettings(_Section):
    """What goes into client configs."""

    wireguard_dns: str = "1.1.1.1, 1.0.0.1"
    wireguard_allowed_ips: str = "0.0.0.0/0, ::/0"
    wireguard_keepalive: int = Field(default=25, ge=0, le=3600)

    @field_validator("wireguard_dns")
    @classmethod
    def _check_dns(cls, value: str) -> str:
        return _address_list(value, "an IP address", networks=False)

    @field_validator("wireguard_allowed_ips")
    @classmethod
    def _check_allowed(cls, value: str) -> str:
        checked = _address_list(value, "an IP network such as 0.0.0.0/0", networks=True)
        if not checked:
            raise ValueError("at least one network is needed")
        return checked

    def split(self, value: str) -> list[str]:
        return [item.strip() for item in value.split(",") if item.strip()]


class HubSettings(_Section):
    enabled: bool = True
    poll_seconds: float = Field(default=1.0, ge=0.05, le=60.0)
    resync_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)
    usage_seconds: float = Field(default=30.0, ge=0.1, le=3600.0)
    metrics_seconds: float = Field(default=60.0, ge=0.1, le=3600.0)
    rpc_timeout_seconds: float = Field(default=10.0, ge=0.5, le=300.0)
    max_backoff_seconds: float = Field(default=30.0, ge=0.5, le=3600.0)
    stats_retention_days: int = Field(default=30, ge=1, le=3650)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        # Other programs' keys may share the .env file (docker compose); our own misspelled
        # VPNBOT_* keys are caught by check_unknown_env, which names them correctly.
        extra="ignore",
        validate_default=True,
    )

    env: Literal["dev", "production"] = "dev"
    data_dir: Path = Path("data")
    default_currency: str = "RUB"

    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    telegram: TelegramSettings = TelegramSettings()
    security: SecuritySettings = SecuritySettings()
    redis: RedisSettings = RedisSettings()
    payments: PaymentSettings = PaymentSettings()
    referral: ReferralSettings = ReferralSettings()
    log: LogSettings = LogSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    enrollment: EnrollmentSettings = EnrollmentSettings()
    hub: HubSettings = HubSettings()
    vpn: VpnSettings = VpnSettings()

    @field_validator("default_currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        from controller.domain.errors import InvalidInput
        from controller.domain.money import normalize_currency

        try:
            return normalize_currency(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    @cached_property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'vpnbot.db').resolve()}"


def _secret_values(settings: Settings) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in ("client_bot_token", "support_bot_token", "admin_bot_token"):
        secret: SecretStr | None = getattr(settings.telegram, name)
        if secret is not None:
            values[env_name("telegram", name)] = secret.get_secret_value()
    if settings.security.master_key is not None:
        values[env_name("security", "master_key")] = settings.security.master_key.get_secret_value()
    if settings.database.url is not None:
        password = make_url(settings.database.url).password
        if password is not None:
            values[env_name("database", "url") + " (its password)"] = str(password)
    return values


# Kubernetes gives every pod variables for each Service in its namespace: for a Service named
# "vpnbot" or "vpnbot-redis", VPNBOT_SERVICE_HOST, VPNBOT_REDIS_SERVICE_PORT,
# VPNBOT_REDIS_PORT=tcp://10.0.0.5:6379, VPNBOT_REDIS_PORT_6379_TCP_ADDR... They are not ours
# and must not stop start-up. Our own keys never contain a single "_PORT"/"_SERVICE_" part
# like these, and a bare "..._PORT" is only taken for a service link when its value looks
# like one (so a typo such as VPNBOT_API_PORT=9000 is still refused).
_K8S_NAMED = re.compile(
    r"^VPNBOT(_[A-Z0-9]+)*_(SERVICE_(HOST|PORT)(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)$"
)
_K8S_PORT = re.compile(r"^VPNBOT(_[A-Z0-9]+)*_PORT$")
_K8S_PORT_VALUE = re.compile(r"^(tcp|udp|sctp)://")


def _is_kubernetes_service_link(key: str, value: str | None) -> bool:
    if "__" in key:
        return False
    if _K8S_NAMED.match(key):
        return True
    return bool(_K8S_PORT.match(key) and value and _K8S_PORT_VALUE.match(value))


def check_unknown_env(names: Iterable[str] | Mapping[str, str | None], source: str = "") -> None:
    """Refuse ``VPNBOT_*`` names that match no setting (a typo would silently do nothing).

    Names are case-insensitive, as pydantic-settings reads them.
    """
    known_top = set(Settings.model_fields)
    where = f" in {source}" if source else ""
    for name in names:
        key = name.upper()
        if (
            not key.startswith(ENV_PREFIX)
            or key.startswith(ENV_PREFIX + "TEST_")
            or _is_kubernetes_service_link(
                key, names.get(name) if isinstance(names, Mapping) else None
            )
        ):
            continue
        parts = key[len(ENV_PREFIX) :].lower().split(NESTED_DELIMITER)
        top = parts[0]
        if top not in known_top:
            raise SettingsError(
                f"unknown setting {name}{where}: see .env.example for the variables"
            )
        annotation = Settings.model_fields[top].annotation
        if len(parts) > 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise SettingsError(
                    f"unknown setting {name}{where}: {env_name(top)} has no sub-keys"
                )
            if parts[1] not in annotation.model_fields or len(parts) > 2:
                raise SettingsError(
                    f"unknown setting {name}{where}: see .env.example for the variables"
                )


def load_settings(**overrides: Any) -> Settings:
    """Build and check the settings; raise :class:`SettingsError` naming the bad variable."""
    check_unknown_env(os.environ)
    env_file = Path(str(Settings.model_config.get("env_file") or ".env"))
    if env_file.is_file():
        try:
            names = dotenv_values(env_file, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read {env_file}: {exc}") from None
        check_unknown_env(names, str(env_file))
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [part for part in first["loc"] if isinstance(part, str | int)]
        raise SettingsError(f"invalid setting {env_name(*loc)}: {first['msg']}") from None
    except PydanticSettingsError as exc:  # e.g. a section given as a value that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = env_name(found.group(1)) if found else "in the environment or .env"
        raise SettingsError(
            f"invalid setting {name}: not valid JSON (or set its keys one by one, "
            f"e.g. {env_name(found.group(1) if found else 'api', '...')})"
        ) from None
    if not settings.is_dev:
        for name, value in _secret_values(settings).items():
            if is_placeholder(value):
                raise SettingsError(
                    f"invalid setting {name}: a placeholder value is refused outside dev mode"
                )
    return settings


def _decode_master_key(raw: str, source: str) -> bytes:
    # Accept both alphabets (`vpnbot keygen` prints URL-safe, `openssl rand -base64` standard).
    text = raw.strip().rstrip("=").replace("+", "-").replace("/", "_")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"invalid setting {source}: not base64") from None
    if len(key) != MASTER_KEY_BYTES:
        raise SettingsError(
            f"invalid setting {source}: must be base64 of {MASTER_KEY_BYTES} bytes "
            f"(got {len(key)}); make one with: vpnbot keygen"
        )
    return key


def generate_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode().rstrip("=")


def _create_key_file(path: Path) -> None:
    """Write a new key file atomically: complete and private, or not there at all.

    The key goes to a temporary file that is then hard-linked into place, so a process
    starting at the same moment never reads a half-written key, and of two racing starters
    the first link wins and both use that key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(generate_master_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process was first: use its key
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # No hard links here (vfat, some network mounts): exclusive create instead;
            # readers wait for the content (see _read_key_file).
            with contextlib.suppress(FileExistsError):
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd2, "w", encoding="ascii") as handle:
                    handle.write(temporary.read_text(encoding="ascii"))
    finally:
        temporary.unlink(missing_ok=True)


def load_master_key(settings: Settings) -> bytes:
    """The key that encrypts secrets at rest.

    Production requires it explicitly (``VPNBOT_SECURITY__MASTER_KEY`` or a key file); in dev
    mode it is generated into the data directory on first start and reused afterwards.
    """
    if settings.security.master_key is not None:
        return _decode_master_key(
            settings.security.master_key.get_secret_value(), env_name("security", "master_key")
        )
    if settings.security.master_key_file is not None:
        path = settings.security.master_key_file
        try:
            raw = path.read_text(encoding="ascii")
        except OSError as exc:
            raise SettingsError(
                f"invalid setting {env_name('security', 'master_key_file')}: cannot read "
                f"{path}: {exc.strerror}"
            ) from None
        return _decode_master_key(raw, env_name("security", "master_key_file"))
    if not settings.is_dev:
        raise SettingsError(
            f"missing setting {env_name('security', 'master_key')}: production needs an explicit "
            "master key (make one with: vpnbot keygen)"
        )
    path = settings.data_dir / MASTER_KEY_FILE_NAME
    if not path.exists():
        _create_key_file(path)
    return _decode_master_key(_read_key_file(path), str(path))


def _read_key_file(path: Path) -> str:
    """The key file's text; a file another process is still writing (only possible where the
    atomic hard-link creation is unavailable) is waited for briefly."""
    for _ in range(50):
        text = path.read_text(encoding="ascii")
        if text.strip() or time.time() - path.stat().st_mtime > 5:
            return text
        time.sleep(0.05)
    return text
