"""`offload server`: the HTTP API on uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys

from offload.api.app import create_app
from offload.config import Settings
from offload.db import schema
from offload.db.connect import connect
from offload.dispatch.access import executor_token
from offload.identity.bootstrap import create_first_admin
from offload.serving import (
    address,
    listen,
    server,
    settle_heap,
    stopped_by_signals,
    unless_stopped,
)

log = logging.getLogger(__name__)


async def run_server(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or until `stop` is set, when given); the exit code."""
    stopping = stop or asyncio.Event()
    if stop is not None:
        return await _serve(settings, stopping)
    with stopped_by_signals(stopping):
        return await _serve(settings, stopping)


async def _serve(settings: Settings, stopping: asyncio.Event) -> int:
    url = settings.database()
    deadline = settings.stop_timeout.total_seconds()
    db = await unless_stopped(connect(url), stopping)
    if db is None:
        log.info("offload server stopped before its database was reachable")
        return 0
    try:
        await schema.require_current(url)
        # Generated on first start, so `offload executors token` has something to show.
        await executor_token(db)
        app = create_app(db, settings)
        # Values migration 0010 kept in plain text are encrypted before anything is served.
        await app.state.secrets.encrypt_plaintext()
        sock = listen(settings.host, settings.port, settings_hint="OFFLOAD_HOST and OFFLOAD_PORT")
        first = await create_first_admin(db)
        if first is not None:
            # To the terminal, not the structured log: log lines are shipped and kept.
            print(first.message(settings.url or address(sock)), file=sys.stderr, flush=True)
        http = server(app, stop_timeout=deadline, trusted_proxies=settings.trusted_proxies)
        settle_heap()
        serving = asyncio.create_task(http.serve(sockets=[sock]), name="server http")
        log.info("offload server listening on %s (database %s)", address(sock), url.redacted())
        wake = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({wake, serving}, return_when=asyncio.FIRST_COMPLETED)
        wake.cancel()
        # Long polls would hold the shutdown for their whole wait: answer them now.
        app.state.dispatcher.close()
        http.should_exit = True
        await serving
        log.info("offload server stopped")
        return 0
    finally:
        await db.close()
