"""``vpnbot run``: one asyncio process with the HTTP API, the HTTPS enrollment listener, the
hub that drives node agents, the scheduler, and the Telegram bots whose tokens are set."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import structlog
import uvicorn

from common.tasks import TaskSet
from controller import __version__
from controller.api.app import create_app
from controller.api.enroll import create_enrollment_app
from controller.bootstrap import Container, open_container
from controller.db.base import utcnow
from controller.nodes.ca import ensure_ca, listener_certificate
from controller.nodes.hub import Hub
from controller.scheduler import build_scheduler
from controller.services.nodes import enrollment_url
from controller.settings import Settings

log = structlog.get_logger(__name__)

Background = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


class _Server(uvicorn.Server):
    """uvicorn, plus what runs beside the API.

    Background work (enrollment listener, hub, scheduler) starts only once the server is
    listening, so a start-up failure (port in use) never runs a job, and it is cancelled
    before the server finishes shutting down.

    A stop requested by SIGINT/SIGTERM is a normal stop: uvicorn would re-raise the signal
    after its graceful shutdown so the process dies "by signal"; here it exits 0.
    """

    def __init__(self, config: uvicorn.Config, background: list[Background]) -> None:
        super().__init__(config)
        self._background = background
        self._tasks = TaskSet()
        self.failure: BaseException | None = None

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
        if not self.started:
            return
        for name, factory in self._background:
            self._tasks.spawn(self._guard(name, factory), name=name)

    async def _guard(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        log.info(f"{name}_started")
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # One component failing must not leave a half-working controller running: stop,
            # and make `vpnbot run` fail with it.
            log.exception("component_failed", component=name)
            if self.failure is None:
                self.failure = exc
            self.should_exit = True

    async def stop_background(self) -> None:
        for task in await self._tasks.cancel_all():
            log.info(f"{task.get_name()}_stopped")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.stop_background()
        await super().shutdown(sockets)


class _QuietServer(uvicorn.Server):
    """A second listener in the same process: the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _enrollment_listener(container: Container) -> None:
    settings = container.settings
    ca = await ensure_ca(container.uow_factory, container.secrets)
    url = enrollment_url(settings.enrollment)
    # `vpnbot node add` in another shell may lack this process's settings: it puts the URL
    # the listener really serves into its tokens.
    await container.services.nodes.publish_url(url)
    cert, key = listener_certificate(ca, url, settings.data_dir / "enrollment")
    server = _QuietServer(
        uvicorn.Config(
            create_enrollment_app(container),
            host=settings.enrollment.host,
            port=settings.enrollment.port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
    )
    log.info(
        "enrollment_listening",
        url=url,
        host=settings.enrollment.host,
        port=settings.enrollment.port,
    )
    try:
        await server.serve()
    except asyncio.CancelledError:
        # Stopped by the main server: close the socket, let open requests finish.
        server.should_exit = True
        await server.shutdown()
        raise
    except SystemExit:
        raise OSError(
            f"could not listen for enrollment on {settings.enrollment.host}:"
            f"{settings.enrollment.port} (VPNBOT_ENROLLMENT__PORT)"
        ) from None
    finally:
        server.should_exit = True


def build_hub(container: Container) -> Hub:
    return Hub(
        container.uow_factory,
        container.secrets,
        container.settings.hub,
        utcnow,
        events=container.events,
        engine=container.engine,
    )


async def serve(settings: Settings, *, host: str, port: int) -> None:
    async with open_container(settings) as container:
        background: list[Background] = []
        if settings.enrollment.enabled:
            background.append(("enrollment", lambda: _enrollment_listener(container)))
        if settings.hub.enabled:
            hub = build_hub(container)
            background.append(("hub", hub.run))
        if settings.scheduler.enabled:
            scheduler = build_scheduler(settings, container.services)
            if scheduler.jobs:
                background.append(("scheduler", scheduler.run))
        app = create_app(container)
        if settings.telegram.client_bot_token is not None:
            # Imported only when a bot runs: aiogram takes seconds to import.
            from bots.common.webhook import mount
            from bots.runtime import build_bots

            bots = build_bots(container)
            mount(app, bots)
            for name, bot in bots.items():
                background.append((f"{name}_bot", bot.run))
        config = uvicorn.Config(
            app,
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
        server = _Server(config, background)
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits on start-up failures (port in use...)
            if not server.started:
                raise OSError(f"could not listen on {host}:{port} (see the log above)") from None
            raise
        finally:
            await server.stop_background()
        if server.failure is not None:
            failure = server.failure
            if isinstance(failure, Exception):
                raise failure
            raise RuntimeError(f"a component stopped: {failure!r}")
        log.info("controller_stopped")
