"""The executors page over a served offload, as a browser without JavaScript sees it: the job
limits an executor reports (and an older executor that reports none), the jobs each executor
holds, and the executor token's reveal and rotate forms (CSRF, site admins only, the old token
refused by the executor API afterwards)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from access_site import Site, served
from web_client import csrf_of, signed_in

from offload.batches.queue import SPEC as BATCH_SPEC
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.dispatch.access import executor_token
from offload.executor.client import ExecutorClient
from offload.executor.config import ExecutorConfig
from offload.executor.limits import reported
from offload.jobs.service import JobRequest
from offload.protocol import routes
from offload.queue.store import SqlQueueStore


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def row_of(page: str, hostname: str) -> str:
    """The executors table's row of `hostname`, as HTML."""
    start = page.index(f'<th scope="row">{hostname}</th>')
    return page[start : page.index("</tr>", start)]


def shown_token(page: str) -> str:
    found = re.search(r'id="executor-token" class="token" value="([^"]*)"', page)
    assert found is not None, "the page shows no token"
    return found[1]


async def beat(site: Site, body: dict[str, object], token: str | None = None) -> httpx.Response:
    """A multi-queue heartbeat, as any executor sends it (with the shared token by default)."""
    token = token or await executor_token(site.db)
    async with httpx.AsyncClient(base_url=site.url, timeout=60) as client:
        return await client.post(
            routes.heartbeat(), json=body, headers={"Authorization": f"token-executor {token}"}
        )


async def test_the_executor_reports_its_configured_limits_and_the_page_shows_them(
    site: Site, tmp_path: Path
) -> None:
    config = ExecutorConfig.from_env(
        {
            "EXECUTOR_FRONTEND_URL": site.url,
            "EXECUTOR_REGISTRATION_TOKEN": await executor_token(site.db),
            "EXECUTOR_QUEUE_NAME": "default",
            "EXECUTOR_NAME": "exec-limited",
            "EXECUTOR_DATA_DIR": str(tmp_path / "executor"),
            "EXECUTOR_JOB_MEMORY": "1536M",
            "EXECUTOR_JOB_NUM_CPUS": "1.5",
            "EXECUTOR_JOB_PIDS": "512",
            "EXECUTOR_JOB_TMP_SIZE": "256M",
            "EXECUTOR_MAXIMUM_RUNTIME_PER_JOB": "45m",
        }
    )
    limits = reported(config.limits(), config.max_runtime, disk=False)
    assert limits["memory"] == "1.5G" and limits["disk"] == "none"
    # The shell runtime confines nothing but output and time: it says so.
    shell = reported(config.limits(), config.max_runtime, disk=True, confined=False)
    assert shell == {**dict.fromkeys(limits, "none"), "output": "100M", "time": "45m"}
    client = ExecutorClient(
        site.url, config.token, config.queues, name=config.name, runtime="sandbox", limits=limits
    )
    try:
        await client.heartbeat(config.name, [])
    finally:
        await client.close()

    async with signed_in(site, "root") as root:
        page = await root.get("/executors")
    assert page.status_code == 200, page.text
    row = row_of(page.text, "exec-limited")
    for label, value in [
        ("memory", "1.5G"),
        ("CPUs", "1.5"),
        ("pids", "512"),
        ("disk", "none"),
        ("/tmp", "256M"),
        ("output", "100M"),
        ("time", "45m"),
    ]:
        assert f'<span class="muted">{label}</span> {value}</li>' in row, (label, row)
    assert "sandbox" in row and ">active<" in row
    # Shown in the page's order, whatever order the database keeps the keys in.
    assert row.index(">memory<") < row.index(">CPUs<") < row.index(">time<")
    # The API (`offload executors list --json`) reports them too.
    listed = await site.call("admin", "GET", "/api/executors")
    (entry,) = [e for e in listed.json() if e["hostname"] == "exec-limited"]
    assert entry["limits"] == limits and entry["runningJobs"] == {}


async def test_an_executor_that_reports_no_limits_still_registers(site: Site) -> None:
    # What an executor that predates the limits field sends (Sourcegraph's field names only).
    old = {
        "version": "V2",
        "executorName": "exec-old",
        "queueNames": ["default"],
        "jobIdsByQueue": [],
        "os": "linux",
        "architecture": "amd64",
        "executorVersion": "0.9.0",
        "gitVersion": "2.39.2",
    }
    answer = await beat(site, old)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"knownIds": [], "cancelIds": []}
    async with signed_in(site, "root") as root:
        page = await root.get("/executors")
    row = row_of(page.text, "exec-old")
    assert "not reported" in row and "0.9.0" in row and "linux / amd64" in row

    # Limits a newer executor sends are bounded in number and length: 400, not stored.
    too_many = await beat(site, {**old, "limits": {f"k{i}": "1" for i in range(17)}})
    too_long = await beat(site, {**old, "limits": {"memory": "9" * 65}})
    assert (too_many.status_code, too_long.status_code) == (400, 400)


async def test_the_jobs_an_executor_holds_are_listed(site: Site) -> None:
    jobs = site.app.state.jobs
    held = await jobs.create(
        JobRequest(repo="demo", command=["sleep", "60"], namespace="olive", submitted_by="olive")
    )
    (record,) = await jobs.stores["default"].dequeue("exec-busy")
    assert record.id == held
    batches = SqlQueueStore(site.db, BATCH_SPEC)
    workspace_job = await batches.enqueue(
        {"batch_spec_id": 1, "workspace_id": 1, "user_name": "olive", "fair_key": 1}
    )
    assert [r.id for r in await batches.dequeue("exec-busy")] == [workspace_job]

    body = {
        "executorName": "exec-busy",
        "queueNames": ["default", "batches"],
        # The last one is no job of this executor: the queues do not confirm it.
        "jobIds": [f"{held}-default", f"{workspace_job}-batches", "999999-default"],
    }
    answer = await beat(site, body)
    assert answer.status_code == 200, answer.text
    assert sorted(answer.json()["knownIds"]) == sorted(
        [f"{held}-default", f"{workspace_job}-batches"]
    )
    await beat(site, {"executorName": "exec-idle", "queueNames": ["default"]})

    async with signed_in(site, "root") as root:
        page = (await root.get("/executors")).text
    busy = row_of(page, "exec-busy")
    assert f'<a href="/jobs/{held}">job {held}</a>' in busy
    assert f"<li>batch workspace job {workspace_job}</li>" in busy
    assert "999999" not in busy
    assert re.search(r"<td>\s*2\s*<ul", busy), busy
    idle = row_of(page, "exec-idle")
    assert re.search(r"<td>\s*0\s*</td>", idle) and "/jobs/" not in idle

    # Once it reports the job finished (no longer held), it is no longer listed.
    await beat(site, {**body, "jobIds": []})
    async with signed_in(site, "root") as root:
        busy = row_of((await root.get("/executors")).text, "exec-busy")
    assert f"/jobs/{held}" not in busy


async def test_revealing_the_token_needs_the_csrf_token_and_a_site_admin(site: Site) -> None:
    token = await executor_token(site.db)
    async with signed_in(site, "root") as root:
        page = await root.get("/executors")
        assert token not in page.text and 'action="/executors/token/reveal"' in page.text
        forged = await root.post("/executors/token/reveal", data={"csrf": "forged"})
        assert forged.status_code == 403 and token not in forged.text
        shown = await root.post("/executors/token/reveal", data={"csrf": csrf_of(page.text)})
        assert shown.status_code == 200 and shown_token(shown.text) == token
        assert 'data-copy="executor-token"' in shown.text
    async with signed_in(site, "olive") as olive:
        home = await olive.get("/")
        denied = await olive.post("/executors/token/reveal", data={"csrf": csrf_of(home.text)})
        assert denied.status_code == 403 and token not in denied.text
        assert "Only site admins" in denied.text
        assert (await olive.get("/executors")).status_code == 403
    audit = await site.call("admin", "GET", "/api/audit?action=executors.token.reveal")
    assert audit.status_code == 200, audit.text
    assert [e["actor"] for e in audit.json()] == ["root"]


async def test_rotating_replaces_the_token_and_the_old_one_is_refused(site: Site) -> None:
    old = await executor_token(site.db)
    alive = {"executorName": "exec-rotated", "queueNames": ["default"]}
    assert (await beat(site, alive, old)).status_code == 200

    async with signed_in(site, "olive") as olive:
        home = await olive.get("/")
        denied = await olive.post(
            "/executors/token/rotate", data={"csrf": csrf_of(home.text), "confirm": "yes"}
        )
        assert denied.status_code == 403
    async with signed_in(site, "root") as root:
        page = await root.get("/executors")
        csrf = csrf_of(page.text)
        forged = await root.post("/executors/token/rotate", data={"csrf": "x", "confirm": "yes"})
        assert forged.status_code == 403
        unconfirmed = await root.post("/executors/token/rotate", data={"csrf": csrf})
        assert unconfirmed.status_code == 400 and "Nothing changed" in unconfirmed.text
        assert await executor_token(site.db) == old

        rotated = await root.post("/executors/token/rotate", data={"csrf": csrf, "confirm": "yes"})
        assert rotated.status_code == 200, rotated.text
        new = shown_token(rotated.text)
        assert new != old and len(new) >= 32 and await executor_token(site.db) == new
        assert "refused from now on" in rotated.text

    refused = await beat(site, alive, old)
    assert refused.status_code == 401 and "invalid executor token" in refused.text
    assert (await beat(site, alive, new)).status_code == 200
    audit = await site.call("admin", "GET", "/api/audit?action=executors.token")
    assert [e["actor"] for e in audit.json()] == ["root"]

    # Replaced through the API, the token the server held a moment ago is refused at once too.
    newest = "replaced-through-the-api-0123456789"
    put = await site.call("admin", "PUT", "/api/executors/token", json={"token": newest})
    assert put.status_code == 204, put.text
    assert (await beat(site, alive, new)).status_code == 401
    assert (await beat(site, alive, newest)).status_code == 200
