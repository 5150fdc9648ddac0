"""``vpnbot run``: one asyncio process with the HTTP API and the scheduler (bots and the hub
join it in later issues)."""

from __future__ import annotations

import uvicorn
import structlog

from controller import __version__
from controller.api.app import create_app
from controller.bootstrap import open_container
from controller.scheduler import build_scheduler
from controller.settings import Settings

log = structlog.get_logger(__name__)


async def serve(settings: Settings, *, host: str, port: int) -> None:
    async with open_container(settings) as container:
        scheduler = build_scheduler(settings, container.services) if settings.scheduler.enabled else None
        app = create_app(container, scheduler)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # keep our structlog handlers
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        db = "sqlite" if container.engine.dialect.name == "sqlite" else container.engine.dialect.name
        log.info("controller_starting", version=__version__, host=host, port=port, database=db,
                 env=settings.env)
        await server.serve()
        log.info("controller_stopped")
