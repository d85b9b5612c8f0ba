"""Routines: the long-running pieces a worker job is made of, each run until asked to stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol

from offload.clock import Sleeper, real_sleep
from offload.queue.consumer import Consumer


class Routine(Protocol):
    """One named, long-running task of a worker job; the supervisor restarts it if it raises."""

    name: str

    async def run(self) -> None:
        """Work until stop() is called, then return; raising asks for a restart."""
        ...

    def stop(self, deadline: float) -> None:
        """Finish what is under way within `deadline` seconds and make run() return."""
        ...


async def pause(sleep: Sleeper, seconds: float, stopping: asyncio.Event) -> None:
    """Wait `seconds` with `sleep`, or less if `stopping` is set meanwhile."""
    if stopping.is_set():
        return
    nap = asyncio.ensure_future(sleep(seconds))
    wake = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({nap, wake}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        nap.cancel()
        wake.cancel()
        await asyncio.gather(nap, wake, return_exceptions=True)


class Periodic:
    """Calls an async function, then waits `interval`, again and again until stopped."""

    def __init__(
        self,
        name: str,
        interval: timedelta | float,
        fn: Callable[[], Awaitable[None]],
        *,
        sleep: Sleeper = real_sleep,
    ) -> None:
        self.name = name
        self.interval = interval.total_seconds() if isinstance(interval, timedelta) else interval
        self.fn = fn
        self._sleep = sleep
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Call the function at once and then every interval; an exception propagates."""
        while not self._stopping.is_set():
            await self.fn()
            await pause(self._sleep, self.interval, self._stopping)

    def stop(self, deadline: float) -> None:
        """Let the pass under way finish, then return from run()."""
        self._stopping.set()


class ConsumerRoutine:
    """Runs a record-queue consumer; a stop lets its running jobs drain before they go back."""

    # Part of the stop deadline kept for handing undrained jobs back to the queue, so the
    # supervisor does not cancel the consumer while it is still releasing them.
    DRAIN_SHARE = 0.8

    def __init__(self, name: str, build: Callable[[], Consumer]) -> None:
        self.name = name
        self._build = build
        self._consumer: Consumer | None = None
        self._drain: float | None = None

    async def run(self) -> None:
        """Build a fresh consumer (a restart must not inherit a broken one) and run it."""
        if self._drain is not None:
            return
        self._consumer = self._build()
        await self._consumer.run()

    def stop(self, deadline: float) -> None:
        """Stop dequeuing; running jobs get most of `deadline` to finish, then are released."""
        self._drain = deadline * self.DRAIN_SHARE
        if self._consumer is not None:
            self._consumer.stop(self._drain)


__all__ = ["ConsumerRoutine", "Periodic", "Routine", "pause"]
