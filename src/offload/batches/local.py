"""`offload batch preview --local`: a spec's workspaces run on the user's own machine.

The CLI becomes a small executor of one spec. It claims the spec's workspaces from the server
(`/api/batches/specs/{id}/dequeue`, a long poll like the protocol's), runs each with the
executor's own handler and runtime (configured by the same EXECUTOR_* settings: backend, data
directory and its images, limits), and logs and finishes each job through the protocol's job
calls with the job's own token. The server keeps what comes back exactly as it keeps an
executor's results: the same step cache, the same changeset specs, the same preview.

A workspace whose holder stops heartbeating (the machine died, the CLI was killed) is queued
by the resetter like any other job: the fleet's executors finish it, if there are any.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Mapping

from offload.batches.queue import NAME
from offload.executor.client import ExecutorClient
from offload.executor.config import ExecutorConfig, check_data_dir
from offload.executor.handler import HandlerSettings, JobHandler
from offload.executor.rundir import RunDir, sweep
from offload.executor.runtimes.base import Runtime, RuntimeUnavailable
from offload.executor.runtimes.cgroup import Cgroups
from offload.executor.runtimes.registry import build_runtime, default_runtime
from offload.queue.consumer import Consumer

# How long running workspaces get to finish once the user stops a local run (Ctrl-C).
STOP_GRACE = 10.0


def local_config(
    server_url: str, slots: int, env: Mapping[str, str] = os.environ
) -> ExecutorConfig:
    """This machine's executor settings for a local run: EXECUTOR_* read as an executor reads
    them, with the server, queue, name and slots of the run (no executor token: each job's own
    token is all a local run uses). ConfigError lists what is wrong."""
    own = {k: v for k, v in env.items() if k != "EXECUTOR_QUEUE_NAMES"}
    try:
        default = default_runtime()
    except RuntimeUnavailable:
        default = "sandbox"  # its check says what is missing
    config = ExecutorConfig.from_env(
        {
            **own,
            "EXECUTOR_FRONTEND_URL": server_url,
            "EXECUTOR_REGISTRATION_TOKEN": "none",
            "EXECUTOR_QUEUE_NAME": NAME,
            "EXECUTOR_MAX_NUM_JOBS": str(slots),
            "EXECUTOR_NAME": f"local-{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
        },
        default_backend=default,
    )
    check_data_dir(config)
    return config


def local_runtime(config: ExecutorConfig) -> Runtime:
    """The runtime EXECUTOR_BACKEND names (ValueError for an unknown one)."""
    return build_runtime(config.backend, config.runtime_settings())


class LocalRun:
    """Runs the workspaces of one batch spec on this machine until stopped."""

    def __init__(
        self, config: ExecutorConfig, runtime: Runtime, spec_id: str, token: str | None
    ) -> None:
        self.config = config
        self.runtime = runtime
        # Held until run() ends, so that no executor sharing the data directory sweeps it.
        self.rundir = RunDir.claim(config.data_dir / "workspaces", config.run_id)
        self.client = ExecutorClient(
            config.frontend_url,
            token or "",
            [NAME],
            name=config.name,
            runtime=runtime.name,
            queue_path=f"/api/batches/specs/{spec_id}",
        )
        self.consumer = Consumer(
            self.client,
            JobHandler(
                self.client,
                runtime,
                HandlerSettings(
                    workspaces=self.rundir.path,
                    limits=config.limits(),
                    keep_workspaces=config.keep_workspaces,
                    max_runtime=config.max_runtime,
                ),
            ),
            holder=config.name,
            slots=config.max_jobs,
            poll_wait=config.poll_wait,
            heartbeat_interval=config.heartbeat_interval,
            max_runtime=config.max_runtime,
            max_runtime_setting="EXECUTOR_MAXIMUM_RUNTIME_PER_JOB",
            heartbeat_store=self.client.heartbeat_store,
        )

    async def run(self) -> None:
        """Claim and run workspaces until stop()."""
        # Only to find and remove run cgroups: the runtime makes its own.
        cgroups = Cgroups.detect()
        try:
            await sweep(
                self.rundir.path.parent, cgroups, keep_workspaces=self.config.keep_workspaces
            )
            await self.consumer.run()
        finally:
            self.rundir.release(keep=self.config.keep_workspaces)
            with contextlib.suppress(RuntimeError):
                await cgroups.sweep([self.config.run_id])
            await self.client.close()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Claim nothing more; running workspaces get `grace` seconds, then go back."""
        self.consumer.stop(grace)
