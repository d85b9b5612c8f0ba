"""The consumer loop: lease records, run them in slots, keep their leases alive, finish them.

The same loop runs in the worker (against the SQL store) and on executors (against the HTTP
store), so it knows only the QueueStore protocol below and never imports the SQL store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from offload.queue.record import Heartbeat, Lease, NotOwned, Record
from offload.queue.states import State

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueStore(Protocol):
    """What a consumer needs from a queue, whether it is a database or a server."""

    async def dequeue(self, holder: str, *, limit: int = 1, wait: float = 0.0) -> list[Record]:
        """Lease up to `limit` records, waiting up to `wait` seconds for one; safe to cancel."""
        ...

    async def heartbeat(self, holder: str, ids: Sequence[int]) -> Heartbeat:
        """Keep leases alive; learn which are lost and which should be canceled."""
        ...

    async def mark_complete(self, lease: Lease) -> State:
        """The job succeeded."""
        ...

    async def mark_errored(self, lease: Lease, message: str) -> State:
        """The job failed and may be retried."""
        ...

    async def mark_failed(self, lease: Lease, message: str) -> State:
        """The job failed for good (or was canceled)."""
        ...

    async def release(self, lease: Lease) -> None:
        """Hand an unfinished job back to the queue."""
        ...


class Handler(Protocol):
    """Does the work of one record. Raise JobFailed to fail without retries."""

    async def handle(self, record: Record) -> None:
        """Run the job; cancellation (asyncio.CancelledError) means stop now."""
        ...


class JobFailed(Exception):
    """Raised by a handler: the job cannot succeed, do not retry it."""


HeartbeatStoreFactory = Callable[[], AbstractAsyncContextManager[QueueStore]]


@dataclass
class _Running:
    record: Record
    task: asyncio.Task[None]
    started: float
    # Why the consumer itself stopped the handler, if it did.
    stop_reason: str | None = None


@dataclass
class ConsumerStats:
    """What one consumer has done, for metrics and tests."""

    dequeued: int = 0
    completed: int = 0
    errored: int = 0
    failed: int = 0
    canceled: int = 0
    lost: int = 0
    released: int = 0
    heartbeat_errors: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


_CANCELED = "canceled"
_LOST = "lost"
_TIMEOUT = "timeout"
_SHUTDOWN = "shutdown"


class Consumer:
    """Runs up to `slots` jobs of one queue at a time until stopped."""

    def __init__(
        self,
        store: QueueStore,
        handler: Handler,
        *,
        holder: str,
        slots: int = 1,
        poll_wait: float = 5.0,
        heartbeat_interval: float = 5.0,
        max_runtime: float | None = None,
        max_runtime_setting: str = "",
        heartbeat_store: HeartbeatStoreFactory | None = None,
        retry_delay: float = 1.0,
        report_attempts: int = 8,
    ) -> None:
        if slots < 1:
            raise ValueError("a consumer needs at least one slot")
        self.store = store
        self.handler = handler
        self.holder = holder
        self.slots = slots
        self.poll_wait = poll_wait
        self.heartbeat_interval = heartbeat_interval
        self.max_runtime = max_runtime
        # Where the limit is set, named in the job's failure (EXECUTOR_MAXIMUM_RUNTIME_PER_JOB).
        self.max_runtime_setting = max_runtime_setting
        self.retry_delay = retry_delay
        self.report_attempts = report_attempts
        self.stats = ConsumerStats()
        self._heartbeat_store = heartbeat_store
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()  # _running is read by the heartbeat thread
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._finishers: set[asyncio.Task[None]] = set()
        self._drain_deadline = 30.0

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Dequeue and run jobs until stop() is called and in-flight work is settled."""
        async with self._heartbeats():
            while not self._stopping.is_set():
                free = self.slots - self._busy_slots()
                if free <= 0:
                    self._slot_free.clear()
                    await self._until(self._slot_free.wait())
                    continue
                try:
                    records = await self._until(
                        self.store.dequeue(self.holder, limit=free, wait=self.poll_wait)
                    )
                except Exception as exc:  # a database or server blip: back off, keep going
                    log.warning("dequeue failed for %s: %s; retrying", self.holder, exc)
                    await self._until(asyncio.sleep(self.retry_delay))
                    continue
                for record in records or ():
                    self._start(record)
            await self._settle()

    async def _until(self, awaitable: Awaitable[T]) -> T | None:
        """Await `awaitable`, cancelling it (safely: stores handle that) when stop() is called."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        return task.result()

    def stop(self, deadline: float = 30.0) -> None:
        """Stop dequeuing; running jobs get `deadline` seconds to finish, then are handed back."""
        self._drain_deadline = deadline
        self._stopping.set()

    async def _settle(self) -> None:
        waiting = [r.task for r in self._running.values()]
        if waiting:
            await asyncio.wait(waiting, timeout=self._drain_deadline)
        for running in list(self._running.values()):
            running.stop_reason = running.stop_reason or _SHUTDOWN
            running.task.cancel()
        while self._finishers:
            await asyncio.gather(*self._finishers, return_exceptions=True)

    # -- one job --------------------------------------------------------------------------

    def _start(self, record: Record) -> None:
        self.stats.dequeued += 1
        task = asyncio.create_task(
            self._run_handler(record), name=f"job-{record.queue}-{record.id}"
        )
        task.add_done_callback(lambda _: self._slot_free.set())
        with self._lock:
            self._running[record.id] = _Running(record, task, time.monotonic())
        finisher = asyncio.create_task(self._finish(record.id, task))
        self._finishers.add(finisher)
        finisher.add_done_callback(self._finishers.discard)

    async def _run_handler(self, record: Record) -> None:
        if self.max_runtime is None:
            await self.handler.handle(record)
            return
        try:
            async with asyncio.timeout(self.max_runtime * record.units):
                await self.handler.handle(record)
        except TimeoutError:
            running = self._running.get(record.id)
            if running is not None and running.stop_reason is None:
                running.stop_reason = _TIMEOUT
            raise asyncio.CancelledError from None

    async def _finish(self, record_id: int, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.wait({task})
        running = self._running[record_id]
        lease = running.record.lease
        try:
            await self._report_with_retries(running, task, lease)
        finally:
            with self._lock:
                del self._running[record_id]
            self._slot_free.set()

    async def _report_with_retries(
        self, running: _Running, task: asyncio.Task[None], lease: Lease
    ) -> None:
        # The job stays in _running (so heartbeats keep its lease) until its outcome is
        # stored: a short outage must not make finished work run again.
        for attempt in range(1, self.report_attempts + 1):
            try:
                await self._report(running, task, lease)
                return
            except NotOwned as exc:
                self.stats.lost += 1
                log.warning("%s", exc)
                return
            except Exception as exc:
                if attempt == self.report_attempts:
                    log.error(
                        "gave up reporting job %s of queue %s after %d attempts: %s; "
                        "the resetter will hand it out again",
                        lease.id,
                        lease.queue,
                        attempt,
                        exc,
                    )
                    return
                delay = min(self.retry_delay * 2 ** (attempt - 1), 30.0)
                log.warning(
                    "could not report job %s of queue %s (attempt %d): %s; retrying in %.1fs",
                    lease.id,
                    lease.queue,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _report(self, running: _Running, task: asyncio.Task[None], lease: Lease) -> None:
        reason = running.stop_reason
        if task.cancelled() or reason is not None:
            if reason == _LOST:
                self.stats.lost += 1
            elif reason == _CANCELED:
                await self.store.mark_failed(lease, "canceled on request")
                self.stats.canceled += 1
            elif reason == _TIMEOUT:
                setting = f" ({self.max_runtime_setting})" if self.max_runtime_setting else ""
                limit = (self.max_runtime or 0) * running.record.units
                await self.store.mark_errored(
                    lease, f"job exceeded its maximum runtime of {limit:g}s{setting}"
                )
                self.stats.errored += 1
            else:
                await self.store.release(lease)
                self.stats.released += 1
            return
        exc = task.exception()
        if exc is None:
            state = await self.store.mark_complete(lease)
            self.stats.completed += state is State.COMPLETED
            self.stats.canceled += state is State.CANCELED
        elif isinstance(exc, JobFailed):
            await self.store.mark_failed(lease, str(exc) or type(exc).__name__)
            self.stats.failed += 1
        else:
            log.info("job %s of queue %s errored: %r", lease.id, lease.queue, exc)
            await self.store.mark_errored(lease, f"{type(exc).__name__}: {exc}")
            self.stats.errored += 1

    # -- heartbeats -----------------------------------------------------------------------

    def _busy_slots(self) -> int:
        # A slot is free once its handler returns: reporting the outcome goes on beside the
        # next job, so a slow commit does not hold the slot idle.
        return sum(1 for r in self._running.values() if not r.task.done())

    def running_ids(self) -> list[int]:
        """Ids of the jobs held now, running or being reported (safe from any thread)."""
        with self._lock:
            return list(self._running)

    def _apply(self, beat: Heartbeat, sent: Sequence[int]) -> None:
        """Stop handlers whose lease was lost or whose cancel was requested (on the loop)."""
        known = set(beat.known_ids)
        for rid in sent:
            running = self._running.get(rid)
            if running is None or running.task.done() or running.stop_reason is not None:
                continue
            if rid not in known:
                log.warning(
                    "heartbeat lost job %s of queue %s; abandoning it", rid, running.record.queue
                )
                running.stop_reason = _LOST
                running.task.cancel()
            elif rid in beat.cancel_ids:
                running.stop_reason = _CANCELED
                running.task.cancel()

    async def _beat_once(self, store: QueueStore, loop: asyncio.AbstractEventLoop) -> None:
        # Beat even with nothing running: for executors the heartbeat is also their sign of
        # life on the server (the SQL store answers an empty beat without a query).
        ids = self.running_ids()
        try:
            beat = await store.heartbeat(self.holder, ids)
        except Exception as exc:
            # One failed heartbeat must not abandon every job: keep going, try again.
            self.stats.heartbeat_errors += 1
            log.warning("heartbeat failed for %s: %s", self.holder, exc)
            return
        loop.call_soon_threadsafe(self._apply, beat, ids)

    @contextlib.asynccontextmanager
    async def _heartbeats(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if self._heartbeat_store is None:
            task = asyncio.create_task(self._heartbeat_loop(self.store, loop, asyncio.Event()))
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return
        # A thread of its own, with its own loop and store, so that a handler that blocks the
        # main loop (CPU work, a blocking call) cannot starve the heartbeat and lose its lease.
        done = threading.Event()
        thread = threading.Thread(
            target=self._heartbeat_thread,
            args=(loop, done),
            name=f"heartbeat-{self.holder}",
            daemon=True,
        )
        thread.start()
        try:
            yield
        finally:
            done.set()
            await asyncio.to_thread(thread.join, 10)

    def _heartbeat_thread(self, loop: asyncio.AbstractEventLoop, done: threading.Event) -> None:
        assert self._heartbeat_store is not None
        factory = self._heartbeat_store

        async def main() -> None:
            stop = asyncio.Event()

            async def watch() -> None:
                await asyncio.to_thread(done.wait)
                stop.set()

            watcher = asyncio.create_task(watch())
            async with factory() as store:
                await self._heartbeat_loop(store, loop, stop)
            await watcher

        asyncio.run(main())

    async def _heartbeat_loop(
        self, store: QueueStore, loop: asyncio.AbstractEventLoop, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_interval)
            if stop.is_set():
                break
            await self._beat_once(store, loop)
