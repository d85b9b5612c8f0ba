"""`offload executor`: connect to the server, then run jobs until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from offload.executor.client import ExecutorClient, Unauthorized
from offload.executor.config import ExecutorConfig
from offload.executor.handler import HandlerSettings, JobHandler
from offload.executor.runtimes.base import Runtime
from offload.queue.consumer import Consumer
from offload.serving import stopped_by_signals

log = logging.getLogger(__name__)

# While the server cannot be reached at start, try again this often (at most).
CONNECT_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


async def connect(client: ExecutorClient, stopping: asyncio.Event) -> bool:
    """Wait until the server answers and accepts the token; False if stopped first.

    A refused token raises Unauthorized at once: retrying cannot fix it.
    """
    attempt = 0
    while not stopping.is_set():
        try:
            await client.check_auth()
            # Register at once, so the executor is listed before its first job.
            await client.heartbeat(client.name, [])
            return True
        except httpx.TransportError as exc:
            delay = CONNECT_BACKOFF[min(attempt, len(CONNECT_BACKOFF) - 1)]
            log.warning("cannot reach %s (%s); retrying in %.1fs", client.base_url, exc, delay)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
    return False


def describe(config: ExecutorConfig, runtime_line: str) -> str:
    """The one line an executor prints once connected."""
    queues = ", ".join(config.queues)
    return (
        f"offload executor {config.name} connected to {config.frontend_url}; "
        f"listening for jobs on {queues} with {config.max_jobs} slot(s); runtime: {runtime_line}"
    )


async def run_executor(
    config: ExecutorConfig, runtime: Runtime, *, stop: asyncio.Event | None = None
) -> int:
    """Serve jobs until SIGTERM/SIGINT (or `stop`); the exit code."""
    stopping = stop or asyncio.Event()
    signals = stopped_by_signals(stopping) if stop is None else contextlib.nullcontext()
    with signals:
        return await _serve(config, runtime, stopping)


async def _serve(config: ExecutorConfig, runtime: Runtime, stopping: asyncio.Event) -> int:
    runtime_line = await runtime.check()
    client = ExecutorClient(
        config.frontend_url, config.token, config.queues, name=config.name, runtime=runtime.name
    )
    try:
        try:
            if not await connect(client, stopping):
                return 0
        except Unauthorized as exc:
            log.error("%s", exc)
            return 1
        print(describe(config, runtime_line), flush=True)
        settings = HandlerSettings(
            workspaces=config.data_dir / "workspaces",
            limits=config.limits(),
            keep_workspaces=config.keep_workspaces,
            runtime_notice=runtime_line if runtime.name == "shell" else "",
        )

        consumer = Consumer(
            client,
            JobHandler(client, runtime, settings),
            holder=config.name,
            slots=config.max_jobs,
            poll_wait=config.poll_wait,
            heartbeat_interval=config.heartbeat_interval,
            max_runtime=config.max_runtime,
            heartbeat_store=client.heartbeat_store,
        )
        running = asyncio.create_task(consumer.run())
        await asyncio.wait(
            {running, asyncio.ensure_future(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        log.info("executor stopping; running jobs have %.0fs to finish", config.stop_timeout)
        consumer.stop(config.stop_timeout)
        await running
        return 0
    finally:
        await client.close()
