"""The server application on a free port of 127.0.0.1, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from offload import serving
from offload.api.app import create_app
from offload.config import Settings
from offload.db.base import Database


@contextlib.asynccontextmanager
async def serve(db: Database, settings: Settings) -> AsyncIterator[str]:
    """create_app over `db` served until the block ends; its base URL."""
    sock = serving.listen("127.0.0.1", 0, settings_hint="the test")
    http = serving.server(create_app(db, settings), stop_timeout=1)
    task = asyncio.create_task(http.serve(sockets=[sock]))
    while not http.started:  # noqa: ASYNC110 - uvicorn offers no start-up event
        await asyncio.sleep(0.01)
    try:
        yield serving.address(sock)
    finally:
        http.should_exit = True
        await task
