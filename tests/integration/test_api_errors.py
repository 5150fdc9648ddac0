"""Domain errors leave every controller app as one status and one body, through real routes."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api.app import create_app
from controller.api.enroll import create_enrollment_app
from controller.bootstrap import Container
from controller.crypto import SecretBox
from controller.db.engine import create_session_factory
from controller.db.uow import UnitOfWorkFactory
from controller.domain.errors import PlanNotFound
from controller.services import build_services
from controller.services.nodes import NodeDraft
from controller.settings import EnrollmentSettings, load_settings
from node_agent.tls import make_csr, new_key
from proto.nodeapi.v1.enrollment import CA_PATH, ENROLL_PATH, EnrollmentToken
from tests.conftest import FakeClock
from tests.integration.factories import ADMIN

pytestmark = pytest.mark.usefixtures("clean_env")

REFUSED = {"error": "enrollment_refused", "detail": "unknown, used or expired enrollment token"}


def _container(engine: AsyncEngine, uow_factory: UnitOfWorkFactory, clock: FakeClock) -> Container:
    box = SecretBox(os.urandom(32))
    services = build_services(
        uow_factory,
        clock,
        secrets=box,
        enrollment=EnrollmentSettings(public_url="https://controller.example:8443"),
    )
    return Container(
        settings=load_settings(),
        engine=engine,
        session_factory=create_session_factory(engine),
        uow_factory=uow_factory,
        services=services,
        secrets=box,
    )


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://c")


async def test_enrollment_refusals_are_the_domain_errors_status_and_body(
    engine: AsyncEngine, uow_factory: UnitOfWorkFactory, clock: FakeClock, tmp_path: Path
) -> None:
    container = _container(engine, uow_factory, clock)
    async with _client(create_enrollment_app(container)) as client:
        no_ca = await client.get(CA_PATH)
        assert no_ca.status_code == 404
        assert no_ca.json() == {
            "error": "not_found",
            "detail": "no cluster CA yet: add a node first (vpnbot node add)",
        }

        forged = "f" * 43
        refused = await client.post(ENROLL_PATH, json={"token": forged, "csr": "a csr"})
        assert refused.status_code == 403
        assert refused.json() == REFUSED
        assert forged not in refused.text

        _, token_text = await container.services.nodes.add(
            ADMIN, NodeDraft(name="nl-1", address="203.0.113.1")
        )
        token = EnrollmentToken.decode(token_text)
        garbage = "GARBAGE-CSR-" + "z" * 40
        bad_csr = await client.post(ENROLL_PATH, json={"token": token.secret, "csr": garbage})
        assert bad_csr.status_code == 400
        assert bad_csr.json()["error"] == "invalid_input"
        assert set(bad_csr.json()) == {"error", "detail"}
        assert garbage not in bad_csr.text and token.secret not in bad_csr.text

        # The token survived the bad CSR: the right CSR still enrolls.
        csr = make_csr(new_key(), token.node_id).decode()
        enrolled = await client.post(ENROLL_PATH, json={"token": token.secret, "csr": csr})
        assert enrolled.status_code == 200
        assert enrolled.json()["node_id"] == token.node_id


async def test_an_invalid_body_is_422_without_echoing_it(
    engine: AsyncEngine, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    container = _container(engine, uow_factory, clock)
    sentinel = "ECHO-" + "q" * 200  # longer than a token may be
    async with _client(create_enrollment_app(container)) as client:
        response = await client.post(
            ENROLL_PATH, json={"token": sentinel, "csr": "c", "ECHO-extra-field": sentinel}
        )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert set(body) == {"error", "detail"}
    assert "token" in body["detail"] and "unexpected field" in body["detail"]
    assert "ECHO" not in response.text


async def test_the_main_app_maps_domain_errors_too(
    engine: AsyncEngine, uow_factory: UnitOfWorkFactory, clock: FakeClock
) -> None:
    app = create_app(_container(engine, uow_factory, clock))

    @app.get("/raises")
    async def raises() -> None:
        raise PlanNotFound("no such plan")

    async with _client(app) as client:
        response = await client.get("/raises")
    assert response.status_code == 404
    assert response.json() == {"error": "plan_not_found", "detail": "no such plan"}
