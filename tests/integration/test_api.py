"""The HTTP app: /healthz tells monitors whether the database answers."""

from __future__ import annotations

import os

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from controller import __version__
from controller.api.app import create_app
from controller.bootstrap import Container
from controller.crypto import SecretBox
from controller.db.engine import create_engine, create_session_factory
from controller.db.uow import make_uow_factory
from controller.services import build_services
from controller.settings import load_settings


def _container(engine: AsyncEngine) -> Container:
    uow_factory = make_uow_factory(create_session_factory(engine))
    return Container(
        settings=load_settings(),
        engine=engine,
        session_factory=create_session_factory(engine),
        uow_factory=uow_factory,
        services=build_services(uow_factory),
        secrets=SecretBox(os.urandom(32)),
    )


async def _get(container: Container, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://controller") as client:
        return await client.get(path)


@pytest.mark.usefixtures("clean_env")
async def test_healthz_ok(engine: AsyncEngine) -> None:
    response = await _get(_container(engine), "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__, "database": "ok"}


@pytest.mark.usefixtures("clean_env")
async def test_healthz_reports_an_unreachable_database() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        response = await _get(_container(engine), "/healthz")
    finally:
        await engine.dispose()
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
    assert response.json()["status"] == "error"
