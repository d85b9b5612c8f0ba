"""The consumer loop against the real SQL store: cancel, runtime limit, stop, heartbeats."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from offload.db.base import Database
from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.jobs.queue import spec as job_queue
from offload.queue.consumer import Consumer, JobFailed, QueueStore
from offload.queue.record import Record
from offload.queue.spec import QueueSpec
from offload.queue.states import State
from offload.queue.store import SqlQueueStore

SPEC = job_queue()


class Waits:
    """A handler that waits until told (or cancelled), remembering what it saw."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self.cancelled: list[int] = []
        self.release = asyncio.Event()

    async def handle(self, record: Record) -> None:
        self.started.put_nowait(record.id)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(record.id)
            raise


class Raises:
    """A handler that fails each job in the way its payload says."""

    async def handle(self, record: Record) -> None:
        kind = record.fields["payload"]["kind"]
        if kind == "fatal":
            raise JobFailed("the input can never work")
        if kind == "error":
            raise RuntimeError("flaky dependency")


async def state_of(store: SqlQueueStore, job_id: int, want: State, timeout: float = 10) -> Record:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = await store.get(job_id)
        assert record is not None
        if record.state is want:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} is {record.state}, not {want}, after {timeout}s")


@asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        consumer.stop(deadline=2)
        await asyncio.wait_for(task, 10)


async def test_cancel_reaches_the_handler_and_ends_canceled(db: Database) -> None:
    store = SqlQueueStore(db, SPEC)
    handler = Waits()
    consumer = Consumer(store, handler, holder="c1", slots=2, heartbeat_interval=0.1, poll_wait=0.5)
    job_id = await store.enqueue({"payload": {}})
    async with running(consumer):
        assert await asyncio.wait_for(handler.started.get(), 10) == job_id
        assert await store.cancel(job_id) is State.PROCESSING
        record = await state_of(store, job_id, State.CANCELED)
    assert handler.cancelled == [job_id]
    assert record.finished_at is not None


async def test_outcomes_complete_error_and_fail(db: Database) -> None:
    store = SqlQueueStore(db, dataclasses.replace(SPEC, max_retries=0))
    ok = await store.enqueue({"payload": {"kind": "ok"}})
    flaky = await store.enqueue({"payload": {"kind": "error"}})
    fatal = await store.enqueue({"payload": {"kind": "fatal"}})
    consumer = Consumer(store, Raises(), holder="c1", slots=3, poll_wait=0.2)
    async with running(consumer):
        await state_of(store, ok, State.COMPLETED)
        errored = await state_of(store, flaky, State.FAILED)
        failed = await state_of(store, fatal, State.FAILED)
    assert errored.failure_message == "RuntimeError: flaky dependency"
    assert failed.failure_message == "the input can never work"


async def test_maximum_runtime_stops_the_handler(db: Database) -> None:
    store = SqlQueueStore(db, SPEC)
    handler = Waits()
    consumer = Consumer(
        store,
        handler,
        holder="c1",
        max_runtime=0.3,
        max_runtime_setting="EXECUTOR_MAXIMUM_RUNTIME_PER_JOB",
        poll_wait=0.2,
    )
    job_id = await store.enqueue({"payload": {}})
    async with running(consumer):
        record = await state_of(store, job_id, State.FAILED)
    assert handler.cancelled == [job_id]
    # The limit, its value and where it is set.
    assert record.failure_message == (
        "job exceeded its maximum runtime of 0.3s (EXECUTOR_MAXIMUM_RUNTIME_PER_JOB)"
    )


async def test_stop_hands_back_unfinished_work_and_finishes_the_rest(db: Database) -> None:
    store = SqlQueueStore(db, SPEC)
    handler = Waits()
    consumer = Consumer(store, handler, holder="c1", slots=2, poll_wait=0.2)
    first = await store.enqueue({"payload": {}})
    second = await store.enqueue({"payload": {}})
    task = asyncio.create_task(consumer.run())
    started = {await asyncio.wait_for(handler.started.get(), 10) for _ in range(2)}
    assert started == {first, second}
    began = time.monotonic()
    consumer.stop(deadline=0.5)
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - began < 3
    for job_id in (first, second):
        record = await store.get(job_id)
        assert record is not None and record.state is State.QUEUED, "not handed back"
        assert record.num_failures == 0 and record.lease_token is None


async def test_only_dequeues_with_a_free_slot(db: Database) -> None:
    store = SqlQueueStore(db, SPEC)
    handler = Waits()
    consumer = Consumer(store, handler, holder="c1", slots=2, poll_wait=0.2)
    ids = [await store.enqueue({"payload": {}}) for _ in range(5)]
    async with running(consumer):
        for _ in range(2):
            await asyncio.wait_for(handler.started.get(), 10)
        await asyncio.sleep(0.5)
        counts = await store.counts()
        assert counts[State.PROCESSING] == 2 and counts[State.QUEUED] == 3
        handler.release.set()
        for job_id in ids:
            await state_of(store, job_id, State.COMPLETED)


class Blocks:
    """A handler that blocks the event loop (CPU work, a blocking call) for a while."""

    async def handle(self, record: Record) -> None:
        time.sleep(2.0)  # noqa: ASYNC251 - blocking the loop is the point


async def test_a_blocking_handler_cannot_starve_the_heartbeat(
    db: Database, db_url: DatabaseURL
) -> None:
    spec = dataclasses.replace(SPEC, stalled_after=timedelta(seconds=0.8))
    store = SqlQueueStore(db, spec)

    @asynccontextmanager
    async def heartbeat_store() -> AsyncIterator[QueueStore]:
        own = await open_database(db_url, pool_size=1)
        try:
            yield SqlQueueStore(own, spec)
        finally:
            await own.close()

    consumer = Consumer(
        store,
        Blocks(),
        holder="busy",
        heartbeat_interval=0.1,
        poll_wait=0.2,
        heartbeat_store=heartbeat_store,
    )
    # The resetter runs on a thread of its own: the test's event loop is the one that blocks.
    resets: list[int] = []
    resetter = threading.Thread(target=_resetter, args=(db_url, spec, 3.0, resets))
    resetter.start()
    job_id = await store.enqueue({"payload": {}})
    task = asyncio.create_task(consumer.run())
    record = await state_of(store, job_id, State.COMPLETED)
    consumer.stop(1)
    await asyncio.wait_for(task, 10)
    await asyncio.to_thread(resetter.join)
    assert record.started_at is not None and record.finished_at is not None
    assert (record.finished_at - record.started_at).total_seconds() >= 2.0
    assert resets == [], "the job was reset although its handler was busy, not dead"
    assert record.num_resets == 0


def _resetter(url: DatabaseURL, spec: QueueSpec, seconds: float, resets: list[int]) -> None:
    async def loop() -> None:
        own = await open_database(url, pool_size=1)
        store = SqlQueueStore(own, spec)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                resets.extend((await store.reset_stalled()).reset_ids)
                await asyncio.sleep(0.1)
        finally:
            await own.close()

    asyncio.run(loop())
