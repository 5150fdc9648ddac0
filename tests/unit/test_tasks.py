"""common.tasks.TaskSet: owned background tasks end when their owner says so, shielded work
outlives a cancelled caller, and a failure is reported."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from common.tasks import TaskSet


async def test_cancel_all_ends_every_task_and_those_spawned_while_ending() -> None:
    tasks = TaskSet()
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)
            if name == "a":  # starts more work while being cancelled
                tasks.spawn(forever("late"), name="late")

    first = tasks.spawn(forever("a"), name="a")
    tasks.spawn(forever("b"), name="b")
    await asyncio.sleep(0)

    stopped = await tasks.cancel_all()

    assert sorted(ended) == ["a", "b", "late"]
    assert sorted(t.get_name() for t in stopped) == ["a", "b", "late"]
    assert first.cancelled() and len(tasks) == 0


async def test_shielded_work_finishes_after_its_caller_is_cancelled() -> None:
    tasks = TaskSet()
    release = asyncio.Event()
    done: list[int] = []

    async def work() -> int:
        await release.wait()
        done.append(1)
        return 7

    caller = asyncio.create_task(tasks.shield(work()))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == [] and len(tasks) == 1  # still running, still owned

    release.set()
    await tasks.drain()
    assert done == [1] and len(tasks) == 0
    assert await tasks.shield(work()) == 7  # an uncancelled caller gets the result


async def test_a_failed_task_is_logged_once_and_a_shielded_failure_goes_to_its_caller() -> None:
    tasks = TaskSet()

    async def boom() -> None:
        raise RuntimeError("broken")

    with structlog.testing.capture_logs() as logs:
        failed = tasks.spawn(boom(), name="boom")
        await asyncio.gather(failed, return_exceptions=True)
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="broken"):
            await tasks.shield(boom())
    assert [(e["event"], e.get("task")) for e in logs] == [("background_task_failed", "boom")]


async def test_cancel_one_waits_for_it() -> None:
    tasks = TaskSet()
    cleaned = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)
            cleaned.set()

    task = tasks.spawn(slow_cleanup())
    await asyncio.sleep(0)
    await tasks.cancel(task)
    assert cleaned.is_set() and len(tasks) == 0
