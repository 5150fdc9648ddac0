"""The controller's HTTP application."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from controller import __version__
from controller.api.deps import ContainerDep
from controller.api.errors import install_error_handlers
from controller.bootstrap import Container

log = structlog.get_logger(__name__)


def create_app(container: Container) -> FastAPI:
    app = FastAPI(
        title="vpnbot controller",
        version=__version__,
        docs_url=None if not container.settings.is_dev else "/docs",
        redoc_url=None,
    )
    app.state.container = container
    install_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    async def healthz(container: ContainerDep) -> JSONResponse:
        """Liveness and database reachability."""
        body: dict[str, Any] = {"status": "ok", "version": __version__, "database": "ok"}
        try:
            async with container.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
        except Exception as exc:  # report, don't crash: this endpoint is for monitors
            log.warning("healthz_database_failed", error=str(exc))
            body.update(status="error", database="unreachable")
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    return app
