"""Periodic jobs of the controller (expiry sweep now; billing and node jobs hook in later).

Each job runs in its own task inside one TaskGroup owned by :meth:`Scheduler.run`;
cancelling that task stops every job. A failing run is logged and retried at the next
interval; it never kills the other jobs. With several controller processes the scheduler
will be elected by a PostgreSQL advisory lock (see DESIGN.md, "Processes and scale").
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from controller.services import Services
from controller.settings import Settings

log = structlog.get_logger(__name__)

JobFunc = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval_seconds: float
    func: JobFunc


class Scheduler:
    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self.runs: dict[str, int] = {}

    def every(self, name: str, interval_seconds: float, func: JobFunc) -> None:
        if not (math.isfinite(interval_seconds) and interval_seconds > 0):
            raise ValueError("a job interval must be positive")
        self._jobs.append(Job(name, interval_seconds, func))

    @property
    def jobs(self) -> tuple[Job, ...]:
        return tuple(self._jobs)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for job in self._jobs:
                group.create_task(self._loop(job), name=f"job:{job.name}")

    async def _loop(self, job: Job) -> None:
        bound = log.bind(job=job.name)
        while True:
            try:
                result = await job.func()
                self.runs[job.name] = self.runs.get(job.name, 0) + 1
                if result:
                    bound.info("job_done", result=result)
            except Exception:
                bound.exception("job_failed")
            await asyncio.sleep(job.interval_seconds)


def build_scheduler(settings: Settings, services: Services) -> Scheduler:
    scheduler = Scheduler()

    async def expiry_sweep() -> list[int]:
        return await services.subscriptions.expire_due()

    scheduler.every("expiry_sweep", settings.scheduler.expiry_sweep_seconds, expiry_sweep)
    return scheduler
