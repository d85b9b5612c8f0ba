"""The web interface's pages over a served offload, as a browser without JavaScript sees them:
signing in and out with a form, being sent to sign in, CSRF on every form that changes
something, other namespaces' jobs not found, site-admin pages, headers and bad forms.
(The browser tests in tests/browser drive the same pages with Chromium.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from access_site import PASSWORD, Site, served

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.jobs.service import JobRequest

HTML = {"Accept": "text/html"}


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def browser(site: Site) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=site.url, timeout=60, headers=HTML)


@contextlib.asynccontextmanager
async def signed_in(site: Site, username: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client with a session of `username` (cookies kept by the client)."""
    async with browser(site) as client:
        answer = await client.post(
            "/sign-in", data={"username": username, "password": PASSWORD, "next": "/jobs"}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/jobs", answer.text
        yield client


def csrf_of(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


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
