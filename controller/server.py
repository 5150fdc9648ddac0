"""``vpnbot run``: one asyncio process with the HTTP API and the scheduler (bots and the hub
join it in later issues)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import structlog
import uvicorn

from controller import __version__
from controller.api.app import create_app
from controller.bootstrap import open_container
from controller.scheduler import build_scheduler
from controller.settings import Settings

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process dies "by
    signal". A stop requested by a signal is a normal stop for us: exit 0 after cleanup."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        stops = (signal.SIGINT, signal.SIGTERM)
        for sig in stops:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in stops:
                loop.remove_signal_handler(sig)


async def serve(settings: Settings, *, host: str, port: int) -> None:
    async with open_container(settings) as container:
        scheduler = (
            build_scheduler(settings, container.services) if settings.scheduler.enabled else None
        )
        config = uvicorn.Config(
            create_app(container, scheduler),
            host=host,
            port=port,
            log_config=None,  # keep our structlog handlers
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        log.info(
            "controller_starting",
            version=__version__,
            host=host,
            port=port,
            database=container.engine.dialect.name,
            env=settings.env,
        )
        server = _Server(config)
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits on start-up failures (port in use...)
            if not server.started:
                raise OSError(f"could not listen on {host}:{port} (see the log above)") from None
            raise
        log.info("controller_stopped")
