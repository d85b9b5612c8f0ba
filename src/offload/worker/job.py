"""What a worker job is: a description and a builder of routines from the worker's context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property, partial

from offload.clock import Clock, Sleeper, SystemClock, real_sleep
from offload.config import Settings
from offload.db.base import Database
from offload.queue.spec import QueueSpec
from offload.queue.store import SqlQueueStore
from offload.secrets.cipher import Cipher
from offload.secrets.store import Secrets
from offload.worker.routine import Periodic, Routine


@dataclass(frozen=True)
class WorkerContext:
    """Everything a job may build its routines from: the open database, settings, time."""

    db: Database
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    sleep: Sleeper = real_sleep
    # Every record queue, as the composition root (worker/service.py) makes them from the
    # settings; jobs that tend queues tend each. Given, not made here: the queues name the
    # features, and features' jobs build on this context.
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)

    @cached_property
    def secrets(self) -> Secrets:
        """The secrets store, with the key of the settings (read when a job first needs it,
        so jobs that read no secret need no key)."""
        return Secrets(self.db, Cipher.from_settings(self.settings), clock=self.clock)

    def per_queue(
        self, job: str, interval: timedelta, tend: Callable[[SqlQueueStore], Awaitable[None]]
    ) -> list[Routine]:
        """One periodic routine per queue, so a broken queue cannot hold up the others."""
        return [
            Periodic(
                f"{job}:{name}",
                interval,
                partial(tend, SqlQueueStore(self.db, spec, clock=self.clock)),
                sleep=self.sleep,
            )
            for name, spec in self.queues.items()
        ]


@dataclass(frozen=True)
class WorkerJob:
    """One job of `offload worker`: what `--list` says about it, and how to build it."""

    description: str
    build: Callable[[WorkerContext], list[Routine]]


__all__ = ["WorkerContext", "WorkerJob"]
