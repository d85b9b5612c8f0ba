"""Queue semantics a user relies on, on both databases: a reset job keeps its place in line,
and a job submission retried after its answer was lost makes one job, not two."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from access_site import Site, served

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.db.values import parse_time
from offload.jobs.queue import spec as job_queue
from offload.queue.states import State
from offload.queue.store import SqlQueueStore
from offload.testing import FakeClock

JOB = {"repo": "demo", "command": ["true"]}


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def payload() -> dict[str, object]:
    return {"payload": {"repositoryName": "demo", "commit": "", "dockerSteps": []}}


async def test_a_reset_job_is_dequeued_before_jobs_queued_after_it(db: Database) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    store = SqlQueueStore(db, job_queue(), clock=clock)
    first = await store.enqueue(payload())
    (held,) = await store.dequeue("exec-1")
    assert held.id == first
    clock.advance(5)
    second = await store.enqueue(payload())
    # exec-1 dies: its job goes back to the queue, ahead of the one queued while it ran.
    clock.advance(store.spec.stalled_after + timedelta(seconds=1))
    assert (await store.reset_stalled()).reset_ids == [first]
    (again,) = await store.dequeue("exec-2")
    assert again.id == first and again.num_resets == 1
    assert again.queued_at == held.queued_at
    (after,) = await store.dequeue("exec-2")
    assert after.id == second


async def test_a_reset_job_keeps_its_queued_time_for_its_user(site: Site) -> None:
    made = await site.as_owner("POST", "/api/jobs", json=JOB)
    store = SqlQueueStore(site.db, job_queue())
    (held,) = await store.dequeue("exec-1")
    assert held.id == made["id"]
    await site.db.fetch(
        "UPDATE jobs SET last_heartbeat_at = :t", {"t": datetime(2000, 1, 1, tzinfo=UTC)}
    )
    assert (await store.reset_stalled()).reset_ids == [made["id"]]
    shown = await site.as_owner("GET", f"/api/jobs/{made['id']}")
    assert shown["state"] == "queued" and shown["numResets"] == 1
    assert parse_time(shown["queuedAt"]) == parse_time(made["queuedAt"])


async def jobs_of(site: Site, user: str) -> list[int]:
    rows = await site.db.fetch(
        "SELECT id FROM jobs WHERE submitted_by = :u ORDER BY id", {"u": user}
    )
    return [int(r["id"]) for r in rows]


async def test_a_retried_submission_returns_the_first_job(site: Site) -> None:
    key = {"Idempotency-Key": "c5a1f7e0-retry-me"}
    first = await site.call("owner", "POST", "/api/jobs", json=JOB, headers=key)
    assert first.status_code == 201, first.text
    again = await site.call("owner", "POST", "/api/jobs", json=JOB, headers=key)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await jobs_of(site, "olive") == [first.json()["id"]]
    # The key is bound to what it first came with.
    other = await site.call(
        "owner", "POST", "/api/jobs", json={**JOB, "command": ["false"]}, headers=key
    )
    assert other.status_code == 422 and "different job submission" in other.text
    # Keys are per user: mallory's same key is hers, and makes her job.
    hers = await site.call("other", "POST", "/api/jobs", json=JOB, headers=key)
    assert hers.status_code == 201 and hers.json()["submittedBy"] == "mallory"
    assert await jobs_of(site, "olive") == [first.json()["id"]]
    # Without a key, every submission makes a job.
    for _ in range(2):
        assert (await site.call("owner", "POST", "/api/jobs", json=JOB)).status_code == 201
    assert len(await jobs_of(site, "olive")) == 3


async def test_a_key_is_forgotten_after_a_day(site: Site) -> None:
    key = {"Idempotency-Key": "daily"}
    first = await site.call("owner", "POST", "/api/jobs", json=JOB, headers=key)
    assert first.status_code == 201
    await site.db.fetch(
        "UPDATE job_submission_keys SET created_at = :t",
        {"t": datetime.now(UTC) - timedelta(hours=24, minutes=1)},
    )
    later = await site.call("owner", "POST", "/api/jobs", json=JOB, headers=key)
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]


async def test_a_refused_submission_leaves_its_key_free(site: Site) -> None:
    key = {"Idempotency-Key": "fix-and-retry"}
    wrong = await site.call("owner", "POST", "/api/jobs", json={**JOB, "repo": "nope"}, headers=key)
    assert wrong.status_code == 400 and "nope" in wrong.text
    fixed = await site.call("owner", "POST", "/api/jobs", json=JOB, headers=key)
    assert fixed.status_code == 201
    # From then on the key stands for the job it made.
    again = await site.call("owner", "POST", "/api/jobs", json=JOB, headers=key)
    assert again.status_code == 200 and again.json()["id"] == fixed.json()["id"]
    assert await jobs_of(site, "olive") == [fixed.json()["id"]]


async def test_racing_retries_make_one_job(site: Site) -> None:
    key = {"Idempotency-Key": "twins"}
    answers = await asyncio.gather(
        *(site.call("owner", "POST", "/api/jobs", json=JOB, headers=key) for _ in range(4))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 1 and set(codes) <= {200, 201, 409}, codes
    made = await jobs_of(site, "olive")
    assert len(made) == 1
    assert {a.json()["id"] for a in answers if a.status_code < 300} == set(made)
    for answer in answers:
        if answer.status_code == 409:
            assert "still being made" in answer.text


async def test_a_malformed_key_is_refused(site: Site) -> None:
    for bad in ("", "k" * 256, "has space", "tab\tkey", "ünïcode"):
        answer = await site.call(
            "owner", "POST", "/api/jobs", json=JOB, headers={"Idempotency-Key": bad.encode()}
        )
        assert answer.status_code == 422, (bad, answer.text)
        assert "Idempotency-Key" in answer.text
    assert await jobs_of(site, "olive") == []


class AnswerLosingProxy:
    """A TCP proxy in front of the server that loses the answer to the first job submission
    (the server made the job; the client never hears of it), and records each submission's
    Idempotency-Key."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.keys: list[str] = []
        self.dropped = False
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> AnswerLosingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        lose = asyncio.Event()

        async def requests() -> None:
            while data := await reader.read(65536):
                if data.startswith(b"POST /api/jobs "):
                    found = re.search(rb"(?im)^idempotency-key: *(\S*)\r$", data)
                    self.keys.append(found[1].decode() if found else "")
                    if not self.dropped:
                        self.dropped = True
                        lose.set()
                up_writer.write(data)
                await up_writer.drain()

        async def answers() -> None:
            while data := await up_reader.read(65536):
                if lose.is_set():
                    return  # the job was made; its answer goes nowhere
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.ensure_future(requests()), asyncio.ensure_future(answers())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for w in (writer, up_writer):
            w.close()


async def offload_run(site: Site, url: str) -> tuple[int, str, str]:
    env = {**os.environ, "OFFLOAD_URL": url, "OFFLOAD_TOKEN": site.tokens["owner"]}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "offload", "run", "--repo", "demo", "--detach", "--", "true"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_offload_run_resends_a_lost_submission_with_its_key(site: Site) -> None:
    async with AnswerLosingProxy(site.url) as proxy:
        code, out, err = await offload_run(site, proxy.url)
        assert code == 0, err
        (made,) = await jobs_of(site, "olive")
        assert out.strip() == str(made)
        # Sent twice, with one key: the second answer was the first job.
        assert len(proxy.keys) == 2 and proxy.keys[0] == proxy.keys[1] != ""
        # The next submission is a new one, with a key of its own.
        code, out, err = await offload_run(site, proxy.url)
        assert code == 0, err
        assert len(proxy.keys) == 3 and proxy.keys[2] not in ("", proxy.keys[0])
    assert len(await jobs_of(site, "olive")) == 2
    store = SqlQueueStore(site.db, job_queue())
    record = await store.get(made)
    assert record is not None and record.state is State.QUEUED
