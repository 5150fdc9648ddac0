"""The composition root: settings in, a wired container of real adapters out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.crypto import SecretBox
from controller.db import migrate
from controller.db.engine import create_engine, create_session_factory
from controller.db.uow import UnitOfWorkFactory, make_uow_factory
from controller.services import Services, build_services
from controller.settings import Settings, load_master_key

log = structlog.get_logger(__name__)


class SchemaOutOfDateError(RuntimeError):
    pass


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    uow_factory: UnitOfWorkFactory
    services: Services
    secrets: SecretBox


async def prepare_database(engine: AsyncEngine, *, auto_migrate: bool) -> None:
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
        uow_factory = make_uow_factory(session_factory)
        yield Container(
            settings=settings,
            engine=engine,
            session_factory=session_factory,
            uow_factory=uow_factory,
            services=build_services(uow_factory),
            secrets=secrets,
        )
    finally:
        await engine.dispose()
