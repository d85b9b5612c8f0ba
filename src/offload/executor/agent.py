"""`offload executor`: connect to the server, then run jobs until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx

from offload.executor import workspace
from offload.executor.client import ExecutorClient, Unauthorized
from offload.executor.config import ExecutorConfig, size_text
from offload.executor.disks import Disks, DisksUnavailable
from offload.executor.handler import HandlerSettings, JobHandler
from offload.executor.limits import duration_text, reported, summary
from offload.executor.rundir import RunDir, sweep
from offload.executor.runtimes.base import Runtime, RuntimeUnavailable
from offload.executor.runtimes.cgroup import Cgroups
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


def describe(config: ExecutorConfig, runtime_line: str, disk: str = "") -> str:
    """The one line an executor prints once connected; `disk` says how workspaces' size is
    limited (or why it is not)."""
    queues = ", ".join(config.queues)
    if config.backend == "shell":
        # Nothing confines a shell step: only what the executor itself counts holds.
        limits = (
            f"limits: output {size_text(config.job_output)} and "
            f"{duration_text(config.max_runtime)} per job only (the shell runtime confines "
            "nothing else, and steps run as this executor's user)"
        )
    else:
        limits = summary(config.limits(), config.max_runtime, disk or "no disk limit")
    return (
        f"offload executor {config.name} connected to {config.frontend_url}; "
        f"listening for jobs on {queues} with {config.max_jobs} slot(s); {limits}; "
        f"runtime: {runtime_line}"
    )


async def open_disks(config: ExecutorConfig) -> tuple[Disks | None, str]:
    """The workspace disks of this executor, and the disk limit for the start line; None
    (and why) where workspaces cannot get a size-limited filesystem."""
    if config.keep_workspaces:
        return None, "no disk limit (EXECUTOR_KEEP_WORKSPACES keeps workspaces on the host)"
    try:
        disks = await Disks.open(config.data_dir / "disks", config.job_disk)
    except DisksUnavailable as exc:
        return None, f"no disk limit ({exc})"
    return disks, disks.describe()


def check_reachable(config: ExecutorConfig, workspaces: Path) -> None:
    """RuntimeUnavailable unless the step uid can reach workspaces and images by path."""
    limits = config.limits()
    if limits.uid is None:
        return
    gid = limits.gid if limits.gid is not None else limits.uid
    for what, path in (("workspaces", workspaces), ("images", config.data_dir / "images")):
        blocked = workspace.unreachable(path, limits.uid, gid)
        if blocked:
            raise RuntimeUnavailable(
                f"steps run as uid {limits.uid} (EXECUTOR_JOB_USER), which cannot reach the "
                f"{what} in {path}: {blocked} is closed to it; let others pass through "
                "(chmod o+x) each directory on the way, or choose an EXECUTOR_DATA_DIR there"
            )


async def run_executor(
    config: ExecutorConfig, runtime: Runtime, *, stop: asyncio.Event | None = None
) -> int:
    """Serve jobs until SIGTERM/SIGINT (or `stop`); the exit code."""
    stopping = stop or asyncio.Event()
    signals = stopped_by_signals(stopping) if stop is None else contextlib.nullcontext()
    with signals:
        return await _in_run_dir(config, runtime, stopping)


async def _in_run_dir(config: ExecutorConfig, runtime: Runtime, stopping: asyncio.Event) -> int:
    """Claim this run's workspace directory, remove what dead runs left, then serve."""
    try:
        run = RunDir.claim(config.data_dir / "workspaces", config.run_id)
    except OSError as exc:
        log.error(
            "cannot keep workspaces in %s (%s); check EXECUTOR_DATA_DIR",
            config.data_dir / "workspaces",
            exc.strerror or exc,
        )
        return 1
    # Only to find and remove run cgroups: the runtime makes its own.
    cgroups = Cgroups.detect()
    try:
        swept = await sweep(
            run.path.parent,
            cgroups,
            keep_workspaces=config.keep_workspaces,
            disks=config.data_dir / "disks",
        )
        if line := swept.describe():
            log.info("%s", line)
        return await _serve(config, runtime, stopping, run.path)
    finally:
        run.release(keep=config.keep_workspaces)
        try:
            await cgroups.sweep([config.run_id])
        except RuntimeError as exc:
            log.warning("%s", exc)


async def _serve(
    config: ExecutorConfig, runtime: Runtime, stopping: asyncio.Event, workspaces: Path
) -> int:
    runtime_line = await runtime.check()
    disks, disk_line = await open_disks(config)
    try:
        check_reachable(config, disks.root if disks is not None else workspaces)
        return await _connected(
            config, runtime, stopping, workspaces, runtime_line, disks, disk_line
        )
    finally:
        if disks is not None:
            await disks.close()


async def _connected(
    config: ExecutorConfig,
    runtime: Runtime,
    stopping: asyncio.Event,
    workspaces: Path,
    runtime_line: str,
    disks: Disks | None,
    disk_line: str,
) -> int:
    limits = reported(
        config.limits(),
        config.max_runtime,
        disk=disks is not None,
        confined=config.backend != "shell",
    )
    client = ExecutorClient(
        config.frontend_url,
        config.token,
        config.queues,
        name=config.name,
        runtime=runtime.name,
        limits=limits,
    )
    try:
        try:
            if not await connect(client, stopping):
                return 0
        except Unauthorized as exc:
            log.error("%s", exc)
            return 1
        print(describe(config, runtime_line, disk_line), flush=True)
        settings = HandlerSettings(
            workspaces=workspaces,
            limits=config.limits(),
            keep_workspaces=config.keep_workspaces,
            runtime_notice=runtime_line if runtime.name == "shell" else "",
            disks=disks,
            max_runtime=config.max_runtime,
        )

        consumer = Consumer(
            client,
            JobHandler(client, runtime, settings),
            holder=config.name,
            slots=config.max_jobs,
            poll_wait=config.poll_wait,
            heartbeat_interval=config.heartbeat_interval,
            max_runtime=config.max_runtime,
            max_runtime_setting="EXECUTOR_MAXIMUM_RUNTIME_PER_JOB",
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
