"""The server side of dequeue and heartbeat across executor queues."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.dispatch.queue import ExecutorQueue, FinishError, TransformError
from offload.dispatch.tokens import JobTokens
from offload.protocol.wire import Job
from offload.queue.record import Heartbeat, Lease, NotOwned, Record
from offload.queue.states import State
from offload.queue.store import SqlQueueStore

log = logging.getLogger(__name__)


class UnknownQueue(LookupError):
    """An executor asked for a queue the server does not have; the message lists the valid ones."""


@dataclass(frozen=True)
class Leased:
    """A job handed to an executor, with the token it acts with."""

    job: Job
    record: Record


class Dispatcher:
    """Dequeues for executors (weighted between queues, long-polling) and takes heartbeats."""

    def __init__(
        self,
        db: Database,
        queues: Mapping[str, ExecutorQueue],
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.queues = dict(queues)
        self.clock = clock or SystemClock()
        self.stores = {name: SqlQueueStore(db, q.spec, clock=clock) for name, q in queues.items()}
        self.tokens = JobTokens(db, clock=clock)
        self._rng = rng or random.Random()
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Answer every waiting long poll now (the server is stopping)."""
        self._closing.set()

    def check(self, names: Sequence[str]) -> list[str]:
        """`names` if every one is a queue here; UnknownQueue otherwise."""
        unknown = [name for name in names if name not in self.queues]
        if unknown or not names:
            raise UnknownQueue(
                f"unknown queue {', '.join(unknown) or '(none given)'}; "
                f"valid queues: {', '.join(self.queues)}"
            )
        return list(names)

    def _order(self, names: Sequence[str]) -> list[str]:
        """`names` in a weighted random order, so each queue gets its share of executors."""
        pool = list(names)
        ordered: list[str] = []
        while pool:
            weights = [self.queues[name].weight for name in pool]
            pick = self._rng.choices(pool, weights=weights)[0]
            ordered.append(pick)
            pool.remove(pick)
        return ordered

    async def dequeue(self, holder: str, names: Sequence[str], wait: float = 0.0) -> Leased | None:
        """A job from one of `names` for `holder`, waiting up to `wait` s; None if none came."""
        names = self.check(names)
        deadline = time.monotonic() + wait
        waiters = [await self.db.waiter(name) for name in names] if wait > 0 else []
        try:
            while True:
                for waiter in waiters:
                    waiter.clear()
                for name in self._order(names):
                    leased = await self._dequeue_one(holder, name)
                    if leased is not None:
                        return leased
                remaining = deadline - time.monotonic()
                if not waiters or remaining <= 0 or self._closing.is_set():
                    return None
                pending = [asyncio.ensure_future(w.wait(remaining)) for w in waiters]
                pending.append(asyncio.ensure_future(self._closing.wait()))
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in pending:
                    future.cancel()
        finally:
            for waiter in waiters:
                waiter.close()

    async def _dequeue_one(self, holder: str, name: str) -> Leased | None:
        while True:
            records = await self.stores[name].dequeue(holder, limit=1)
            if not records:
                return None
            if (leased := await self.lease(name, records[0])) is not None:
                return leased

    async def lease(self, name: str, record: Record) -> Leased | None:
        """The job of a record just leased from queue `name`, with its token and its bundle;
        None if the record cannot become a job (it is failed, with the reason)."""
        job = await self._job(name, record)
        if job is None:
            return None
        bundler = self.queues[name].bundler
        companions = await bundler(record, job, self.db) if bundler is not None else None
        if companions is not None and record.worker_hostname is not None:
            more = await self.stores[name].dequeue_matching(
                record.worker_hostname,
                companions.condition,
                companions.params,
                limit=companions.limit,
            )
            for other in more:
                if (member := await self._job(name, other)) is not None:
                    job.bundle.append(member)
        return Leased(job, record)

    async def _job(self, name: str, record: Record) -> Job | None:
        """The job of a leased record, with its token; None if it cannot become one (it is
        failed, with the reason)."""
        try:
            job = await self.queues[name].transform(record, self.db)
        except (TransformError, LookupError) as exc:
            # A record that cannot become a job would fail on every executor: fail it once.
            log.warning("failing job %s of queue %s: %s", record.id, name, exc)
            try:
                await self.stores[name].mark_failed(
                    record.lease, f"failed to transform record: {exc}"
                )
            except NotOwned:
                pass
            return None
        job.token = await self.tokens.mint(record, job.repository_name)
        job.attempt = record.attempt
        return job

    async def finish(self, queue: str, lease: Lease, verb: str, message: str = "") -> None:
        """Record a job's end (complete, errored, failed or release); NotOwned if not held."""
        store = self.stores[queue]
        hook = self.queues[queue].finish
        if hook is not None and verb != "release":
            record = await store.get(lease.id)
            held = (
                record is not None
                and record.state == State.PROCESSING
                and record.worker_hostname == lease.holder
                and record.lease_token == lease.token
            )
            if record is not None and held:
                try:
                    await hook(record, self.db, await store.logs(lease.id), verb == "complete")
                except FinishError as exc:
                    verb, message = "failed", str(exc)
        if verb == "complete":
            await store.mark_complete(lease)
        elif verb == "errored":
            await store.mark_errored(lease, message)
        elif verb == "failed":
            await store.mark_failed(lease, message)
        else:
            await store.release(lease)
        await self.tokens.revoke(queue, lease.id)

    async def heartbeat(
        self, holder: str, ids: Mapping[str, Sequence[int]]
    ) -> dict[str, Heartbeat]:
        """Each queue's heartbeat of `holder`'s jobs."""
        return {
            name: await self.stores[name].heartbeat(holder, job_ids)
            for name, job_ids in ids.items()
            if name in self.stores
        }
