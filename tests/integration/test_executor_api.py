"""The executor queue API over real HTTP, with the executor's own client, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from app_server import serve

from offload.config import Settings
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.dispatch.access import executor_token
from offload.executor.client import ExecutorClient, Unauthorized
from offload.executor.cmdlog import CommandLog
from offload.executor.redaction import Redactor
from offload.jobs.queue import spec as job_queue
from offload.protocol import routes
from offload.queue.record import LogEntry, NotOwned
from offload.queue.states import State
from offload.queue.store import SqlQueueStore


@pytest.fixture
async def server_url(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[str]:
    async with serve(db, Settings(data_dir=tmp_path / "data", database_url=db_url.raw)) as url:
        yield url


def job_payload(**changes: object) -> dict[str, object]:
    return {
        "payload": {
            "repositoryName": "",
            "commit": "",
            "dockerSteps": [{"key": "run", "image": "", "commands": ["true"], "dir": ""}],
            **changes,
        }
    }


async def hand_back_every_job(db: Database, store: SqlQueueStore) -> None:
    """Make every processing job look abandoned and let the resetter queue it again."""
    await db.fetch(
        "UPDATE jobs SET last_heartbeat_at = :t", {"t": datetime(2000, 1, 1, tzinfo=UTC)}
    )
    await store.reset_stalled()


async def client_for(
    db: Database, url: str, name: str = "exec-1", token: str | None = None
) -> ExecutorClient:
    return ExecutorClient(
        url, token or await executor_token(db), ["default"], name=name, runtime="shell"
    )


async def test_wrong_token_is_refused_with_a_clear_message(db: Database, server_url: str) -> None:
    client = await client_for(db, server_url, token="not-the-token")
    with pytest.raises(Unauthorized, match="refused the executor token"):
        await client.check_auth()
    with pytest.raises(Unauthorized):
        await client.dequeue("exec-1")
    await client.close()


async def test_dequeue_heartbeat_logs_and_complete(db: Database, server_url: str) -> None:
    store = SqlQueueStore(db, job_queue())
    client = await client_for(db, server_url)
    assert await client.dequeue("exec-1") == []  # 204
    job_id = await store.enqueue(job_payload())
    (record,) = await client.dequeue("exec-1", wait=1)
    job = record.fields["job"]
    assert job.id == job_id and job.queue == "default" and len(job.token) == 40
    beat = await client.heartbeat("exec-1", [record.id])
    assert beat.known_ids == [record.id] and beat.cancel_ids == []
    entry = LogEntry(key="step.shell.run", command=["true"], start_time=datetime.now(UTC))
    entry_id = await client.add_log_entry(record.lease, entry)
    done = LogEntry(
        key="step.shell.run",
        command=["true"],
        start_time=entry.start_time,
        exit_code=0,
        out="stdout: ok\n",
    )
    await client.update_log_entry(record.lease, entry_id, done)
    assert await client.mark_complete(record.lease) is State.COMPLETED
    stored = await store.get(job_id)
    assert stored is not None and stored.state is State.COMPLETED
    assert stored.worker_hostname == "exec-1"
    logs = await store.logs(job_id)
    assert [(e.key, e.exit_code, e.out) for e in logs] == [("step.shell.run", 0, "stdout: ok\n")]
    await client.close()


async def test_log_entries_added_together_land_in_order_all_or_none(
    db: Database, server_url: str
) -> None:
    store = SqlQueueStore(db, job_queue())
    client = await client_for(db, server_url)
    job_id = await store.enqueue(job_payload())
    (record,) = await client.dequeue("exec-1")
    now = datetime.now(UTC)
    entries = [
        LogEntry(key=f"setup.{i}", command=["true"], start_time=now, exit_code=i, out=f"{i}\n")
        for i in range(3)
    ]
    ids = await client.add_log_entries(record.lease, entries)
    assert ids == sorted(ids) and len(set(ids)) == 3
    await client.update_log_entry(
        record.lease,
        ids[1],
        LogEntry(key="setup.1", command=["true"], start_time=now, exit_code=7, out="again\n"),
    )
    stored = [(e.key, e.exit_code, e.out) for e in await store.logs(job_id)]
    assert stored == [("setup.0", 0, "0\n"), ("setup.1", 7, "again\n"), ("setup.2", 2, "2\n")]

    await hand_back_every_job(db, store)
    with pytest.raises(NotOwned):
        await client.add_log_entries(record.lease, entries)
    assert len(await store.logs(job_id)) == 3
    await client.close()


async def test_job_token_is_refused_once_the_job_ended(db: Database, server_url: str) -> None:
    store = SqlQueueStore(db, job_queue())
    client = await client_for(db, server_url)
    await store.enqueue(job_payload())
    (record,) = await client.dequeue("exec-1")
    held = client.held(record.lease)
    await client.mark_complete(record.lease)
    async with httpx.AsyncClient(base_url=server_url) as http:
        response = await http.post(
            routes.job_call("default", "markComplete"),
            json={"executorName": "exec-1", "jobId": held.job_id},
            headers={
                "Authorization": f"Bearer {held.token}",
                routes.JOB_ID_HEADER: str(held.job_id),
                routes.EXECUTOR_NAME_HEADER: "exec-1",
            },
        )
    assert response.status_code == 401
    assert "has ended" in response.text
    await client.close()


async def test_cancel_reaches_the_executor_through_its_heartbeat(
    db: Database, server_url: str
) -> None:
    store = SqlQueueStore(db, job_queue())
    client = await client_for(db, server_url)
    job_id = await store.enqueue(job_payload())
    (record,) = await client.dequeue("exec-1")
    await store.cancel(job_id)
    beat = await client.heartbeat("exec-1", [record.id])
    assert beat.cancel_ids == [record.id]
    await client.mark_failed(record.lease, "canceled on request")
    stored = await store.get(job_id)
    assert stored is not None and stored.state is State.CANCELED
    await client.close()


async def test_a_reset_job_is_lost_to_its_old_executor(db: Database, server_url: str) -> None:
    store = SqlQueueStore(db, job_queue())
    old = await client_for(db, server_url, "exec-old")
    new = await client_for(db, server_url, "exec-new")
    job_id = await store.enqueue(job_payload())
    (stale,) = await old.dequeue("exec-old")
    await hand_back_every_job(db, store)
    (fresh,) = await new.dequeue("exec-new")
    assert (await old.heartbeat("exec-old", [stale.id])).known_ids == []
    with pytest.raises(NotOwned):
        await old.mark_complete(stale.lease)
    assert await new.mark_complete(fresh.lease) is State.COMPLETED
    stored = await store.get(job_id)
    assert stored is not None and stored.worker_hostname == "exec-new"
    await old.close()
    await new.close()


async def test_malformed_payload_is_failed_with_the_reason(db: Database, server_url: str) -> None:
    store = SqlQueueStore(db, job_queue())
    client = await client_for(db, server_url)
    bad = await store.enqueue({"payload": {"dockerSteps": "not a list"}})
    good = await store.enqueue(job_payload())
    (record,) = await client.dequeue("exec-1")
    assert record.fields["job"].id == good
    failed = await store.get(bad)
    assert failed is not None and failed.state is State.FAILED
    assert failed.failure_message is not None
    assert failed.failure_message.startswith("failed to transform record")
    assert "dockerSteps" in failed.failure_message
    await client.close()


async def test_long_poll_answers_when_a_job_arrives(db: Database, server_url: str) -> None:
    store = SqlQueueStore(db, job_queue())
    client = await client_for(db, server_url)
    waiting = asyncio.create_task(client.dequeue("exec-1", wait=10))
    await asyncio.sleep(0.3)
    started = asyncio.get_running_loop().time()
    await store.enqueue(job_payload())
    (record,) = await asyncio.wait_for(waiting, 5)
    assert asyncio.get_running_loop().time() - started < 1.5
    assert record.fields["job"].queue == "default"
    await client.close()


async def test_unknown_queue_lists_the_valid_ones(db: Database, server_url: str) -> None:
    token = await executor_token(db)
    async with httpx.AsyncClient(base_url=server_url) as http:
        response = await http.post(
            routes.dequeue("nope"),
            json={"executorName": "e"},
            headers={"Authorization": f"token-executor {token}"},
        )
        assert response.status_code == 400 and "valid queues: default" in response.text
        bad = await http.post(
            routes.dequeue("default"),
            json={"nope": 1},
            headers={"Authorization": f"token-executor {token}"},
        )
        assert bad.status_code == 400 and "executorName" in bad.text


async def test_multi_queue_dequeue_follows_the_configured_weights(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url.raw,
        job_queues=["default", "gpu"],
        executor_queue_weights={"gpu": 3},
    )
    default, gpu = SqlQueueStore(db, job_queue("default")), SqlQueueStore(db, job_queue("gpu"))
    await default.enqueue_many([job_payload()] * 300)
    gpu_ids = {await gpu.enqueue(job_payload()) for _ in range(300)}
    async with serve(db, settings) as url:
        token = await executor_token(db)
        gpu_only = ExecutorClient(url, token, ["gpu"], name="gpu-1", runtime="shell")
        both = ExecutorClient(url, token, ["default", "gpu"], name="any-1", runtime="shell")
        (only,) = await gpu_only.dequeue("gpu-1")
        assert only.queue == "gpu" and only.fields["job"].id in gpu_ids
        taken = [(await both.dequeue("any-1"))[0] for _ in range(200)]
        await gpu_only.close()
        await both.close()
    share = sum(record.queue == "gpu" for record in taken) / len(taken)
    # Weighted random choice at 3:1: 0.75 expected, the bounds are more than 3 sigma away.
    assert 0.62 < share < 0.88, share
    assert all((r.fields["job"].id in gpu_ids) == (r.queue == "gpu") for r in taken)
    assert (await gpu.counts())[State.PROCESSING] == 1 + sum(r.queue == "gpu" for r in taken)
    assert (await default.counts())[State.PROCESSING] == sum(r.queue == "default" for r in taken)


async def test_command_logs_land_in_order_and_a_lost_job_surfaces_at_drain(
    db: Database, server_url: str
) -> None:
    store = SqlQueueStore(db, job_queue())
    client = await client_for(db, server_url)
    job_id = await store.enqueue(job_payload())
    (record,) = await client.dequeue("exec-1")
    logs = CommandLog(client, record.lease, Redactor({"hunter2": "SECRET"}))
    for i in range(6):
        # Nothing here waits for the server: the writes go out behind the commands.
        async with logs.command(f"step.{i}", ["echo", str(i)]) as command:
            command.write("stdout", f"line {i} hunter2")
            command.exit_code = i
    await logs.drain()
    stored = [(e.key, e.exit_code, e.out) for e in await store.logs(job_id)]
    assert stored == [(f"step.{i}", i, f"stdout: line {i} SECRET\n") for i in range(6)]

    # The job is handed to someone else: the next entries cannot land, and drain says so.
    await hand_back_every_job(db, store)
    async with logs.command("step.late", ["true"]) as command:
        command.exit_code = 0
    with pytest.raises(NotOwned):
        await logs.drain()
    assert len(await store.logs(job_id)) == 6
    await client.close()
