"""The worker's jobs against real SQLite and PostgreSQL, and the worker as a real process."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from offload import metrics
from offload.config import Settings
from offload.db.base import Database
from offload.db.schema import SchemaMismatch
from offload.jobs.queue import spec as job_queue
from offload.queue.consumer import Consumer
from offload.queue.record import LogEntry, Record
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.queues import record_queues
from offload.testing import FakeClock
from offload.worker.job import WorkerContext
from offload.worker.registry import JOBS
from offload.worker.routine import ConsumerRoutine
from offload.worker.service import list_jobs, run_worker
from offload.worker.supervisor import Supervisor

SPEC = job_queue()


class Passes:
    """The sleep of periodic routines in these tests: counts finished passes, then waits."""

    def __init__(self) -> None:
        self.count = 0
        self.passed = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.count += 1
        self.passed.set()
        await asyncio.Event().wait()  # until the routine is stopped


async def one_pass(job: str, context: WorkerContext) -> None:
    """Run every routine of `job` through exactly one pass, as the worker would."""
    passes = context.sleep
    assert isinstance(passes, Passes)
    routines = JOBS[job].build(context)
    goal = passes.count + len(routines)
    tasks = [asyncio.create_task(routine.run()) for routine in routines]
    async with asyncio.timeout(10):
        while passes.count < goal and not any(task.done() for task in tasks):
            passes.passed.clear()
            passed = asyncio.ensure_future(passes.passed.wait())
            await asyncio.wait({passed, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            passed.cancel()
    for routine in routines:
        routine.stop(1.0)
    await asyncio.gather(*tasks)


def context_for(db: Database, clock: FakeClock, settings: Settings | None = None) -> WorkerContext:
    """The worker's context on `db`, with fake time and counted passes."""
    settings = settings or Settings()
    return WorkerContext(db, settings, clock=clock, sleep=Passes(), queues=record_queues(settings))


async def finished_job(store: SqlQueueStore, clock: FakeClock) -> Record:
    """A job that ran one logged command and completed now."""
    await store.enqueue({"payload": {"run": "echo hi"}})
    (record,) = await store.dequeue("executor-1")
    await store.add_log_entry(
        record.lease,
        LogEntry(key="step.0", command=["echo", "hi"], start_time=clock.now(), out="hi"),
    )
    await store.mark_complete(record.lease)
    return record


async def test_the_resetter_queues_again_a_record_whose_holder_stopped_heartbeating(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    store = SqlQueueStore(db, SPEC, clock=clock)
    await store.enqueue({"payload": {"n": 1}})
    await store.enqueue({"payload": {"n": 2}})
    dead, alive = await store.dequeue("executor-1", limit=2)
    clock.advance(SPEC.stalled_after - timedelta(seconds=5))
    await store.heartbeat("executor-1", [alive.id])
    clock.advance(timedelta(seconds=10))

    await one_pass("queues.resetter", context_for(db, clock))

    reset = await store.get(dead.id)
    assert reset is not None
    assert (reset.state, reset.num_resets, reset.worker_hostname) == (State.QUEUED, 1, "executor-1")
    still = await store.get(alive.id)
    assert still is not None and still.state is State.PROCESSING
    assert f"queue default: 1 stalled record(s) queued again: [{dead.id}]" in caplog.text
    (again,) = await store.dequeue("executor-2")
    assert again.id == dead.id


async def test_the_resetter_fails_a_record_whose_holders_keep_dying(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = SqlQueueStore(db, SPEC, clock=clock)
    record_id = await store.enqueue({"payload": {"n": 1}})
    context = context_for(db, clock)
    for _ in range(SPEC.max_resets + 1):
        (held,) = await store.dequeue("executor-1")
        clock.advance(SPEC.stalled_after + timedelta(seconds=1))
        await one_pass("queues.resetter", context)

    record = await store.get(record_id)
    assert record is not None
    assert (record.state, record.num_resets) == (State.FAILED, SPEC.max_resets)
    assert record.failure_message is not None
    assert "stopped heartbeating" in record.failure_message
    assert f"queue default: 1 stalled record(s) failed after 3 resets: [{record_id}]" in caplog.text
    assert held.id == record_id


async def test_the_janitor_deletes_old_logs_then_old_records_and_keeps_the_rest(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    store = SqlQueueStore(db, SPEC, clock=clock)
    ancient = await finished_job(store, clock)  # 40 days before the sweep
    clock.advance(timedelta(days=25))
    old = await finished_job(store, clock)  # 15 days before
    clock.advance(timedelta(days=13))
    recent = await finished_job(store, clock)  # 2 days before
    waiting = await store.enqueue({"payload": {"n": "never ran"}})
    clock.advance(timedelta(days=2))

    week = Settings(logs_retention=timedelta(days=7))
    await one_pass("queues.janitor", context_for(db, clock, week))

    assert await store.get(ancient.id) is None
    assert await store.logs(ancient.id) == []
    kept = await store.get(old.id)
    assert kept is not None and kept.state is State.COMPLETED
    assert await store.logs(old.id) == []
    assert [entry.out for entry in await store.logs(recent.id)] == ["hi"]
    assert await store.get(waiting) is not None
    assert "queue default: deleted 1 record(s) finished more than 30 days" in caplog.text


async def test_the_janitor_honours_the_records_retention_setting_and_queues_that_keep_records(
    db: Database,
) -> None:
    clock = FakeClock()
    store = SqlQueueStore(db, SPEC, clock=clock)
    older = await finished_job(store, clock)
    clock.advance(timedelta(days=2))
    newer = await finished_job(store, clock)
    clock.advance(timedelta(hours=12))

    keeping = context_for(db, clock, Settings(logs_retention=timedelta(days=1)))
    keeping = replace(keeping, queues={SPEC.name: replace(SPEC, retention=None)})
    await one_pass("queues.janitor", keeping)
    assert await store.get(older.id) is not None
    assert await store.logs(older.id) == []
    assert len(await store.logs(newer.id)) == 1

    short = context_for(db, clock, Settings(records_retention=timedelta(days=1)))
    await one_pass("queues.janitor", short)
    assert await store.get(older.id) is None
    assert await store.get(newer.id) is not None


async def test_the_queue_size_job_publishes_counts_and_the_oldest_wait(db: Database) -> None:
    clock = FakeClock()
    store = SqlQueueStore(db, SPEC, clock=clock)
    for n in range(4):
        await store.enqueue({"payload": {"n": n}})
    clock.advance(timedelta(seconds=90))
    done, _ = await store.dequeue("executor-1", limit=2)
    await store.mark_complete(done.lease)
    clock.advance(timedelta(seconds=30))

    await one_pass("metrics.queue-size", context_for(db, clock))

    text = metrics.exposition().decode()
    for state, count in [
        ("queued", 2),
        ("processing", 1),
        ("completed", 1),
        ("errored", 0),
        ("failed", 0),
        ("canceled", 0),
    ]:
        assert f'offload_queue_records{{queue="default",state="{state}"}} {count:.1f}' in text
    assert 'offload_queue_oldest_queued_seconds{queue="default"} 120.0' in text


class Sleepy:
    """A handler that takes `seconds` per job."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()

    async def handle(self, record: Record) -> None:
        self.started.set()
        await asyncio.sleep(self.seconds)


@pytest.mark.parametrize(
    ("job_seconds", "deadline", "state"),
    [(0.2, 5.0, State.COMPLETED), (30.0, 1.0, State.QUEUED)],
    ids=["drained", "handed-back"],
)
async def test_a_consumer_routine_drains_its_jobs_or_hands_them_back_when_the_worker_stops(
    db: Database, job_seconds: float, deadline: float, state: State
) -> None:
    store = SqlQueueStore(db, SPEC)
    record_id = await store.enqueue({"payload": {"n": 1}})
    handler = Sleepy(job_seconds)
    routine = ConsumerRoutine(
        "queues.consumer:default",
        lambda: Consumer(store, handler, holder="worker-1", poll_wait=0.2, heartbeat_interval=1),
    )
    supervisor = Supervisor([routine])
    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(handler.started.wait(), 5)

    started = time.monotonic()
    await supervisor.stop(deadline)
    await asyncio.wait_for(running, 1)

    assert time.monotonic() - started < deadline
    record = await store.get(record_id)
    assert record is not None and record.state is state


async def test_unknown_job_names_are_refused_with_the_valid_ones(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown worker job 'queues\.resseter'") as caught:
        await run_worker(settings, ["queues.resetter", "queues.resseter"])
    assert "valid jobs: queues.resetter, queues.janitor, metrics.queue-size" in str(caught.value)
    assert [name for name, _ in list_jobs()] == list(JOBS)
    assert all(description.endswith(".") for _, description in list_jobs())
    assert not (tmp_path / "offload.db").exists()


async def test_the_worker_refuses_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(SchemaMismatch, match="run `offload migrate up` first"):
        await run_worker(settings, [], stop=asyncio.Event())


async def worker_process(database: Path, *, stop_timeout: str) -> asyncio.subprocess.Process:
    """`offload worker` with every job, on the SQLite file, on a free port, passes every 100ms."""
    env = {
        **os.environ,
        "OFFLOAD_DATABASE_URL": f"sqlite:///{database}",
        "OFFLOAD_WORKER_HOST": "127.0.0.1",
        "OFFLOAD_WORKER_PORT": "0",
        "OFFLOAD_RESETTER_INTERVAL": "100ms",
        "OFFLOAD_JANITOR_INTERVAL": "100ms",
        "OFFLOAD_METRICS_INTERVAL": "100ms",
        "OFFLOAD_STOP_TIMEOUT": stop_timeout,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "offload", "worker", env=env, stderr=asyncio.subprocess.PIPE
    )


async def read_log(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    """Collect the process's log lines until it exits (a full pipe would block it)."""
    assert process.stderr is not None
    while line := await process.stderr.readline():
        lines.append(line.decode())


async def listening_address(lines: list[str], reading: asyncio.Task[None]) -> str:
    """The address from the worker's `listening on` line."""
    async with asyncio.timeout(15):
        while not reading.done():
            for line in lines:
                if found := re.search(r"offload worker listening on (http://\S+)", line):
                    return found.group(1)
            await asyncio.sleep(0.05)
    raise AssertionError("the worker exited before listening:\n" + "".join(lines))


async def test_a_worker_whose_jobs_keep_failing_restarts_them_and_stops_on_sigterm_in_time(
    sqlite_template: Path, tmp_path: Path
) -> None:
    database = tmp_path / "offload.db"
    shutil.copy(sqlite_template, database)
    process = await worker_process(database, stop_timeout="5s")
    lines: list[str] = []
    reading = asyncio.create_task(read_log(process, lines))
    try:
        url = await listening_address(lines, reading)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            health = (await client.get("/healthz")).json()
            assert health["status"] == "ok"
            assert health["jobs"] == [
                "queues.resetter",
                "queues.janitor",
                "metrics.queue-size",
                "repos.syncer",
                "batches.resolver",
                "batches.reconciler",
                "batches.syncer",
                "batches.spec-expirer",
                "codeintel.popularity",
                "codeintel.scheduler",
                "codeintel.uploads",
                "codeintel.uploads-janitor",
                "identity.janitor",
            ]
            queues = (
                "default",
                "batches",
                "batch_resolutions",
                "changesets",
                "codeintel",
                "codeintel.uploads",
            )
            assert set(health["routines"]) == {
                *(f"{job}:{queue}" for job in health["jobs"][:3] for queue in queues),
                "repos.syncer",
                "batches.resolver",
                "batches.reconciler",
                "batches.syncer",
                "batches.spec-expirer",
                "codeintel.popularity",
                "codeintel.scheduler",
                "codeintel.uploads",
                "codeintel.uploads-janitor",
                "identity.janitor",
                "worker.heartbeat",
            }
            response = await client.get("/metrics")
            assert response.headers["content-type"].startswith("text/plain")
            assert 'offload_queue_records{queue="default",state="queued"} 0.0' in response.text

            # Pull the table from under the running jobs: each of their passes now raises.
            with sqlite3.connect(database) as conn:
                conn.execute("DROP TABLE jobs")
            restarted = 'offload_routine_restarts_total{routine="queues.resetter:default"} 2.0'
            async with asyncio.timeout(10):
                # Polling is what a scraper does; the process offers nothing else to wait on.
                while restarted not in (await client.get("/metrics")).text:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            health = (await client.get("/healthz")).json()
            assert health["routines"]["queues.resetter:default"] == "backing-off"
            # The other queue's routines do not share the broken one's fate.
            assert health["routines"]["queues.resetter:batches"] == "running"

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 5)
        assert code == 0
        assert time.monotonic() - started < 5
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reading
    log = "".join(lines)
    assert "routine queues.resetter:default raised after" in log
    assert "restarting it in 1.0s" in log
    assert "restarting it in 2.0s" in log
    assert "Traceback" in log
    assert "no such table: jobs" in log
    assert "offload worker stopped" in log
