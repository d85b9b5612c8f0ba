"""A cap on the size of request bodies, for every route, enforced before a route reads them.

A body is held in the server's memory while its route reads it (FastAPI reads JSON bodies
whole, before the route's authentication runs), so its size is capped: a Content-Length over
the route's limit is answered 413 before the route runs; a body sent without one (chunked) is
counted as it arrives and refused once it passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offload.batches.spec.limits import MAX_SUBMISSION_BYTES
from offload.config import Settings
from offload.protocol import routes

MiB = 1024 * 1024

# Executors send job output through the protocol's log routes: a command's whole output so far
# (at most EXECUTOR_JOB_OUTPUT_LIMIT, 100 MiB by default), JSON-escaped. git-upload-pack
# requests (also under this prefix) have their own 100 MiB limit (repos/githttp.py).
EXECUTOR_BODY_LIMIT = 256 * MiB


# A refused body is read to its end up to this size (then the connection is just closed).
DRAIN_LIMIT = 64 * MiB


class BodyTooLarge(HTTPException):
    """A body that passed its limit while it was read."""


class BodyLimit:
    """ASGI middleware: 413 for a request body larger than its route's limit."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        default = (settings.request_body_limit, "OFFLOAD_REQUEST_BODY_LIMIT")
        submission = (max(MAX_SUBMISSION_BYTES, default[0]), "MAX_SUBMISSION_BYTES")
        # (limit, its name) by exact path, then by path prefix, else the default.
        # The web editor's forms (web/editor.py) carry a spec as the API's submission does.
        self.paths = {
            "/api/batches/specs": submission,
            "/batch-changes/new": submission,
            "/batch-changes/new/validate": submission,
            # An index job's index, streamed to disk (codeintel/uploads/routes.py).
            routes.UPLOADS: (settings.codeintel_upload_limit, "OFFLOAD_CODEINTEL_UPLOAD_LIMIT"),
        }
        self.prefixes = [(routes.PREFIX + "/", (EXECUTOR_BODY_LIMIT, "EXECUTOR_BODY_LIMIT"))]
        self.default = default

    def limit(self, path: str) -> tuple[int, str]:
        """The most bytes a request to `path` may send, and the limit's name."""
        if path in self.paths:
            return self.paths[path]
        return next((n for prefix, n in self.prefixes if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a body over the limit: declared, at once; streamed, once it passes it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, name = self.limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if declared <= DRAIN_LIMIT:
                await _drain(receive, DRAIN_LIMIT)
            response = JSONResponse(
                {"detail": f"the request body is {declared:,} bytes; " + _limit(limit, name)},
                status_code=413,
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_LIMIT)
                    raise BodyTooLarge(413, "the request body is too large; " + _limit(limit, name))
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            # Raised where the route's own error handling does not reach (it usually does).
            if started:
                raise
            response = JSONResponse({"detail": exc.detail}, status_code=413)
            await response(scope, receive, send)


async def _drain(receive: Receive, most: int) -> None:
    """Read and drop the rest of a body (up to `most` bytes), so the client reads the answer.

    A server that answers and closes while the client still sends resets the connection, and
    the client sees the reset, not the answer.
    """
    dropped = 0
    while dropped <= most:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            # The HTTP server refuses one that is not a number before we see it.
            return int(value) if value.isdigit() and len(value) < 20 else None
    return None


def _limit(limit: int, name: str) -> str:
    size = f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit:,} bytes"
    return f"the limit here is {size} ({name})"
