"""Runs one job on the executor: workspace, checkout, files, steps, logs, clean-up."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from offload.executor import workspace
from offload.executor.client import RETRIES, ExecutorClient
from offload.executor.cmdlog import CommandLog
from offload.executor.gitproxy import GitProxy
from offload.executor.process import run_command
from offload.executor.redaction import Redactor
from offload.executor.runtimes.base import Limits, Runtime, Step
from offload.protocol.wire import Job
from offload.queue.consumer import JobFailed
from offload.queue.record import Record

log = logging.getLogger(__name__)

# What the executor token and job tokens become in logs.
TOKEN_REPLACEMENT = "SECRET_REMOVED"


class StepFailed(RuntimeError):
    """A step exited non-zero (the job errored; its queue decides about retries)."""


@dataclass(frozen=True)
class HandlerSettings:
    """How jobs are run on this executor."""

    workspaces: Path
    limits: Limits
    keep_workspaces: bool = False
    # Shown at the top of every job's log (the shell runtime's warning, for one).
    runtime_notice: str = ""
    kill_grace: float = 10.0


class JobHandler:
    """The consumer loop's handler on executors."""

    def __init__(self, client: ExecutorClient, runtime: Runtime, settings: HandlerSettings) -> None:
        self.client = client
        self.runtime = runtime
        self.settings = settings

    async def handle(self, record: Record) -> None:
        """Run the job in `record` end to end; raise to error or fail it."""
        job = record.fields["job"]
        if not isinstance(job, Job):
            raise JobFailed(f"malformed job payload: {job!r}")
        lease = record.lease
        held = self.client.held(lease)
        redactor = Redactor(
            {
                **job.redacted_values,
                self.client.token: TOKEN_REPLACEMENT,
                held.token: TOKEN_REPLACEMENT,
            }
        )
        logs = CommandLog(self.client, lease, redactor)
        root = workspace.create(self.settings.workspaces, job)
        try:
            try:
                await self._run(job, root, logs)
            finally:
                # Every log write lands before the job is reported finished.
                await asyncio.shield(logs.drain())
        except workspace.WorkspaceError as exc:
            raise JobFailed(str(exc)) from exc
        finally:
            if self.settings.keep_workspaces:
                log.info("keeping the workspace of job %s at %s", job.id, root)
            else:
                workspace.remove(root)

    async def _run(self, job: Job, root: Path, logs: CommandLog) -> None:
        if self.settings.runtime_notice:
            async with logs.command("setup.runtime", [self.runtime.name]) as note:
                note.note(self.settings.runtime_notice)
                note.exit_code = 0
        if job.repository_name:
            await self._checkout(job, root, logs)
        if job.files:
            async with logs.command("setup.files", ["write", *job.files]) as files:
                workspace.write_files(root, job)
                files.exit_code = 0
        images = sorted({s.image for s in job.docker_steps if s.image})
        async with logs.command("setup.images", ["prepare", *images]) as prepare:
            await self.runtime.prepare(images)
            prepare.exit_code = 0
        limits = self.settings.limits
        if job.allow_network:
            limits = Limits(**{**limits.__dict__, "network": True})
        for index, docker_step in enumerate(job.docker_steps):
            script = workspace.write_script(root, job, index, docker_step.commands)
            env = dict(pair.split("=", 1) for pair in docker_step.env if "=" in pair)
            step = Step(
                key=docker_step.key or str(index),
                script=script,
                image=docker_step.image or None,
                dir=docker_step.dir,
                env=env,
            )
            workspace.inside(root, docker_step.dir)
            run_id = f"{job.id}-{index}-{uuid.uuid4().hex[:8]}"
            argv = self.runtime.command(step, root, limits, run_id)
            key = f"step.{self.runtime.name}.{step.key}"
            async with logs.command(key, docker_step.commands) as command:
                code = await run_command(
                    argv,
                    on_output=command.write,
                    grace=self.settings.kill_grace,
                    stop=functools.partial(self.runtime.stop, run_id),
                )
                command.exit_code = code
            if code != 0:
                raise StepFailed(f"step {step.key} exited with code {code}")

    async def _checkout(self, job: Job, root: Path, logs: CommandLog) -> None:
        repo_dir = workspace.inside(root, job.repository_directory or ".")
        repo_dir.mkdir(parents=True, exist_ok=True)
        held_headers = self.client.job_headers_for(job)
        proxy = GitProxy(
            self.client.http,
            job.repository_name,
            held_headers,
            retries=RETRIES,
            retry_delay=self.client.retry_delay,
        )
        await proxy.start()
        try:
            for key, argv in workspace.git_commands(job, repo_dir, proxy.url):
                async with logs.command(key, argv) as command:
                    code = await run_command(argv, on_output=command.write, env=workspace.git_env())
                    command.exit_code = code
                if code != 0:
                    raise StepFailed(f"{key} failed with exit code {code}; see its log")
        finally:
            await proxy.close()
