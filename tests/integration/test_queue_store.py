"""The record queue's store verbs, on SQLite and PostgreSQL, with a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta

import pytest

from offload.db.base import Database
from offload.jobs.queue import spec as job_queue
from offload.queue.record import LogEntry, NotOwned
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.testing import FakeClock

SPEC = job_queue()


def make_store(db: Database, clock: FakeClock | None = None, **changes: object) -> SqlQueueStore:
    spec = dataclasses.replace(SPEC, **changes) if changes else SPEC  # type: ignore[arg-type]
    return SqlQueueStore(db, spec, clock=clock or FakeClock())


def entry(clock: FakeClock, out: str = "", exit_code: int | None = None) -> LogEntry:
    return LogEntry(
        key="step.0", command=["echo", "hi"], start_time=clock.now(), out=out, exit_code=exit_code
    )


async def test_dequeue_is_fifo_and_leases_each_record_once(db: Database) -> None:
    store = make_store(db)
    ids = [await store.enqueue({"payload": {"n": n}}) for n in range(5)]
    first = await store.dequeue("a", limit=2)
    second = await store.dequeue("b", limit=10)
    assert [r.id for r in first] == ids[:2]
    assert sorted(r.id for r in second) == ids[2:]
    assert all(r.state is State.PROCESSING for r in first + second)
    assert {r.worker_hostname for r in first} == {"a"}
    assert len({r.lease_token for r in first + second}) == 5
    assert await store.dequeue("c") == []
    assert first[0].fields["payload"] == {"n": 0}


async def test_stale_holder_can_no_longer_touch_the_job(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock, stalled_after=timedelta(seconds=25))
    job_id = await store.enqueue({"payload": {}})
    (stale,) = await store.dequeue("old-holder")
    log_id = await store.add_log_entry(stale.lease, entry(clock, "working"))
    clock.advance(30)
    assert (await store.reset_stalled()).reset_ids == [job_id]
    (fresh,) = await store.dequeue("new-holder")
    assert fresh.id == job_id and fresh.lease_token != stale.lease_token
    before = await store.get(job_id)
    logs_before = await store.logs(job_id)

    attempts = [
        store.mark_complete(stale.lease),
        store.mark_errored(stale.lease, "late error"),
        store.mark_failed(stale.lease, "late failure"),
        store.add_log_entry(stale.lease, entry(clock, "late output")),
        store.update_log_entry(stale.lease, log_id, entry(clock, "rewritten", 0)),
    ]
    for attempt in attempts:
        with pytest.raises(NotOwned, match="not owned"):
            await attempt
    beat = await store.heartbeat("old-holder", [job_id])
    assert beat.known_ids == [] and beat.cancel_ids == []
    assert await store.get(job_id) == before
    assert await store.logs(job_id) == logs_before
    # The new holder is unaffected and finishes the job.
    assert await store.mark_complete(fresh.lease) is State.COMPLETED


async def test_same_holder_with_an_old_lease_token_is_fenced(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock)
    await store.enqueue({"payload": {}})
    (first,) = await store.dequeue("holder")
    clock.advance(60)
    await store.reset_stalled()
    (second,) = await store.dequeue("holder")
    with pytest.raises(NotOwned):
        await store.mark_complete(first.lease)
    assert await store.mark_complete(second.lease) is State.COMPLETED


async def test_cancel_of_processing_job_reaches_heartbeat_and_ends_canceled(db: Database) -> None:
    store = make_store(db)
    job_id = await store.enqueue({"payload": {}})
    (record,) = await store.dequeue("h")
    assert await store.cancel(job_id) is State.PROCESSING
    beat = await store.heartbeat("h", [job_id])
    assert beat.known_ids == [job_id] and beat.cancel_ids == [job_id]
    # Whatever the holder reports, cancel wins.
    assert await store.mark_complete(record.lease) is State.CANCELED
    got = await store.get(job_id)
    assert got is not None and got.state is State.CANCELED and got.finished_at is not None


async def test_cancel_of_queued_job_is_immediate(db: Database) -> None:
    store = make_store(db)
    job_id = await store.enqueue({"payload": {}})
    assert await store.cancel(job_id) is State.CANCELED
    assert await store.dequeue("h") == []
    assert await store.cancel(job_id) is None  # already finished
    assert await store.cancel(999_999) is None


async def test_errored_jobs_retry_after_growing_backoff_then_fail(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock, max_retries=2, retry_backoff=timedelta(seconds=10))
    job_id = await store.enqueue({"payload": {}})
    waits = []
    for attempt in (1, 2):
        (record,) = await store.dequeue("h")
        assert await store.mark_errored(record.lease, f"boom {attempt}") is State.ERRORED
        errored = await store.get(job_id)
        assert errored is not None and errored.process_after is not None
        wait = errored.process_after - clock.now()
        waits.append(wait)
        clock.advance(wait - timedelta(seconds=1))
        assert await store.dequeue("h") == [], "retried before its backoff passed"
        clock.advance(timedelta(seconds=1))
    assert [round(w.total_seconds()) for w in waits] == [10, 20]
    (record,) = await store.dequeue("h")
    assert await store.mark_errored(record.lease, "boom 3") is State.FAILED
    final = await store.get(job_id)
    assert final is not None
    assert (final.state, final.num_failures, final.failure_message) == (State.FAILED, 3, "boom 3")
    clock.advance(3600)
    assert await store.dequeue("h") == []


async def test_mark_failed_does_not_retry(db: Database) -> None:
    store = make_store(db, max_retries=5)
    job_id = await store.enqueue({"payload": {}})
    (record,) = await store.dequeue("h")
    assert await store.mark_failed(record.lease, "bad input") is State.FAILED
    got = await store.get(job_id)
    assert got is not None and got.failure_message == "bad input"


async def test_reset_stalled_requeues_then_fails_after_max_resets(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock, max_resets=2, stalled_after=timedelta(seconds=5))
    job_id = await store.enqueue({"payload": {}})
    for n in range(2):
        await store.dequeue(f"holder-{n}")
        clock.advance(4)
        assert (await store.reset_stalled()).reset_ids == [], "reset before stalled_after"
        clock.advance(2)
        assert (await store.reset_stalled()).reset_ids == [job_id]
    await store.dequeue("holder-last")
    clock.advance(6)
    resets = await store.reset_stalled()
    assert resets.failed_ids == [job_id] and resets.reset_ids == []
    got = await store.get(job_id)
    assert got is not None and got.state is State.FAILED
    assert got.failure_message is not None
    assert "too many times" in got.failure_message and "holder-last" in got.failure_message


async def test_heartbeat_keeps_a_job_from_being_reset(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock, stalled_after=timedelta(seconds=5))
    job_id = await store.enqueue({"payload": {}})
    await store.dequeue("h")
    for _ in range(4):
        clock.advance(3)
        assert (await store.heartbeat("h", [job_id])).known_ids == [job_id]
        assert (await store.reset_stalled()).reset_ids == []


async def test_requeue_and_release(db: Database) -> None:
    store = make_store(db)
    job_id = await store.enqueue({"payload": {}})
    (record,) = await store.dequeue("h")
    assert not await store.requeue(job_id), "a processing job cannot be requeued"
    await store.release(record.lease)
    again = await store.get(job_id)
    assert again is not None and again.state is State.QUEUED and again.num_failures == 0
    (record,) = await store.dequeue("h")
    await store.mark_failed(record.lease, "nope")
    assert await store.requeue(job_id)
    (record,) = await store.dequeue("h")
    assert record.id == job_id and record.num_failures == 0


async def test_log_entries_are_appended_updated_and_capped(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock)
    store.log_limit = 1000
    job_id = await store.enqueue({"payload": {}})
    (record,) = await store.dequeue("h")
    first = await store.add_log_entry(record.lease, entry(clock))
    await store.update_log_entry(record.lease, first, entry(clock, "line 1\n", 0))
    second = await store.add_log_entry(record.lease, entry(clock, "x" * 5000))
    logs = await store.logs(job_id)
    assert [e.id for e in logs] == [first, second]
    assert logs[0].out == "line 1\n" and logs[0].exit_code == 0
    capped = logs[1].out
    assert len(capped) < 1200
    assert "4000 characters of output truncated" in capped
    assert capped.startswith("x" * 500) and capped.endswith("x" * 500)
    assert logs[1].attempt == 1


async def test_counts_and_oldest_queued_age(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock)
    assert await store.oldest_queued_age() is None
    await store.enqueue({"payload": {}})
    clock.advance(5)
    await store.enqueue({"payload": {}})
    clock.advance(2)
    await store.dequeue("h")
    counts = await store.counts()
    assert counts[State.QUEUED] == 1 and counts[State.PROCESSING] == 1 and counts[State.FAILED] == 0
    age = await store.oldest_queued_age()
    assert age == timedelta(seconds=2)


async def test_enqueue_rejects_unknown_fields(db: Database) -> None:
    store = make_store(db)
    with pytest.raises(ValueError, match="unknown \\['bogus'\\]"):
        await store.enqueue({"payload": {}, "bogus": 1})


async def test_enqueue_wakes_a_waiting_consumer_at_once(db: Database) -> None:
    store = SqlQueueStore(db, SPEC)
    waiting = asyncio.create_task(store.dequeue("idle", wait=10))
    await asyncio.sleep(0.3)
    start = time.monotonic()
    await store.enqueue({"payload": {}})
    records = await asyncio.wait_for(waiting, 5)
    assert len(records) == 1
    assert time.monotonic() - start < 1.0, "woken by polling, not by the enqueue"


async def test_cancelled_dequeue_hands_back_what_it_leased(db: Database) -> None:
    store = SqlQueueStore(db, SPEC)
    waiting = asyncio.create_task(store.dequeue("idle", wait=10))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await store.enqueue({"payload": {}})
    counts = await store.counts()
    assert counts[State.QUEUED] == 1 and counts[State.PROCESSING] == 0


async def test_concurrent_completions_share_a_statement_and_stay_fenced(db: Database) -> None:
    clock = FakeClock()
    store = make_store(db, clock)
    ids = [await store.enqueue({"payload": {}}) for _ in range(20)]
    held = await store.dequeue("h", limit=20)
    clock.advance(60)
    await store.reset_stalled()
    again = await store.dequeue("h", limit=1)  # same holder, new lease for one job
    stale = next(r for r in held if r.id == again[0].id)
    results = await asyncio.gather(
        *(store.mark_complete(r.lease) for r in [*held, *again]), return_exceptions=True
    )
    assert all(isinstance(r, NotOwned) for r in results[:-1]), "stale leases were accepted"
    # The stale and the fresh lease of the same job went in one batch: only the fresh one won.
    assert isinstance(results[held.index(stale)], NotOwned)
    assert results[-1] is State.COMPLETED
    completed = await store.get(again[0].id)
    assert completed is not None and completed.state is State.COMPLETED
    counts = await store.counts()
    assert counts[State.COMPLETED] == 1 and counts[State.QUEUED] == len(ids) - 1


async def test_queues_that_share_a_table_see_only_their_own_rows(db: Database) -> None:
    clock = FakeClock()
    default = SqlQueueStore(db, job_queue("default"), clock=clock)
    gpu = SqlQueueStore(db, job_queue("gpu"), clock=clock)
    mine = await gpu.enqueue({"payload": {"n": 1}})
    theirs = await default.enqueue({"payload": {"n": 2}})
    assert (await gpu.counts())[State.QUEUED] == 1
    assert await default.get(mine) is None and await gpu.get(theirs) is None
    assert await default.cancel(mine) is None
    (record,) = await gpu.dequeue("h", limit=5)
    assert (record.id, record.queue, record.fields["payload"]) == (mine, "gpu", {"n": 1})
    assert await gpu.dequeue("h", limit=5) == []
    clock.advance(timedelta(minutes=5))
    assert (await default.reset_stalled()).reset_ids == []
    assert (await gpu.reset_stalled()).reset_ids == [mine]
    oldest = await default.oldest_queued_age()
    assert oldest == timedelta(minutes=5)
    (other,) = await default.dequeue("h")
    assert other.id == theirs
