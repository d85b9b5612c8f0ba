"""The executor protocol against hostile input, over real HTTP, on both databases.

A job's output is whatever its steps print, NUL bytes included; heartbeats, ids and names come
from whoever holds the executor token or a job token. None of it may make the server fail
(5xx) or lose a job's output, and a token tells nothing about jobs other than its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_server import serve

from offload.config import Settings
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.dispatch.access import executor_token
from offload.jobs.queue import spec as job_queue
from offload.protocol import routes
from offload.queue.states import State
from offload.queue.store import SqlQueueStore


@dataclass
class Server:
    """A served offload and the shared executor token."""

    db: Database
    url: str
    token: str
    store: SqlQueueStore

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"token-executor {self.token}"},
        )

    async def lease(self, executor: str) -> dict[str, Any]:
        """A new job, dequeued by `executor`; its payload (with its job token)."""
        step = {"key": "run", "image": "", "commands": ["true"], "dir": ""}
        payload = {"repositoryName": "demo", "commit": "", "dockerSteps": [step]}
        job_id = await self.store.enqueue({"payload": payload})
        async with self.client() as http:
            leased = await http.post(routes.dequeue("default"), json={"executorName": executor})
        assert leased.status_code == 200, leased.text
        job: dict[str, Any] = leased.json()
        assert job["id"] == job_id
        return job


@pytest.fixture
async def server(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url.raw)
    async with serve(db, settings) as url:
        yield Server(db, url, await executor_token(db), SqlQueueStore(db, job_queue()))


def job_headers(job: dict[str, Any], executor: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {job['token']}",
        routes.JOB_ID_HEADER: str(job["id"]),
        routes.EXECUTOR_NAME_HEADER: executor,
    }


def raw(body: dict[str, Any]) -> bytes:
    """`body` as JSON with every non-ASCII character escaped (lone surrogates too)."""
    return json.dumps(body).encode()


def entry(**changes: Any) -> dict[str, Any]:
    return {
        "key": "step.run",
        "command": ["sh", "-c", "printf 'a\\0b'"],
        "startTime": datetime.now(UTC).isoformat(),
        **changes,
    }


async def test_nul_in_a_jobs_output_is_stored_escaped_and_read_back(server: Server) -> None:
    job = await server.lease("exec-1")
    headers = {**job_headers(job, "exec-1"), "Content-Type": "application/json"}
    base = {"executorName": "exec-1", "jobId": job["id"]}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        added = await http.post(
            routes.job_call("default", "addExecutionLogEntry"),
            content=raw({**base, **entry(key="step.\x00run", out="stdout: a\x00b\n")}),
            headers=headers,
        )
        assert added.status_code == 200, added.text
        out = "stdout: a\x00b\nstdout: \x00\x00 end\nstderr: half a pair \ud800!\n"
        updated = await http.post(
            routes.job_call("default", "updateExecutionLogEntry"),
            content=raw({**base, **entry(out=out, exitCode=0), "entryId": added.json()}),
            headers=headers,
        )
        assert updated.status_code == 204, updated.text
        failed = await http.post(
            routes.job_call("default", "markFailed"),
            content=raw({**base, "errorMessage": "step printed \x00 and died"}),
            headers=headers,
        )
        assert failed.status_code == 204, failed.text
    (stored,) = await server.store.logs(job["id"])
    assert stored.out == "stdout: a␀b\nstdout: ␀␀ end\nstderr: half a pair \ufffd!\n"
    assert stored.key == "step.run" and stored.exit_code == 0
    assert stored.command == ["sh", "-c", "printf 'a\\0b'"]
    record = await server.store.get(job["id"])
    assert record is not None and record.state is State.FAILED
    assert record.failure_message == "step printed ␀ and died"


async def test_nul_in_a_log_key_and_command_is_escaped_not_refused(server: Server) -> None:
    job = await server.lease("exec-1")
    body = {
        "executorName": "exec-1",
        "jobId": job["id"],
        "entries": [entry(key="setup.\x00", command=["echo", "\x00"], out="\x00")],
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        added = await http.post(
            routes.job_call("default", "addExecutionLogEntries"),
            content=raw(body),
            headers={**job_headers(job, "exec-1"), "Content-Type": "application/json"},
        )
    assert added.status_code == 200, added.text
    (stored,) = await server.store.logs(job["id"])
    assert (stored.key, stored.command, stored.out) == ("setup.␀", ["echo", "␀"], "␀")


BIG = 10**20  # 21 digits: past int64

# Heartbeat bodies that must be refused with a 4xx naming the field (route: None = multi).
BAD_HEARTBEATS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("jobIds", "default", {"jobIds": ["abc"]}),
    ("jobIds", "default", {"jobIds": [""]}),
    ("jobIds", "default", {"jobIds": ["12345678901234567890"]}),
    ("jobIds", "default", {"jobIds": [BIG]}),
    ("jobIds", "default", {"jobIds": [-1]}),
    ("jobIds", "default", {"jobIds": [1.5]}),
    ("jobIds", "default", {"jobIds": [None]}),
    ("jobIds", "default", {"jobIds": "1"}),
    ("jobIds", "default", {"jobIds": list(range(1, 1002))}),
    ("jobIds", None, {"jobIds": ["abc-default"]}),
    ("jobIds", None, {"jobIds": ["9223372036854775808-default"]}),
    ("jobIds", None, {"jobIds": ["1-default\x00"]}),
    ("jobIdsByQueue", None, {"jobIdsByQueue": [{"queueName": "default", "jobIds": ["x"]}]}),
    ("jobIdsByQueue", None, {"jobIdsByQueue": [{"queueName": "\x00", "jobIds": []}]}),
    ("executorName", "default", {"executorName": "e" * 256}),
    ("executorName", None, {"executorName": ""}),
    ("executorName", None, {"executorName": "exec\nInjected: header"}),
    ("executorName", None, {"executorName": "exec\x00"}),
    ("executorName", None, {"executorName": None}),
    ("queueNames", None, {"queueNames": ["default\x00"]}),
    ("queueNames", None, {"queueNames": ["q" * 65]}),
    ("os", None, {"os": "linux\x00"}),
    ("gitVersion", None, {"gitVersion": "g" * 65}),
    ("executorVersion", "default", {"executorVersion": "v\x00"}),
]


async def test_every_bad_heartbeat_is_a_4xx_that_names_the_field(server: Server) -> None:
    async with server.client() as http:
        for field, queue, change in BAD_HEARTBEATS:
            body = {"executorName": "exec-1", "jobIds": [], **change}
            answer = await http.post(
                routes.heartbeat(queue),
                content=raw(body),
                headers={"Content-Type": "application/json"},
            )
            assert 400 <= answer.status_code < 500, (change, answer.status_code, answer.text)
            assert field in answer.text, (change, answer.text)
        # Bodies that are no heartbeat at all.
        for content in (b"[]", b"null", b'"x"', b"{", b"\xff\xfe", b'{"executorName": {}}'):
            for queue in ("default", None):
                answer = await http.post(
                    routes.heartbeat(queue),
                    content=content,
                    headers={"Content-Type": "application/json"},
                )
                assert 400 <= answer.status_code < 500, (content, answer.status_code)
        # A heartbeat on a queue the server does not have says which ones it has.
        unknown = await http.post(routes.heartbeat("nope%00"), json={"executorName": "e"})
        assert unknown.status_code == 400 and "valid queues: default" in unknown.text
    # None of it registered an executor.
    assert await server.db.fetch("SELECT hostname FROM executors") == []


async def test_a_good_heartbeat_still_answers_by_queue(server: Server) -> None:
    job = await server.lease("exec-1")
    async with server.client() as http:
        single = await http.post(
            routes.heartbeat("default"),
            json={"executorName": "exec-1", "jobIds": [job["id"], str(job["id"]), "7-other"]},
        )
        multi = await http.post(
            routes.heartbeat(),
            json={"executorName": "exec-1", "jobIds": [f"{job['id']}-default"]},
        )
    assert single.status_code == 200 and single.json()["knownIds"] == [str(job["id"])]
    assert multi.status_code == 200 and multi.json()["knownIds"] == [f"{job['id']}-default"]


async def test_bad_ids_and_names_on_job_calls_are_4xx_that_name_the_field(
    server: Server,
) -> None:
    job = await server.lease("exec-1")
    base = {"executorName": "exec-1", "jobId": job["id"]}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("markComplete", "jobId", {"jobId": "abc"}),
        ("markComplete", "jobId", {"jobId": ""}),
        ("markComplete", "jobId", {"jobId": 2**63}),
        ("markComplete", "jobId", {"jobId": BIG}),
        ("markComplete", "jobId", {"jobId": -5}),
        ("markComplete", "executorName", {"executorName": "e" * 256}),
        ("markComplete", "executorName", {"executorName": "exec-1\r\n"}),
        ("markErrored", "errorMessage", {"errorMessage": "x" * (1024 * 1024 + 1)}),
        ("addExecutionLogEntry", "exitCode", entry(exitCode=2**40)),
        ("addExecutionLogEntry", "durationMs", entry(durationMs=-1)),
        ("addExecutionLogEntry", "key", entry(key="k" * 1025)),
        ("updateExecutionLogEntry", "entryId", {**entry(), "entryId": 2**64}),
        ("updateExecutionLogEntry", "entryId", {**entry(), "entryId": "1e3"}),
    ]
    async with server.client() as http:
        for verb, field, change in cases:
            answer = await http.post(
                routes.job_call("default", verb),
                content=raw({**base, **change}),
                headers={"Content-Type": "application/json"},
            )
            assert 400 <= answer.status_code < 500, (verb, field, answer.status_code)
            assert field in answer.text, (verb, field, answer.text)
        dequeue_cases: list[tuple[str, bytes]] = [
            ("executorName", raw({"executorName": "e" * 256})),
            ("executorName", raw({"executorName": "a\tb"})),
            ("wait", b'{"executorName": "e", "wait": NaN}'),
            ("wait", b'{"executorName": "e", "wait": 1e999}'),
            ("wait", raw({"executorName": "e", "wait": -5})),
            ("numCPUs", raw({"executorName": "e", "numCPUs": BIG})),
            ("queues", raw({"executorName": "e", "queues": ["q"] * 65})),
        ]
        for field, content in dequeue_cases:
            answer = await http.post(
                routes.dequeue(), content=content, headers={"Content-Type": "application/json"}
            )
            assert 400 <= answer.status_code < 500, (content[:60], answer.status_code)
            assert field in answer.text, (content[:60], answer.text)
    record = await server.store.get(job["id"])
    assert record is not None and record.state is State.PROCESSING


JOB_VERBS: list[tuple[str, dict[str, Any]]] = [
    ("addExecutionLogEntry", entry(out="not mine")),
    ("addExecutionLogEntries", {"entries": [entry(out="not mine")]}),
    ("updateExecutionLogEntry", {**entry(out="not mine"), "entryId": 1}),
    ("markComplete", {}),
    ("markErrored", {"errorMessage": "not mine"}),
    ("markFailed", {"errorMessage": "not mine"}),
    ("release", {}),
]


async def test_whoever_does_not_hold_a_job_is_told_404(server: Server) -> None:
    mine = await server.lease("exec-1")
    theirs = await server.lease("exec-2")
    own = job_headers(mine, "exec-1")
    body = {"executorName": "exec-1", "jobId": mine["id"]}
    # (headers, body) of callers that do not hold `mine` as they claim to.
    callers: list[tuple[str, dict[str, str], dict[str, Any]]] = [
        ("its token, another executor's name", job_headers(mine, "exec-2"), body),
        (
            "its token, another executor's name in the body too",
            job_headers(mine, "exec-2"),
            {**body, "executorName": "exec-2"},
        ),
        ("its token, named by its holder, for the other job", own, {**body, "jobId": theirs["id"]}),
        ("its token, the body naming another executor", own, {**body, "executorName": "exec-2"}),
        (
            "its token with the other job's id header",
            {**own, routes.JOB_ID_HEADER: str(theirs["id"])},
            {**body, "jobId": theirs["id"]},
        ),
        ("the other job's token", job_headers(theirs, "exec-2"), body),
        (
            "the executor token, as another executor",
            {"Authorization": f"token-executor {server.token}"},
            {**body, "executorName": "exec-2"},
        ),
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for who, headers, claimed in callers:
            for verb, extra in JOB_VERBS:
                answer = await http.post(
                    routes.job_call("default", verb), json={**claimed, **extra}, headers=headers
                )
                assert answer.status_code == 404, (who, verb, answer.status_code, answer.text)
        # The git smart-HTTP route too: a job's token reaches its own repository only.
        refs = "/info/refs?service=git-upload-pack"
        for repo, headers in (("other", own), ("demo", job_headers(mine, "exec-2"))):
            answer = await http.get(f"{routes.git(repo)}{refs}", headers=headers)
            assert answer.status_code == 404, (repo, answer.status_code, answer.text)
    assert await server.store.logs(mine["id"]) == []
    for job in (mine, theirs):
        record = await server.store.get(job["id"])
        assert record is not None and record.state is State.PROCESSING
