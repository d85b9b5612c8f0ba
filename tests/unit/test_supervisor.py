"""The supervisor restarts a routine that raises, with growing delays, and never its siblings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from offload import metrics
from offload.testing import FakeClock, RecordingSleep
from offload.worker.routine import Periodic
from offload.worker.supervisor import Backoff, Supervisor


class Flaky:
    """A routine that raises on each of its first `failures` runs, then works until stopped."""

    def __init__(self, name: str, failures: int, on_run: Callable[[int], None] | None = None):
        self.name = name
        self.failures = failures
        self.on_run = on_run or (lambda run: None)
        self.runs = 0
        self.steady = asyncio.Event()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        self.on_run(self.runs)
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        self.steady.set()
        await self._stop.wait()

    def stop(self, deadline: float) -> None:
        self._stop.set()


class Stubborn:
    """A routine that ignores stop() and only ends when cancelled."""

    name = "stubborn"

    async def run(self) -> None:
        await asyncio.sleep(3600)

    def stop(self, deadline: float) -> None:
        pass


class ScaledSleep(RecordingSleep):
    """Records each requested delay and really waits a thousandth of it."""

    async def __call__(self, seconds: float) -> None:
        await super().__call__(seconds)
        await asyncio.sleep(seconds / 1000)


class Parked:
    """A sleep that never ends on its own (only stop() ends it); tells when it began."""

    def __init__(self) -> None:
        self.began = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.began.set()
        await asyncio.Event().wait()


def restarts(name: str) -> float:
    """The restarts of `name` as /metrics shows them."""
    sample = metrics.REGISTRY.get_sample_value("offload_routine_restarts_total", {"routine": name})
    return sample or 0


async def test_a_routine_that_always_raises_is_restarted_with_growing_delay_while_its_sibling_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        ticks += 1

    ticks_at_run: list[int] = []
    flaky = Flaky("flaky-a", failures=8, on_run=lambda run: ticks_at_run.append(ticks))
    sibling = Periodic("sibling-a", 0.002, tick)
    sleep = ScaledSleep()
    before = restarts("flaky-a")
    supervisor = Supervisor([flaky, sibling], backoff=Backoff(first=1, cap=60), sleep=sleep)

    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(flaky.steady.wait(), 5)

    assert sleep.delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert restarts("flaky-a") - before == 8
    assert restarts("sibling-a") == 0
    # The sibling kept ticking through the whole crash loop.
    assert ticks_at_run[-1] > ticks_at_run[3] > ticks_at_run[0]
    assert supervisor.status() == {"flaky-a": "running", "sibling-a": "running"}
    failures = [r for r in caplog.records if "flaky-a" in r.getMessage()]
    assert len(failures) == 8
    assert "routine flaky-a raised after" in failures[0].getMessage()
    assert "restarting it in 1.0s" in failures[0].getMessage()
    assert "Traceback" in caplog.text
    assert "RuntimeError: boom 8" in caplog.text

    await supervisor.stop(1.0)
    await asyncio.wait_for(running, 1)
    assert supervisor.status() == {"flaky-a": "stopped", "sibling-a": "stopped"}


async def test_the_delay_starts_over_once_the_routine_ran_fine_for_a_while() -> None:
    clock = FakeClock()
    backoff = Backoff(first=1, cap=60, healthy_after=60)

    def run_long_on_the_fourth(run: int) -> None:
        if run == 4:
            clock.advance(backoff.healthy_after)

    flaky = Flaky("flaky-b", failures=6, on_run=run_long_on_the_fourth)
    sleep = RecordingSleep()
    supervisor = Supervisor([flaky], backoff=backoff, clock=clock, sleep=sleep)

    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(flaky.steady.wait(), 5)
    await supervisor.stop(1.0)
    await running

    assert sleep.delays == [1, 2, 4, 1, 2, 4]


async def test_stop_interrupts_a_backoff_and_cancels_a_routine_that_ignores_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky("flaky-c", failures=1)
    parked = Parked()
    supervisor = Supervisor([flaky, Stubborn()], sleep=parked)
    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(parked.began.wait(), 5)
    assert supervisor.status() == {"flaky-c": "backing-off", "stubborn": "running"}

    started = time.monotonic()
    await supervisor.stop(0.2)
    await asyncio.wait_for(running, 1)

    assert 0.2 <= time.monotonic() - started < 1.0
    assert supervisor.status() == {"flaky-c": "stopped", "stubborn": "stopped"}
    assert "routine stubborn did not stop within 0.2s; cancelling it" in caplog.text


async def test_a_routine_that_returns_on_its_own_is_not_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1

    class Once:
        name = "once"

        async def run(self) -> None:
            await once()

        def stop(self, deadline: float) -> None:
            pass

    supervisor = Supervisor([Once()])
    await asyncio.wait_for(supervisor.run(), 1)

    assert calls == 1
    assert supervisor.status() == {"once": "finished"}
    assert restarts("once") == 0
    assert "routine once finished on its own" in caplog.text


async def test_periodic_calls_its_function_at_once_then_after_each_interval() -> None:
    sleep = RecordingSleep()
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            periodic.stop(1.0)

    periodic = Periodic("every-half-second", 0.5, work, sleep=sleep)
    await asyncio.wait_for(periodic.run(), 1)

    assert calls == 3
    assert sleep.delays == [0.5, 0.5]


def test_routine_names_must_be_unique() -> None:
    async def nothing() -> None:
        pass

    with pytest.raises(ValueError, match="routine names must be unique; repeated: twice"):
        Supervisor([Periodic("twice", 1, nothing), Periodic("twice", 1, nothing)])
