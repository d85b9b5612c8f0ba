"""Rendering the web interface's pages: Jinja2 templates shipped in the package, autoescaped.

Every page goes out with the same security headers: scripts and styles only from the server
itself (no inline code, so an injected `<script>` never runs), no framing, no sniffing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from offload import __version__
from offload.db.values import parse_time
from offload.identity.principal import Principal

STATIC = resources.files("offload.web") / "static"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show one user's data: never kept by a shared cache.
    "Cache-Control": "no-store",
}


# Paths that belong to machines (the API, executors, git, status), never to pages.
NOT_PAGES = ("/api/", "/.executors/", "/healthz", "/version", "/metrics", "/static/")


def is_page_request(request: Request) -> bool:
    """Whether a browser asked for a page: an HTML answer suits it better than JSON."""
    path = request.url.path
    if path.startswith(NOT_PAGES):
        return False
    return "text/html" in request.headers.get("accept", "")


@cache
def static_version(name: str) -> str:
    """A short digest of a static file: its URL changes whenever its bytes do."""
    data = (STATIC / name).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def static_url(name: str) -> str:
    """The URL of a static file shipped with the package, versioned by its content."""
    return f"/static/{name}?v={static_version(name)}"


def ago(when: datetime | str | None, now: datetime | None = None) -> str:
    """`when` as people say it: "12 s ago", "3 min ago", "2 h ago", "5 d ago" (a time column
    as either database returns it)."""
    moment = parse_time(when)
    if moment is None:
        return "never"
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    return f"{duration(seconds)} ago"


def duration(seconds: float | timedelta | None) -> str:
    """A span of time, short: "850 ms", "12 s", "3 min 4 s", "2 h 5 min", "5 d"."""
    if seconds is None:
        return "—"
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 86400:
        hours, rest = divmod(int(seconds) // 60, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{int(seconds // 86400)} d"


class Pages:
    """The template environment and how a page becomes a response."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("offload.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(static=static_url, version=__version__)
        self.env.filters.update(ago=ago, duration=duration)

    def render(
        self,
        request: Request,
        template: str,
        viewer: Principal | None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """The page `template` for `viewer` (None: signed out)."""
        html = self.env.get_template(template).render(
            request=request, viewer=viewer, path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})

    def error(
        self, request: Request, status: int, message: str, viewer: Principal | None = None
    ) -> HTMLResponse:
        """An error page that says what went wrong, with the status it stands for."""
        titles = {
            400: "Bad request",
            403: "Not allowed",
            404: "Not found",
            409: "Not now",
            413: "Too large",
            415: "Bad request",
            429: "Too many at once",
        }
        return self.render(
            request,
            "error.html",
            viewer,
            status=status,
            title=titles.get(status, "Something went wrong"),
            message=message,
        )
