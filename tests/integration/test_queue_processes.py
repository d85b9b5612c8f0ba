"""The record queue under real concurrency and real crashes: consumer processes, SIGKILL."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.jobs.queue import spec as job_queue
from offload.queue.states import State
from offload.queue.store import SqlQueueStore

SCRIPT = Path(__file__).with_name("consumer_process.py")


def start_consumer(url: DatabaseURL, records: Path, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), url.raw, str(records), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("ready"), "consumer process did not start"
    return process


def finish(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    """Signal a consumer process, wait for it, close its pipe; returns its exit code."""
    process.send_signal(signum)
    code = process.wait(30)
    if process.stdout is not None:
        process.stdout.close()
    return code


async def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def overlapping(spans: list[tuple[str, int, int]]) -> bool:
    ordered = sorted(spans, key=lambda s: s[1])
    return any(b[1] < a[2] for a, b in itertools.pairwise(ordered))


async def test_four_processes_drain_10000_jobs_exactly_once(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    store = SqlQueueStore(db, job_queue())
    total = 10_000
    await store.enqueue_many([{"payload": {"n": n}} for n in range(total)])
    files = [tmp_path / f"records-{i}.txt" for i in range(4)]
    processes = [start_consumer(db_url, f, "--slots", "5") for f in files]
    try:

        async def drained() -> bool:
            return (await store.counts())[State.COMPLETED] == total

        await wait_for(drained, 240, f"{total} completed jobs")
    finally:
        codes = [finish(process) for process in processes]
    assert codes == [0, 0, 0, 0]
    runs: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for path in files:
        for line in path.read_text().splitlines():
            job_id, holder, start, end = line.split()
            runs[int(job_id)].append((holder, int(start), int(end)))
    assert len(runs) == total
    overlaps = [job_id for job_id, spans in runs.items() if overlapping(spans)]
    assert overlaps == [], f"jobs held by two holders at overlapping times: {overlaps[:5]}"
    twice = {job_id: spans for job_id, spans in runs.items() if len(spans) > 1}
    assert twice == {}, f"jobs handled more than once: {list(twice.items())[:5]}"
    # Every process did real work: the queue spread the load.
    holders = defaultdict(int)
    for spans in runs.values():
        for holder, start, end in spans:
            assert start <= end
            holders[holder] += 1
    assert len(holders) == 4 and min(holders.values()) > 100
    counts = await store.counts()
    assert counts[State.COMPLETED] == total and sum(counts.values()) == total


async def test_killed_consumer_job_is_reset_and_completed_elsewhere(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    stalled_after = 1.0
    spec = dataclasses.replace(
        job_queue(), stalled_after=timedelta(seconds=stalled_after), max_resets=2
    )
    store = SqlQueueStore(db, spec)
    job_id = await store.enqueue({"payload": {}})
    doomed = start_consumer(
        db_url,
        tmp_path / "doomed.txt",
        "--hang",
        "--slots",
        "1",
        "--stalled-after",
        str(stalled_after),
        "--heartbeat",
        "0.2",
    )

    async def processing() -> bool:
        record = await store.get(job_id)
        return record is not None and record.state is State.PROCESSING

    await wait_for(processing, 20, "the job to start")
    finish(doomed, signal.SIGKILL)
    killed_at = time.monotonic()
    resetter_interval = 0.25

    async def requeued() -> bool:
        await store.reset_stalled()
        await asyncio.sleep(resetter_interval)
        record = await store.get(job_id)
        return record is not None and record.state is State.QUEUED

    await wait_for(requeued, 10, "the resetter to queue the job again")
    assert time.monotonic() - killed_at <= stalled_after + resetter_interval + 1.0
    survivor = start_consumer(db_url, tmp_path / "survivor.txt", "--slots", "1")
    try:

        async def completed() -> bool:
            record = await store.get(job_id)
            return record is not None and record.state is State.COMPLETED

        await wait_for(completed, 20, "the job to complete elsewhere")
    finally:
        assert finish(survivor) == 0
    record = await store.get(job_id)
    assert record is not None and record.num_resets == 1
    assert (tmp_path / "survivor.txt").read_text().startswith(f"{job_id} ")


async def test_job_whose_holders_keep_dying_fails_after_max_resets(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    spec = dataclasses.replace(job_queue(), stalled_after=timedelta(seconds=0.5), max_resets=2)
    store = SqlQueueStore(db, spec)
    job_id = await store.enqueue({"payload": {}})
    for kill in range(spec.max_resets + 1):
        doomed = start_consumer(
            db_url,
            tmp_path / f"doomed-{kill}.txt",
            "--hang",
            "--slots",
            "1",
            "--stalled-after",
            "0.5",
            "--heartbeat",
            "0.1",
        )

        async def processing() -> bool:
            record = await store.get(job_id)
            return record is not None and record.state is State.PROCESSING

        await wait_for(processing, 20, "the job to start")
        finish(doomed, signal.SIGKILL)

        async def handled() -> bool:
            await store.reset_stalled()
            record = await store.get(job_id)
            return record is not None and record.state in (State.QUEUED, State.FAILED)

        await wait_for(handled, 10, "the resetter")
    record = await store.get(job_id)
    assert record is not None and record.state is State.FAILED
    assert record.failure_message is not None
    assert "died while handling this job too many times" in record.failure_message
    assert "2 resets" in record.failure_message
