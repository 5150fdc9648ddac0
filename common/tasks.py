"""Owned background tasks: every task a component starts is started, and ended, through one set.

asyncio keeps only weak references to tasks, so a task nobody holds can vanish mid-flight, and a
task nobody cancels outlives the component that started it. Each component that runs work in
the background holds a :class:`TaskSet`: :meth:`~TaskSet.spawn` starts a task the set owns,
:meth:`~TaskSet.shield` runs work to its end even when its caller is cancelled, and
:meth:`~TaskSet.cancel_all` / :meth:`~TaskSet.drain` end them on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import structlog

T = TypeVar("T")

log = structlog.get_logger(__name__)


class TaskSet:
    """The background tasks of one component.

    A task that fails (rather than being cancelled) is logged once as ``background_task_failed``
    with its name, so an error in unattended work is never silent.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def shield(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end as an owned task, even if the caller is cancelled.

        For work that must not stop half-way (a database transaction, an apply to the VPN
        devices): the caller may go away, the work goes on, and :meth:`drain` waits for it.
        """
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        # Its caller gets its outcome: nothing to report here (the exception is fetched so
        # that a caller that went away leaves no "never retrieved" warning).
        task.add_done_callback(self._done_quietly)
        return await asyncio.shield(task)

    async def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel one task of the set and wait until it has ended."""
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def cancel_all(self) -> list[asyncio.Task[Any]]:
        """Cancel every task and wait until all have ended; returns them (e.g. to log names).

        Tasks spawned while the others are ending are cancelled too.
        """
        ended: list[asyncio.Task[Any]] = []
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            ended.extend(tasks)
            self._tasks.difference_update(tasks)
        return ended

    async def drain(self) -> None:
        """Wait, without cancelling, until every task (and any they start meanwhile) has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def _done_quietly(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background_task_failed", task=task.get_name(), exc_info=exc)
