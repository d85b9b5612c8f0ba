"""The web interface's pages over a served offload, as a browser without JavaScript sees them:
signing in and out with a form, being sent to sign in, CSRF on every form that changes
something, other namespaces' jobs not found, site-admin pages, headers and bad forms; a job's
live log as server-sent events, its plain text, cancel and retry from its page.
(The browser tests in tests/browser drive the same pages with Chromium.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from access_site import PASSWORD, Site, served
from batch_seed import finished_spec
from web_client import browser, csrf_of, signed_in

from offload.batches.service import BatchService
from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.identity.users import Users
from offload.jobs.service import JobRequest
from offload.queue.record import Lease, LogEntry
from offload.queue.store import SqlQueueStore
from offload.web import livelog


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


async def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(site: Site) -> None:
    async with browser(site) as client:
        page = await client.get("/jobs?state=failed")
        assert page.status_code == 303
        assert page.headers["location"] == "/sign-in?next=/jobs%3Fstate%3Dfailed"
        form = await client.get(page.headers["location"])
        assert form.status_code == 200 and 'name="password"' in form.text
        assert 'value="/jobs?state=failed"' in form.text
        assert "default-src 'self'" in form.headers["content-security-policy"]
        assert form.headers["x-frame-options"] == "DENY"

        wrong = await client.post("/sign-in", data={"username": "olive", "password": "nope"})
        assert wrong.status_code == 401
        assert "wrong username or password" in wrong.text and "offload_session" not in str(
            wrong.headers.get("set-cookie")
        )
        ok = await client.post(
            "/sign-in",
            data={"username": "olive", "password": PASSWORD, "next": "/jobs?state=failed"},
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/jobs?state=failed"
        assert "httponly" in ok.headers["set-cookie"].lower()
        jobs = await client.get("/jobs?state=failed")
        assert jobs.status_code == 200 and "olive" in jobs.text


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
async def test_sign_in_never_sends_the_browser_to_another_site(site: Site, target: str) -> None:
    async with browser(site) as client:
        ok = await client.post(
            "/sign-in", data={"username": "olive", "password": PASSWORD, "next": target}
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/"


async def test_sign_out_needs_the_pages_csrf_token(site: Site) -> None:
    async with signed_in(site, "olive") as client:
        home = await client.get("/")
        assert home.status_code == 200 and "My recent jobs" in home.text
        forged = await client.post("/sign-out", data={"csrf": "forged"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        assert (await client.get("/")).status_code == 200, "a forged form ended the session"
        out = await client.post("/sign-out", data={"csrf": csrf_of(home.text)})
        assert out.status_code == 303 and out.headers["location"] == "/sign-in"
        assert (await client.get("/")).status_code == 303


async def test_jobs_of_other_namespaces_are_not_found(site: Site) -> None:
    job_id = await site.app.state.jobs.create(
        JobRequest(repo="demo", command=["echo", "hi"], namespace="acme", submitted_by="olive")
    )
    async with signed_in(site, "olive") as olive:
        page = await olive.get(f"/jobs/{job_id}")
        assert page.status_code == 200 and f"Job {job_id}" in page.text and "acme" in page.text
        listed = await olive.get("/jobs?namespace=acme")
        assert f'href="/jobs/{job_id}"' in listed.text
        on_demo = await olive.get("/jobs?namespace=acme&repo=demo&state=queued")
        assert f'href="/jobs/{job_id}"' in on_demo.text
        for other in ("repo=elsewhere", "state=completed", "queue=gpu"):
            elsewhere = await olive.get(f"/jobs?namespace=acme&{other}")
            assert elsewhere.status_code == 200, elsewhere.text
            assert f'href="/jobs/{job_id}"' not in elsewhere.text, other
    async with signed_in(site, "mallory") as mallory:
        page = await mallory.get(f"/jobs/{job_id}")
        assert page.status_code == 404 and "Not found" in page.text
        listed = await mallory.get("/jobs")
        assert f'href="/jobs/{job_id}"' not in listed.text
        other = await mallory.get("/jobs?namespace=acme")
        assert other.status_code == 404
        assert (await mallory.get("/executors")).status_code == 403
    async with signed_in(site, "root") as root:
        page = await root.get("/executors")
        assert page.status_code == 200 and "No executor has connected yet" in page.text


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "application/json"}, b'{"username": "olive"}', 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"username=\xff", 400),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            "&".join(f"f{i}=x" for i in range(100)).encode(),
            400,
        ),
    ],
)
async def test_a_form_that_cannot_be_read_is_a_4xx_page(
    site: Site, headers: dict[str, str], body: bytes, status: int
) -> None:
    async with browser(site) as client:
        answer = await client.post("/sign-in", content=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("text/html")


async def test_static_files_are_served_and_unknown_pages_are_html_404s(site: Site) -> None:
    async with signed_in(site, "olive") as client:
        home = await client.get("/")
        start = home.text.index('href="/static/offload.css?v=') + len('href="')
        css = await client.get(home.text[start : home.text.index('"', start)])
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        missing = await client.get("/no-such-page")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith(
            "text/html"
        )
        escape = await client.get("/static/../pages.py")
        assert escape.status_code == 404
        malformed = await client.get("/jobs/not-a-number")
        assert malformed.status_code == 400 and "job_id" in malformed.text
        assert malformed.headers["content-type"].startswith("text/html")
        icon = await client.get("/favicon.ico", follow_redirects=True)
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")


# -- a job's page: live log, plain text, cancel and retry ------------------------------------


async def olives_job(site: Site, namespace: str = "olive") -> int:
    """A queued job of olive's (no executor runs: it waits)."""
    request = JobRequest(
        repo="demo", command=["sh", "-c", "echo hi"], namespace=namespace, submitted_by="olive"
    )
    return int(await site.app.state.jobs.create(request))


async def running(site: Site, job_id: int) -> tuple[SqlQueueStore, Lease]:
    """Take the job as an executor would: its store and lease."""
    store: SqlQueueStore = site.app.state.jobs.stores["default"]
    (record,) = await store.dequeue("exec-test")
    assert record.id == job_id
    return store, record.lease


def step(out: str, exit_code: int | None = None) -> LogEntry:
    return LogEntry(
        key="step.run", command=["sh"], start_time=datetime.now(UTC), exit_code=exit_code, out=out
    )


Event = tuple[str, dict[str, Any], str | None]


async def events_of(answer: httpx.Response) -> AsyncIterator[Event]:
    """The server-sent events of a stream: (event, data, id)."""
    kind, data, cursor = "message", "", None
    async for line in answer.aiter_lines():
        if line == "":
            if data:
                yield kind, json.loads(data), cursor
            kind, data, cursor = "message", "", None
        elif line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line.startswith("id: "):
            cursor = line[len("id: ") :]


async def test_a_jobs_live_log_streams_new_output_and_ends_when_it_finishes(site: Site) -> None:
    job_id = await olives_job(site)
    store, lease = await running(site, job_id)
    first = "stdout: \x1b[31mline-1\x1b[0m\n"
    entry_id = await store.add_log_entry(lease, step(first))
    big = "".join(f"stdout: line-{i}\n" for i in range(2, 20000))
    assert len(big) > 2 * livelog.MAX_EVENT_CHARS
    async with signed_in(site, "olive") as olive, asyncio.timeout(60):
        page = await olive.get(f"/jobs/{job_id}")
        since = f"{entry_id}.{len(first)}"
        assert f"/jobs/{job_id}/events?since={since}" in page.text
        seen: list[Event] = []
        async with olive.stream("GET", f"/jobs/{job_id}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for found in events_of(stream):
                seen.append(found)
                if found[0] == "state" and len([k for k, _, _ in seen if k == "state"]) == 1:
                    assert found[1] == {"state": "processing"}
                    # The reader has the first line: the command prints more, ends, the job too.
                    await store.update_log_entry(lease, entry_id, step(first + big, 0))
                    await store.mark_complete(lease)
        logs = [data for kind, data, _ in seen if kind == "log"]
        assert logs[0]["text"] == first and logs[0]["exitCode"] is None
        assert "".join(d["text"] for d in logs) == first + big
        assert all(len(d["text"]) <= livelog.MAX_EVENT_CHARS for d in logs) and len(logs) >= 3
        assert logs[-1]["exitCode"] == 0 and {d["key"] for d in logs} == {"step.run"}
        assert seen[-1][2] is None and seen[-2:] == [
            ("state", {"state": "completed"}, None),
            ("end", {"state": "completed"}, None),
        ]
        assert [c for kind, _, c in seen if kind == "log"][-1] == f"{entry_id}.{len(first + big)}"

        # Where the page left off (or a reconnect's Last-Event-ID): only what came after.
        for params, headers in (({"since": since}, {}), ({}, {"Last-Event-ID": since})):
            url = f"/jobs/{job_id}/events"
            async with olive.stream("GET", url, params=params, headers=headers) as again:
                rest = [found async for found in events_of(again)]
            text = "".join(d["text"] for kind, d, _ in rest if kind == "log")
            assert text == big, (params, headers)
            assert rest[-1] == ("end", {"state": "completed"}, None)


async def test_another_namespaces_live_log_and_text_log_are_not_found(site: Site) -> None:
    job_id = await olives_job(site)
    store, lease = await running(site, job_id)
    await store.add_log_entry(lease, step("stdout: secret plans\n", 0))
    async with signed_in(site, "mallory") as mallory:
        for path in (f"/jobs/{job_id}/events", f"/jobs/{job_id}/log.txt"):
            answer = await mallory.get(path)
            assert answer.status_code == 404 and "Not found" in answer.text, path
            assert "secret plans" not in answer.text
            assert answer.headers["content-type"].startswith("text/html")
    async with browser(site) as anonymous:
        answer = await anonymous.get(f"/jobs/{job_id}/events")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/sign-in")
    async with signed_in(site, "olive") as olive:
        text = await olive.get(f"/jobs/{job_id}/log.txt")
        assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
        assert text.text == "=== step.run (exit 0)\nstdout: secret plans\n"
        assert text.headers["x-content-type-options"] == "nosniff"


async def test_one_user_holds_a_bounded_number_of_live_logs(site: Site) -> None:
    job_id = await olives_job(site)
    await running(site, job_id)
    async with signed_in(site, "olive") as olive, contextlib.AsyncExitStack() as stack:
        for _ in range(livelog.MAX_STREAMS_PER_USER):
            stream = await stack.enter_async_context(olive.stream("GET", f"/jobs/{job_id}/events"))
            assert stream.status_code == 200
        over = await olive.get(f"/jobs/{job_id}/events")
        assert over.status_code == 429 and over.headers["retry-after"]
        assert "live logs are open already" in over.text
    # Closed streams are given back (the server notices within a poll).
    async with signed_in(site, "olive") as olive, asyncio.timeout(30):
        while True:
            async with olive.stream("GET", f"/jobs/{job_id}/events") as stream:
                if stream.status_code == 200:
                    break
            await asyncio.sleep(0.25)


def form_tag(page: str, action: str) -> str:
    found = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>', page)
    assert found, f"no form to {action}"
    return found.group(0)


async def test_cancel_and_retry_from_the_job_page_need_its_csrf_token(site: Site) -> None:
    job_id = await olives_job(site, namespace="acme")
    cancel, retry = f"/jobs/{job_id}/cancel", f"/jobs/{job_id}/retry"
    jobs = site.app.state.jobs

    async def state() -> str:
        view = await jobs.view(job_id)
        return str(view.state.value)

    async with signed_in(site, "mallory") as mallory:
        token = csrf_of((await mallory.get("/")).text)
        answer = await mallory.post(cancel, data={"csrf": token})
        assert answer.status_code == 404 and await state() == "queued"
    async with signed_in(site, "olive") as olive:
        page = (await olive.get(f"/jobs/{job_id}")).text
        assert "hidden" not in form_tag(page, cancel) and "hidden" in form_tag(page, retry)
        for forged in ({"note": "no token"}, {"csrf": "forged"}):
            answer = await olive.post(cancel, data=forged)
            assert answer.status_code == 403 and "CSRF" in answer.text
            assert await state() == "queued"
        answer = await olive.post(cancel, data={"csrf": csrf_of(page)})
        assert (
            answer.status_code == 303 and answer.headers["location"] == f"/jobs/{job_id}?did=cancel"
        )
        assert await state() == "canceled"
        page = (await olive.get(answer.headers["location"])).text
        assert "Cancel requested" in page and "state-canceled" in page
        assert "hidden" in form_tag(page, cancel) and "hidden" not in form_tag(page, retry)
        again = await olive.post(cancel, data={"csrf": csrf_of(page)})
        assert again.status_code == 409 and "already finished" in again.text

        answer = await olive.post(retry, data={"csrf": "forged"})
        assert answer.status_code == 403 and await state() == "canceled"
        answer = await olive.post(retry, data={"csrf": csrf_of(page)})
        assert (
            answer.status_code == 303 and answer.headers["location"] == f"/jobs/{job_id}?did=retry"
        )
        assert await state() == "queued"
        assert "The job is queued again." in (await olive.get(answer.headers["location"])).text
    audited = await site.db.fetch(
        "SELECT actor, action, target FROM audit_log WHERE action IN ('job.cancel', 'job.retry')"
        " ORDER BY id"
    )
    assert [(r["actor"], r["action"], r["target"]) for r in audited] == [
        ("olive", "job.cancel", f"job {job_id}"),
        ("olive", "job.retry", f"job {job_id}"),
    ]


# Every page route, and what each caller gets when they call it with no CSRF field on a form:
# anonymous (303: sent to sign in), another user (mallory), the owner of the job and token
# (olive), a site admin (root). {job_id} is olive's finished job, {token_id} one of olive's tokens.
SIGN_IN = 303
PAGE_ROUTES: dict[tuple[str, str], tuple[int, int, int, int]] = {
    ("GET", "/"): (SIGN_IN, 200, 200, 200),
    ("GET", "/favicon.ico"): (308, 308, 308, 308),
    ("GET", "/sign-in"): (200, 303, 303, 303),
    ("POST", "/sign-in"): (400, 400, 400, 400),  # no username or password
    ("POST", "/sign-out"): (SIGN_IN, 403, 403, 403),
    ("GET", "/jobs"): (SIGN_IN, 200, 200, 200),
    ("GET", "/jobs/{job_id}"): (SIGN_IN, 404, 200, 200),
    ("GET", "/jobs/{job_id}/log.txt"): (SIGN_IN, 404, 200, 200),
    ("GET", "/jobs/{job_id}/events"): (SIGN_IN, 404, 200, 200),
    ("POST", "/jobs/{job_id}/cancel"): (SIGN_IN, 403, 403, 403),
    ("POST", "/jobs/{job_id}/retry"): (SIGN_IN, 403, 403, 403),
    ("GET", "/executors"): (SIGN_IN, 403, 403, 200),
    ("POST", "/executors/token/reveal"): (SIGN_IN, 403, 403, 403),
    ("POST", "/executors/token/rotate"): (SIGN_IN, 403, 403, 403),
    ("GET", "/profile"): (SIGN_IN, 200, 200, 200),
    ("POST", "/profile/tokens"): (SIGN_IN, 403, 403, 403),
    ("POST", "/profile/tokens/{token_id}/revoke"): (SIGN_IN, 403, 403, 403),
    ("GET", "/batch-changes/new"): (SIGN_IN, 200, 200, 200),
    ("POST", "/batch-changes/new"): (SIGN_IN, 403, 403, 403),
    ("POST", "/batch-changes/new/template"): (SIGN_IN, 403, 403, 403),
    ("POST", "/batch-changes/new/validate"): (SIGN_IN, 403, 403, 403),
    ("GET", "/repositories"): (SIGN_IN, 200, 200, 200),
    ("POST", "/repositories"): (SIGN_IN, 403, 403, 403),
    ("POST", "/repositories/sync"): (SIGN_IN, 403, 403, 403),
    ("GET", "/repositories/{repo:path}"): (SIGN_IN, 200, 200, 200),
    ("POST", "/repositories/{repo:path}/sync"): (SIGN_IN, 403, 403, 403),
    ("GET", "/repositories/{repo:path}/pulls"): (SIGN_IN, 200, 200, 200),
    ("GET", "/repositories/{repo:path}/pulls/{number}"): (SIGN_IN, 200, 200, 200),
    ("GET", "/repositories/{repo:path}/pulls/{number}/diff.txt"): (SIGN_IN, 200, 200, 200),
    ("POST", "/repositories/{repo:path}/pulls/{number}/merge"): (SIGN_IN, 403, 403, 403),
    ("POST", "/repositories/{repo:path}/pulls/{number}/close"): (SIGN_IN, 403, 403, 403),
    ("GET", "/secrets"): (SIGN_IN, 200, 200, 200),
    ("POST", "/secrets"): (SIGN_IN, 403, 403, 403),
    ("GET", "/secrets/{namespace}/{secret}"): (SIGN_IN, 404, 200, 200),
    ("POST", "/secrets/{namespace}/{secret}/delete"): (SIGN_IN, 403, 403, 403),
    ("GET", "/admin"): (SIGN_IN, 403, 403, 200),
    ("GET", "/admin/users"): (SIGN_IN, 403, 403, 200),
    ("POST", "/admin/users"): (SIGN_IN, 403, 403, 403),
    ("POST", "/admin/users/{username}/{change}"): (SIGN_IN, 403, 403, 403),
    ("GET", "/admin/orgs"): (SIGN_IN, 403, 403, 200),
    ("POST", "/admin/orgs"): (SIGN_IN, 403, 403, 403),
    ("GET", "/orgs/{org}"): (SIGN_IN, 404, 200, 200),
    ("POST", "/orgs/{org}/members"): (SIGN_IN, 403, 403, 403),
    ("POST", "/orgs/{org}/members/{username}/remove"): (SIGN_IN, 403, 403, 403),
    ("GET", "/admin/queues"): (SIGN_IN, 403, 403, 200),
    ("POST", "/admin/queues/grants"): (SIGN_IN, 403, 403, 403),
    ("POST", "/admin/queues/grants/revoke"): (SIGN_IN, 403, 403, 403),
    ("GET", "/admin/audit"): (SIGN_IN, 403, 403, 200),
    ("GET", "/admin/versions"): (SIGN_IN, 403, 403, 200),
    ("GET", "/batch-changes"): (SIGN_IN, 200, 200, 200),
    ("GET", "/batch-changes/{namespace}/{name}"): (SIGN_IN, 404, 200, 200),
    ("POST", "/batch-changes/{namespace}/{name}/close"): (SIGN_IN, 403, 403, 403),
    ("GET", "/batch-specs/{rand_id}"): (SIGN_IN, 404, 200, 200),
    ("GET", "/batch-specs/{rand_id}/workspaces/{workspace_id}"): (SIGN_IN, 404, 200, 200),
    ("POST", "/batch-specs/{rand_id}/retry"): (SIGN_IN, 403, 403, 403),
    ("GET", "/batch-specs/{rand_id}/preview"): (SIGN_IN, 404, 200, 200),
    ("POST", "/batch-specs/{rand_id}/apply"): (SIGN_IN, 403, 403, 403),
    ("GET", "/code-intelligence"): (SIGN_IN, 200, 200, 200),
    ("GET", "/code-intelligence/indexes/{index_id}"): (SIGN_IN, 200, 200, 200),
    ("GET", "/code-intelligence/{repo:path}/-/blob/{path:path}"): (SIGN_IN, 200, 200, 200),
    ("GET", "/code-intelligence/{repo:path}/-/def"): (SIGN_IN, 400, 400, 400),  # no position
    ("GET", "/code-intelligence/{repo:path}/-/refs"): (SIGN_IN, 400, 400, 400),
    ("POST", "/code-intelligence/{repo:path}/-/index"): (SIGN_IN, 403, 403, 403),
    ("POST", "/code-intelligence/{repo:path}/-/config"): (SIGN_IN, 403, 403, 403),
    ("GET", "/code-intelligence/{repo:path}"): (SIGN_IN, 200, 200, 200),
}


def page_routes(site: Site) -> set[tuple[str, str]]:
    """Every route the app serves from offload.web, as (method, path)."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router
                walk(route.original_router.routes)
            elif getattr(getattr(route, "endpoint", None), "__module__", "").startswith(
                "offload.web"
            ):
                found.update((method, route.path) for method in route.methods - {"HEAD"})

    walk(site.app.routes)
    return found


async def test_every_page_route_says_who_may_call_it_and_refuses_the_others(site: Site) -> None:
    assert page_routes(site) == set(PAGE_ROUTES), "a page route without a row in PAGE_ROUTES"
    job_id = await site.app.state.jobs.create(
        JobRequest(repo="demo", command=["true"], namespace="olive", submitted_by="olive")
    )
    await site.app.state.jobs.cancel(job_id)  # finished: its event stream ends at once
    async with signed_in(site, "olive") as olive:
        page = await olive.get("/profile")
        made = await olive.post(
            "/profile/tokens", data={"csrf": csrf_of(page.text), "note": "t", "expires": "7"}
        )
        assert made.status_code == 201, made.text
    olive_id = (await Users(site.db).require("olive")).id
    (token,) = [t for t in await site.app.state.auth.tokens.list(olive_id) if t.note == "t"]
    # The values of the paths' placeholders: things olive owns, that mallory must not reach.
    ids: dict[str, object] = {"job_id": job_id, "token_id": token.id}
    ids["repo"], ids["number"] = "demo", await site.pull_request()
    await site.app.state.secrets.set("olive", "DEPLOY_KEY", "s3cret")
    ids["namespace"], ids["secret"] = "olive", "DEPLOY_KEY"
    ids["org"], ids["username"], ids["change"] = "acme", "olive", "disable"
    seeded = await finished_spec(site.db, "olive", "routes", done=1, failed=0)
    await BatchService(site.db).apply(seeded.spec.rand_id)
    ids["name"], ids["rand_id"] = "routes", seeded.spec.rand_id
    ids["workspace_id"] = seeded.workspace_ids[seeded.done[0]]
    ids["path"] = "README"
    ids["index_id"] = await SqlQueueStore(site.db, INDEX_JOBS).enqueue(
        {
            "repo_name": "demo",
            "commit_sha": "0" * 40,
            "root": "",
            "indexer": "scip-python",
            "job": {"indexer": "sourcegraph/scip-python", "root": ""},
            "source": "inferred",
            "priority": 1,
            "requested_by": "",
            "upload_id": None,
        }
    )
    users = ("mallory", "olive", "root")
    async with contextlib.AsyncExitStack() as stack:
        callers = [await stack.enter_async_context(browser(site))]
        callers += [await stack.enter_async_context(signed_in(site, u)) for u in users]
        for (method, path), expected in PAGE_ROUTES.items():
            url = path.replace(":path}", "}").format(**ids)  # {repo:path}: a name with slashes
            for who, client, status in zip(("anonymous", *users), callers, expected, strict=True):
                if method == "GET":
                    answer = await client.get(url)
                else:
                    answer = await client.post(url, data={"field": "value"})
                assert answer.status_code == status, (method, url, who, answer.text[:300])
                if status == SIGN_IN and who == "anonymous":
                    assert answer.headers["location"].startswith("/sign-in?next=")
