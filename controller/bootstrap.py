"""The composition root: settings in, a wired container of real adapters out."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.crypto import DecryptionError, SecretBox
from controller.db import migrate
from controller.db.engine import create_engine, create_session_factory, ping
from controller.db.uow import NodeEvents, UnitOfWorkFactory, make_uow_factory
from controller.nodes.issuer import NodeIssuer
from controller.services import Services, build_services
from controller.settings import Settings, SettingsError, load_master_key

log = structlog.get_logger(__name__)


class SchemaOutOfDateError(RuntimeError):
    pass


class MasterKeyMismatchError(SettingsError):
    """The configured master key is not the one the database's secrets are encrypted with."""


KEY_CHECK_SETTING = "security.master_key_check"
_KEY_CHECK_CONTEXT = b"vpnbot:master-key-check"
_KEY_CHECK_PLAINTEXT = b"vpnbot master key check v1"


async def verify_master_key(uow_factory: UnitOfWorkFactory, box: SecretBox) -> None:
    """Refuse to start with a master key other than the database's.

    The first start stores a small AES-GCM blob in app settings; later starts must decrypt it.
    Without this, a mistyped production key, or a dev key generated afresh in another
    working directory, would only show up when a client's stored secrets fail to decrypt.
    """
    async with uow_factory() as uow:
        blob = box.encrypt(_KEY_CHECK_PLAINTEXT, _KEY_CHECK_CONTEXT)
        # Insert-only: of several first starts at once exactly one stores its check, and the
        # others then verify against it (never overwrite it).
        if await uow.app_settings.insert_if_absent(
            KEY_CHECK_SETTING, base64.b64encode(blob).decode()
        ):
            await uow.commit()
            return
    async with uow_factory() as uow:
        row = await uow.app_settings.get(KEY_CHECK_SETTING)
        assert row is not None, "the master key check vanished"
        try:
            box.decrypt(base64.b64decode(row.value), _KEY_CHECK_CONTEXT)
        except (DecryptionError, ValueError, TypeError):
            raise MasterKeyMismatchError(
                "the master key (VPNBOT_SECURITY__MASTER_KEY, or master.key in "
                "VPNBOT_DATA_DIR) is not the key this database was set up with; "
                "start with the original key"
            ) from None


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    uow_factory: UnitOfWorkFactory
    services: Services
    secrets: SecretBox
    events: NodeEvents = field(default_factory=NodeEvents)


async def prepare_database(engine: AsyncEngine, *, auto_migrate: bool) -> None:
    await ping(engine)
    if auto_migrate:
        await migrate.upgrade(engine)
    elif not await migrate.is_up_to_date(engine):
        raise SchemaOutOfDateError(
            "the database schema is not up to date: run `vpnbot db upgrade` first"
        )


@asynccontextmanager
async def open_container(
    settings: Settings, *, auto_migrate: bool | None = None
) -> AsyncIterator[Container]:
    secrets = SecretBox(load_master_key(settings))
    engine = create_engine(
        settings.database_url, echo=settings.database.echo, pool_size=settings.database.pool_size
    )
    try:
        await prepare_database(
            engine,
            auto_migrate=settings.database.auto_migrate if auto_migrate is None else auto_migrate,
        )
        session_factory = create_session_factory(engine)
        events = NodeEvents()
        uow_factory = make_uow_factory(session_factory, events)
        await verify_master_key(uow_factory, secrets)
        yield Container(
            settings=settings,
            engine=engine,
            session_factory=session_factory,
            uow_factory=uow_factory,
            services=build_services(
                uow_factory,
                secrets=secrets,
                enrollment=settings.enrollment,
                vpn=settings.vpn,
                issuer=NodeIssuer(uow_factory, secrets),
                payments=settings.payments,
                referral=settings.referral,
            ),
            secrets=secrets,
            events=events,
        )
    finally:
        await engine.dispose()
