"""A live log reads only what it lacks: following a growing log of 100,000 lines, each read
of the store returns the new output and a short overlap, never the whole log again, and the
events still carry the output exactly; output rewritten rather than extended (the store keeps
the head and tail of an entry past its limit) starts the reader over with the whole of it.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from offload.db.base import Database
from offload.jobs.queue import spec
from offload.queue.record import Lease, LogEntry
from offload.queue.store import SqlQueueStore
from offload.web import livelog
from offload.web.livelog import Cursor, LogFollower

LINES = 100_000
STEPS = 4
CHUNKS = 25


def step(out: str, exit_code: int | None = None, key: str = "step.run") -> LogEntry:
    return LogEntry(
        key=key, command=["sh"], start_time=datetime.now(UTC), exit_code=exit_code, out=out
    )


def logs_of(events: list[str]) -> list[dict[str, object]]:
    """The data of the `log` events among `events`."""
    found = []
    for text in events:
        if text.startswith("event: log\n"):
            found.append(json.loads(text.split("data: ", 1)[1]))
    return found


async def running_job(db: Database) -> tuple[SqlQueueStore, int, Lease]:
    store = SqlQueueStore(db, spec())
    job_id = await store.enqueue({"payload": {}, "namespace": "olive", "submitted_by": "olive"})
    (record,) = await store.dequeue("exec-test")
    return store, job_id, record.lease


async def test_following_a_long_log_reads_only_what_is_new(db: Database) -> None:
    """100,000 lines over four steps (each under the store's limit of an entry)."""
    store, job_id, lease = await running_job(db)
    first = await store.add_log_entry(lease, step("stdout: setup\n", 0, key="setup"))
    follower = LogFollower(Cursor())
    events: list[str] = []
    read_chars: list[int] = []
    written: dict[int, str] = {}
    per_step = LINES // STEPS
    for s in range(STEPS):
        entry_id = await store.add_log_entry(lease, step("", key=f"step.{s}"))
        written[entry_id] = ""
        for n in range(CHUNKS):
            lines = range(
                s * per_step + n * per_step // CHUNKS, s * per_step + (n + 1) * per_step // CHUNKS
            )
            written[entry_id] += "".join(f"stdout: line-{i:06d}\n" for i in lines)
            done = 0 if n == CHUNKS - 1 else None
            await store.update_log_entry(
                lease, entry_id, step(written[entry_id], done, f"step.{s}")
            )
            read = await store.logs_from(job_id, *follower.frontier())
            read_chars.append(sum(len(part.entry.out) for part in read))
            events += list(follower.changes(read))
    texts = logs_of(events)
    for entry_id, text in written.items():
        assert "".join(str(d["text"]) for d in texts if d["entry"] == entry_id) == text
    assert [d["text"] for d in texts if d["entry"] == first] == ["stdout: setup\n"]
    assert texts[-1]["exitCode"] == 0
    total = sum(len(t) for t in written.values())
    chunk = max(len(t) for t in written.values()) // CHUNKS
    # Each read is the chunk just written plus the overlap, never the log read again.
    assert total >= 2_000_000
    assert max(read_chars) <= chunk + livelog.TAIL + 100, read_chars[:5]
    # Nothing is new: a read returns only the overlap.
    idle = await store.logs_from(job_id, *follower.frontier())
    assert sum(len(p.entry.out) for p in idle) <= livelog.TAIL
    assert list(follower.changes(idle)) == []


async def test_an_entry_past_the_stores_limit_reaches_the_reader_as_stored(db: Database) -> None:
    store, job_id, lease = await running_job(db)
    entry_id = await store.add_log_entry(lease, step(""))
    follower = LogFollower(Cursor())
    events: list[str] = []
    written = ""
    for n in range(6):  # 6 x 300,000 characters: past the limit of 1 MiB after the fourth
        written += "".join(f"stdout: {n}-{i:06d}\n" for i in range(20_000))
        await store.update_log_entry(lease, entry_id, step(written, 0 if n == 5 else None))
        for _ in range(2):  # a rewrite found by a partial read is read whole next time
            events += list(follower.changes(await store.logs_from(job_id, *follower.frontier())))
    (stored,) = await store.logs(job_id)
    assert len(stored.out) < len(written) and "characters of output truncated" in stored.out
    texts = logs_of(events)
    since_reset = [i for i, d in enumerate(texts) if d["reset"]][-1]
    assert "".join(str(d["text"]) for d in texts[since_reset:]) == stored.out


async def test_output_rewritten_past_the_overlap_starts_the_reader_over(db: Database) -> None:
    store, job_id, lease = await running_job(db)
    head = "".join(f"stdout: early-{i}\n" for i in range(200))
    entry_id = await store.add_log_entry(lease, step(head))
    follower = LogFollower(Cursor())
    events = list(follower.changes(await store.logs_from(job_id, *follower.frontier())))
    assert "".join(str(d["text"]) for d in logs_of(events)) == head
    # The store cut the middle (its limit): the output no longer extends what was sent.
    cut = head[:100] + "\n[offload: 12345 bytes left out]\n" + head[-50:] + "stdout: more\n"
    await store.update_log_entry(lease, entry_id, step(cut))
    events = []
    for _ in range(2):  # the partial read notices; the next one reads the entry whole
        events += list(follower.changes(await store.logs_from(job_id, *follower.frontier())))
    texts = logs_of(events)
    assert texts[0]["reset"] is True
    assert "".join(str(d["text"]) for d in texts) == cut
    # A reconnect from a cursor in the middle of an entry gets only the rest of it.
    middle = Cursor(entry_id, 100)
    resumed = LogFollower(middle)
    rest = list(resumed.changes(await store.logs_from(job_id, *resumed.frontier())))
    assert "".join(str(d["text"]) for d in logs_of(rest)) == cut[100:]
