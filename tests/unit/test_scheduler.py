"""The periodic job scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import AsyncIterator

import pytest

from controller.scheduler import Job, Scheduler, build_scheduler
from controller.settings import load_settings

WAIT = 2.0  # upper bound for anything that should happen within a few milliseconds


class Counter:
    """A job that counts its calls and lets a test wait for the n-th one."""

    def __init__(self, fail_first: int = 0, fail_always: bool = False) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.fail_always = fail_always
        self._reached: dict[int, asyncio.Event] = {}

    async def __call__(self) -> int:
        self.calls += 1
        for target, event in self._reached.items():
            if self.calls >= target:
                event.set()
        if self.fail_always or self.calls <= self.fail_first:
            raise RuntimeError(f"job failure #{self.calls}")
        return 0

    async def wait_for_calls(self, count: int) -> None:
        event = self._reached.setdefault(count, asyncio.Event())
        if self.calls >= count:
            event.set()
        await asyncio.wait_for(event.wait(), WAIT)


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- registration ---------------------------------------------------------------------------


async def _noop() -> None:
    return None


def test_every_registers_jobs_in_order() -> None:
    scheduler = Scheduler()
    scheduler.every("a", 1.5, _noop)
    scheduler.every("b", 60, _noop)
    assert scheduler.jobs == (Job("a", 1.5, _noop), Job("b", 60, _noop))
    assert scheduler.runs == {}


def test_jobs_cannot_be_changed_through_the_property() -> None:
    scheduler = Scheduler()
    scheduler.every("a", 1, _noop)
    assert isinstance(scheduler.jobs, tuple)
    with pytest.raises(AttributeError):
        scheduler.jobs[0].interval_seconds = 5  # type: ignore[misc]


@pytest.mark.parametrize("interval", [0, 0.0, -1, -0.01, -math.inf])
def test_non_positive_interval_is_refused(interval: float) -> None:
    scheduler = Scheduler()
    with pytest.raises(ValueError, match="positive"):
        scheduler.every("bad", interval, _noop)
    assert scheduler.jobs == ()


def test_nan_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Scheduler().every("nan", math.nan, _noop)


# --- running --------------------------------------------------------------------------------


async def test_run_without_jobs_returns_at_once() -> None:
    await asyncio.wait_for(Scheduler().run(), WAIT)


async def test_jobs_run_repeatedly_at_their_interval() -> None:
    fast, slow = Counter(), Counter()
    scheduler = Scheduler()
    scheduler.every("fast", 0.01, fast)
    scheduler.every("slow", 30, slow)
    async with running(scheduler) as task:
        await fast.wait_for_calls(5)
        assert not task.done()
    # The first run is immediate; the next one of "slow" is 30 s away.
    assert slow.calls == 1
    assert fast.calls >= 5
    assert scheduler.runs["slow"] == 1
    assert scheduler.runs["fast"] == fast.calls


async def test_interval_separates_runs() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def job() -> None:
        times.append(loop.time())
        if len(times) >= 4:
            done.set()

    scheduler = Scheduler()
    scheduler.every("timed", 0.02, job)
    async with running(scheduler):
        await asyncio.wait_for(done.wait(), WAIT)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.015 for gap in gaps), gaps


async def test_a_failing_job_is_retried_and_counted_only_on_success() -> None:
    flaky = Counter(fail_first=3)
    scheduler = Scheduler()
    scheduler.every("flaky", 0.01, flaky)
    async with running(scheduler) as task:
        await flaky.wait_for_calls(6)
        assert not task.done()
    assert flaky.calls >= 6
    assert scheduler.runs["flaky"] == flaky.calls - 3


async def test_a_job_that_always_fails_does_not_stop_the_others() -> None:
    broken, healthy = Counter(fail_always=True), Counter()
    scheduler = Scheduler()
    scheduler.every("broken", 0.01, broken)
    scheduler.every("healthy", 0.01, healthy)
    async with running(scheduler) as task:
        await broken.wait_for_calls(5)
        await healthy.wait_for_calls(5)
        assert not task.done()
    assert "broken" not in scheduler.runs
    assert scheduler.runs["healthy"] >= 5


async def test_a_job_returning_a_result_keeps_running() -> None:
    results: list[list[int]] = []

    async def sweep() -> list[int]:
        results.append([1, 2])
        return [1, 2]

    scheduler = Scheduler()
    scheduler.every("sweep", 0.01, sweep)
    async with running(scheduler):
        for _ in range(400):
            if len(results) >= 3:
                break
            await asyncio.sleep(0.005)
    assert len(results) >= 3
    assert scheduler.runs["sweep"] >= 3


async def test_cancelling_run_stops_every_job() -> None:
    first, second = Counter(), Counter()
    in_flight_cancelled = asyncio.Event()
    long_started = asyncio.Event()

    async def long_job() -> None:
        long_started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            in_flight_cancelled.set()
            raise

    scheduler = Scheduler()
    scheduler.every("first", 0.01, first)
    scheduler.every("second", 0.01, second)
    scheduler.every("long", 0.01, long_job)
    task = asyncio.create_task(scheduler.run())
    await first.wait_for_calls(3)
    await second.wait_for_calls(3)
    await asyncio.wait_for(long_started.wait(), WAIT)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert task.cancelled()
    # A job in the middle of a run is cancelled too.
    assert in_flight_cancelled.is_set()
    # No job task outlives the scheduler...
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("job:") and not t.done()]
    assert leftovers == []
    # ...and nothing runs any more.
    calls = (first.calls, second.calls)
    await asyncio.sleep(0.05)
    assert (first.calls, second.calls) == calls


# --- build_scheduler ------------------------------------------------------------------------


class FakeSubscriptions:
    """Stands in for SubscriptionService: expire_due() returns the ids that expired."""

    def __init__(self, batches: list[list[int]]) -> None:
        self._batches = batches
        self.calls = 0

    async def expire_due(self) -> list[int]:
        self.calls += 1
        return self._batches.pop(0) if self._batches else []


class FakeServices:
    def __init__(self, subscriptions: FakeSubscriptions) -> None:
        self.subscriptions = subscriptions


@pytest.mark.usefixtures("clean_env")
async def test_build_scheduler_registers_the_expiry_sweep(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VPNBOT_SCHEDULER__EXPIRY_SWEEP_SECONDS", "7.5")
    settings = load_settings(data_dir=tmp_path)
    subscriptions = FakeSubscriptions([[3, 5], []])
    scheduler = build_scheduler(settings, FakeServices(subscriptions))  # type: ignore[arg-type]

    assert [job.name for job in scheduler.jobs] == ["expiry_sweep"]
    (job,) = scheduler.jobs
    assert job.interval_seconds == 7.5
    assert await job.func() == [3, 5]
    assert await job.func() == []
    assert subscriptions.calls == 2


@pytest.mark.usefixtures("clean_env")
async def test_built_scheduler_sweeps_once_then_waits_for_the_interval(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir=tmp_path)
    assert settings.scheduler.expiry_sweep_seconds == 60.0
    subscriptions = FakeSubscriptions([[1]])
    scheduler = build_scheduler(settings, FakeServices(subscriptions))  # type: ignore[arg-type]
    async with running(scheduler):
        for _ in range(200):
            if scheduler.runs.get("expiry_sweep"):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
    assert subscriptions.calls == 1
    assert scheduler.runs == {"expiry_sweep": 1}
