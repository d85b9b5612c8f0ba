"""`offload worker`: the chosen jobs' routines under one supervisor, with /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import FastAPI, Response

from offload import __version__, metrics
from offload.config import Settings
from offload.db import schema
from offload.db.connect import connect
from offload.queues import record_queues
from offload.serving import (
    address,
    listen,
    server,
    settle_heap,
    stopped_by_signals,
    unless_stopped,
)
from offload.worker import heartbeat
from offload.worker.job import WorkerContext
from offload.worker.registry import JOBS, select
from offload.worker.supervisor import Supervisor

log = logging.getLogger(__name__)


def list_jobs() -> list[tuple[str, str]]:
    """Every job's name and one-line description, for `offload worker --list`."""
    return [(name, job.description) for name, job in JOBS.items()]


def create_app(jobs: list[str], supervisor: Supervisor) -> FastAPI:
    """The worker's HTTP face: Prometheus metrics and a health check."""
    app = FastAPI(title="offload worker", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        # Liveness of the process only: a database outage makes routines back off and recover,
        # and restarting the worker for it would not help.
        return {"status": "ok", "jobs": jobs, "routines": supervisor.status()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return app


async def run_worker(
    settings: Settings, job_names: list[str], *, stop: asyncio.Event | None = None
) -> int:
    """Run the named jobs (every job when none is named) until SIGTERM/SIGINT; the exit code.

    Unknown job names raise UnknownJob (a ValueError listing the valid ones) before anything
    starts; a database whose schema is not this release's raises schema.SchemaMismatch.
    `stop`, when given, replaces the signals: the worker stops once it is set.
    """
    jobs = select(job_names)
    stopping = stop or asyncio.Event()
    signals = stopped_by_signals(stopping) if stop is None else contextlib.nullcontext()
    with signals:
        return await _serve(settings, list(jobs), stopping)


async def _serve(settings: Settings, job_names: list[str], stopping: asyncio.Event) -> int:
    deadline = settings.stop_timeout.total_seconds()
    url = settings.database()
    db = await unless_stopped(connect(url), stopping)
    if db is None:
        log.info("offload worker stopped before its database was reachable")
        return 0
    try:
        await schema.require_current(url)
        context = WorkerContext(db, settings, queues=record_queues(settings))
        routines = [r for name in job_names for r in JOBS[name].build(context)]
        # Whatever its jobs, every worker says which release it runs (the versions page).
        supervisor = Supervisor([*routines, heartbeat.build(context, job_names)])
        sock = listen(
            settings.worker_host,
            settings.worker_port,
            settings_hint="OFFLOAD_WORKER_HOST and OFFLOAD_WORKER_PORT",
        )
        http = server(create_app(job_names, supervisor), stop_timeout=deadline)
        settle_heap()
        serving = asyncio.create_task(http.serve(sockets=[sock]), name="worker http")
        supervising = asyncio.create_task(supervisor.run(), name="supervisor")
        log.info(
            "offload worker listening on %s (database %s); jobs: %s",
            address(sock),
            url.redacted(),
            ", ".join(job_names),
        )
        wake = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({wake, serving}, return_when=asyncio.FIRST_COMPLETED)
        wake.cancel()
        log.info("offload worker stopping; routines have %.1fs to finish", deadline)
        # The HTTP server and the routines stop side by side, so the whole stop fits the deadline.
        http.should_exit = True
        await supervisor.stop(deadline)
        await supervising
        await serving
        log.info("offload worker stopped")
        return 0
    finally:
        await db.close()


__all__ = ["create_app", "list_jobs", "run_worker"]
