"""The supervisor: runs routines side by side and restarts any that raises, with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from offload import metrics
from offload.clock import Clock, Sleeper, SystemClock, real_sleep
from offload.worker.routine import Routine, pause

log = logging.getLogger(__name__)

STARTING = "starting"
RUNNING = "running"
BACKING_OFF = "backing-off"
FINISHED = "finished"
STOPPED = "stopped"


@dataclass(frozen=True)
class Backoff:
    """How long a routine that raised waits before its restart."""

    first: float = 1.0
    cap: float = 60.0
    # A routine that ran this long before raising was healthy: its next wait starts over.
    healthy_after: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.cap:
            raise ValueError(
                f"backoff needs 0 <= first <= cap, got first={self.first} cap={self.cap}"
            )


class Supervisor:
    """Runs every routine concurrently; one that raises is logged, counted and restarted alone."""

    def __init__(
        self,
        routines: Sequence[Routine],
        *,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        sleep: Sleeper = real_sleep,
    ) -> None:
        names = [routine.name for routine in routines]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"routine names must be unique; repeated: {', '.join(duplicates)}")
        self.routines = list(routines)
        self.backoff = backoff or Backoff()
        self.clock = clock or SystemClock()
        self._sleep = sleep
        self._stopping = asyncio.Event()
        self._status = dict.fromkeys(names, STARTING)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def status(self) -> dict[str, str]:
        """Each routine's state: starting, running, backing-off, finished or stopped."""
        return dict(self._status)

    async def run(self) -> None:
        """Run every routine until stop() is called (or all of them finished on their own)."""
        if self._stopping.is_set():
            return
        self._tasks = {
            routine.name: asyncio.create_task(self._keep(routine), name=f"routine {routine.name}")
            for routine in self.routines
        }
        try:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        finally:
            # Cancelled from outside: take the routines down with us.
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _keep(self, routine: Routine) -> None:
        name = routine.name
        delay = self.backoff.first
        try:
            while not self._stopping.is_set():
                self._status[name] = RUNNING
                started = self.clock.now()
                try:
                    await routine.run()
                except Exception:
                    if self._stopping.is_set():
                        log.exception(
                            "routine %s raised while stopping", name, extra={"routine": name}
                        )
                        return
                    ran = (self.clock.now() - started).total_seconds()
                    if ran >= self.backoff.healthy_after:
                        delay = self.backoff.first
                    metrics.ROUTINE_RESTARTS.labels(name).inc()
                    log.exception(
                        "routine %s raised after %.1fs; restarting it in %.1fs",
                        name,
                        ran,
                        delay,
                        extra={"routine": name, "retry_in": delay},
                    )
                    self._status[name] = BACKING_OFF
                    await pause(self._sleep, delay, self._stopping)
                    delay = min(delay * 2, self.backoff.cap)
                    continue
                if not self._stopping.is_set():
                    log.info("routine %s finished on its own", name, extra={"routine": name})
                    self._status[name] = FINISHED
                return
        finally:
            if self._status[name] != FINISHED:
                self._status[name] = STOPPED

    async def stop(self, deadline: float) -> None:
        """Ask every routine to stop; cancel those still running `deadline` seconds later."""
        self._stopping.set()
        for routine in self.routines:
            try:
                routine.stop(deadline)
            except Exception:
                log.exception(
                    "routine %s failed to stop", routine.name, extra={"routine": routine.name}
                )
        pending = {task for task in self._tasks.values() if not task.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=deadline)
        for task in pending:
            log.warning("%s did not stop within %.1fs; cancelling it", task.get_name(), deadline)
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


__all__ = ["BACKING_OFF", "FINISHED", "RUNNING", "STARTING", "STOPPED", "Backoff", "Supervisor"]
