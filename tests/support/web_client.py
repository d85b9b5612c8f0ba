"""A browser without JavaScript, for the web interface's HTTP tests: pages asked for as HTML,
cookies kept, and the CSRF field read from a page's forms."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from access_site import PASSWORD, Site

HTML = {"Accept": "text/html"}


def browser(site: Site) -> httpx.AsyncClient:
    """A client that asks `site` for pages, as a browser does."""
    return httpx.AsyncClient(base_url=site.url, timeout=60, headers=HTML)


@contextlib.asynccontextmanager
async def signed_in(site: Site, username: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client with a session of `username`, signed in through the form."""
    async with browser(site) as client:
        answer = await client.post(
            "/sign-in", data={"username": username, "password": PASSWORD, "next": "/jobs"}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/jobs", answer.text
        yield client


def csrf_of(page: str) -> str:
    """The CSRF token in a page's first form that carries one."""
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]
