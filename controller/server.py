"""``vpnbot run``: one asyncio process with the HTTP API and the scheduler (bots and the hub
join it in later issues)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from controller import __version__
from controller.api.app import create_app
from controller.bootstrap import open_container
from controller.scheduler import Scheduler, build_scheduler
from controller.settings import Settings

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, plus what runs beside the API.

    Background work (the scheduler now; bots and the hub later) starts only once the server
    is listening, so a start-up failure (port in use) never runs a job, and it is cancelled
    before the server finishes shutting down.

    A stop requested by SIGINT/SIGTERM is a normal stop: uvicorn would re-raise the signal
    after its graceful shutdown so the process dies "by signal"; here it exits 0.
    """

    def __init__(self, config: uvicorn.Config, scheduler: Scheduler | None) -> None:
        super().__init__(config)
        self._scheduler = scheduler
        self._scheduler_task: asyncio.Task[None] | None = None

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

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._scheduler is not None and self._scheduler.jobs:
            self._scheduler_task = asyncio.create_task(self._scheduler.run(), name="scheduler")
            log.info("scheduler_started", jobs=[job.name for job in self._scheduler.jobs])

    async def stop_background(self) -> None:
        task, self._scheduler_task = self._scheduler_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("scheduler_stopped")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.stop_background()
        await super().shutdown(sockets)


async def serve(settings: Settings, *, host: str, port: int) -> None:
    async with open_container(settings) as container:
        scheduler = (
            build_scheduler(settings, container.services) if settings.scheduler.enabled else None
        )
        config = uvicorn.Config(
            create_app(container),
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
        server = _Server(config, scheduler)
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits on start-up failures (port in use...)
            if not server.started:
                raise OSError(f"could not listen on {host}:{port} (see the log above)") from None
            raise
        finally:
            await server.stop_background()
        log.info("controller_stopped")
