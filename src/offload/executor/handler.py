"""Runs one job on the executor: workspace, checkout, files, steps, logs, clean-up.

Steps run in the job's `sequence` (default: docker steps, then cli steps). Docker steps run
in the runtime; cli steps run a host tool (executor/hosttools.py) on the host, outside it.
Everything a job could get wrong about its steps is checked before anything runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from offload.executor import workspace
from offload.executor.client import RETRIES, ExecutorClient
from offload.executor.cmdlog import CommandLog
from offload.executor.gitproxy import GitProxy
from offload.executor.hosttools import HostCommand, HostToolRefused, host_command
from offload.executor.process import run_command
from offload.executor.redaction import Redactor
from offload.executor.runtimes.base import (
    WORKSPACE_MOUNT,
    Limits,
    Mount,
    Runtime,
    Step,
    StepUnsupported,
)
from offload.protocol.wire import DockerStep, Job, StepMount
from offload.queue.consumer import JobFailed
from offload.queue.record import Record

log = logging.getLogger(__name__)

# What the executor token and job tokens become in logs.
TOKEN_REPLACEMENT = "SECRET_REMOVED"
# Runs a host step in its directory without a cwd argument to run_command; "$@" is the argv.
_CHDIR = 'cd -- "$1" && shift && exec "$@"'


class StepFailed(RuntimeError):
    """A step exited non-zero (the job errored; its queue decides about retries)."""


@dataclass(frozen=True)
class RuntimeStep:
    """A docker step, checked: its key and its index among the job's docker steps."""

    key: str
    index: int
    step: DockerStep


@dataclass(frozen=True)
class HostStep:
    """A cli step, checked: its key, the host command it stands for and its directory."""

    key: str
    command: HostCommand
    given: list[str]  # the step's command as the job wrote it, for the log
    dir: str


def plan(job: Job) -> list[RuntimeStep | HostStep]:
    """The job's steps in the order to run them; JobFailed for any step that cannot run."""
    steps: dict[str, RuntimeStep | HostStep] = {}
    keys = [s.key or str(i) for i, s in enumerate(job.docker_steps)]
    keys += [s.key or f"cli.{i}" for i, s in enumerate(job.cli_steps)]
    for key, count in Counter(keys).items():
        if count > 1:
            raise JobFailed(
                f"step key {key} is used by {count} steps; keys must be unique across the "
                "job's docker and cli steps"
            )
    for index, docker_step in enumerate(job.docker_steps):
        key = docker_step.key or str(index)
        check_targets(key, docker_step.mounts)
        steps[key] = RuntimeStep(key, index, docker_step)
    for index, cli_step in enumerate(job.cli_steps):
        key = cli_step.key or f"cli.{index}"
        try:
            command = host_command(cli_step, key)
        except HostToolRefused as exc:
            raise JobFailed(str(exc)) from exc
        steps[key] = HostStep(key, command, list(cli_step.commands), cli_step.dir)
    if not job.sequence:
        return list(steps.values())
    for key, count in Counter(job.sequence).items():
        if key not in steps:
            raise JobFailed(
                f"sequence names step {key}, but the job has no step with that key; "
                f"its steps are: {', '.join(steps)}"
            )
        if count > 1:
            raise JobFailed(f"sequence names step {key} {count} times; name each step once")
    if left := [key for key in steps if key not in job.sequence]:
        raise JobFailed(
            f"sequence leaves out step {', '.join(left)}; name every step of the job once"
        )
    return [steps[key] for key in job.sequence]


def check_targets(key: str, mounts: list[StepMount]) -> None:
    """JobFailed unless every mount target is a path a step may mount onto."""
    for mount in mounts:
        target = mount.target
        parts = target.split("/")[1:]
        problem = ""
        if not target.startswith("/"):
            problem = "is not an absolute path"
        elif any(ord(c) < 32 or ord(c) == 127 for c in target):
            problem = "contains a control character"
        elif target == "/":
            problem = "is the container's root"
        elif any(part in ("", ".", "..") for part in parts):
            problem = "is not normalized (no empty, `.` or `..` parts, no trailing /)"
        elif parts[0] in ("proc", "dev"):
            problem = f"is under /{parts[0]}, which the runtime provides"
        elif target == WORKSPACE_MOUNT:
            problem = "is where the workspace is mounted"
        if problem:
            raise JobFailed(f"docker step {key} mounts onto {target!r}, which {problem}")
    for target, count in Counter(m.target for m in mounts).items():
        if count > 1:
            raise JobFailed(f"docker step {key} mounts {count} sources onto {target}")


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
        steps = plan(job)
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
                await self._run(job, steps, root, logs)
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

    async def _run(
        self, job: Job, steps: list[RuntimeStep | HostStep], root: Path, logs: CommandLog
    ) -> None:
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
        for planned in steps:
            if isinstance(planned, HostStep):
                await self._host_step(planned, root, logs)
            else:
                await self._runtime_step(job, planned, root, limits, logs)

    async def _runtime_step(
        self, job: Job, planned: RuntimeStep, root: Path, limits: Limits, logs: CommandLog
    ) -> None:
        docker_step = planned.step
        run_id = f"{job.id}-{planned.index}-{uuid.uuid4().hex[:8]}"
        async with logs.command(
            f"step.{self.runtime.name}.{planned.key}", docker_step.commands
        ) as command:
            workspace.inside(root, docker_step.dir)
            step = Step(
                key=planned.key,
                script=workspace.write_script(root, job, planned.index, docker_step.commands),
                image=docker_step.image or None,
                dir=docker_step.dir,
                env=dict(pair.split("=", 1) for pair in docker_step.env if "=" in pair),
                mounts=tuple(mount_of(root, planned.key, m) for m in docker_step.mounts),
            )
            try:
                argv = self.runtime.command(step, root, limits, run_id)
            except StepUnsupported as exc:
                raise StepFailed(str(exc)) from exc
            code = await run_command(
                argv,
                on_output=command.write,
                grace=self.settings.kill_grace,
                stop=functools.partial(self.runtime.stop, run_id),
            )
            command.exit_code = code
        if code != 0:
            raise StepFailed(f"step {planned.key} exited with code {code}")

    async def _host_step(self, planned: HostStep, root: Path, logs: CommandLog) -> None:
        host = workspace.host_dir(root)
        async with logs.command(f"step.host.{planned.key}", planned.given) as command:
            cwd = workspace.inside(root, planned.dir)
            if (tool := planned.command.in_process) is not None:
                loop = asyncio.get_running_loop()

                def write(line: str) -> None:
                    loop.call_soon_threadsafe(command.write, "stdout", line)

                # A thread cannot be killed: in-process tools are offload's own, bounded by
                # what they do (git on one checkout), not by the kill grace.
                code = await asyncio.to_thread(
                    tool,
                    planned.command.argv,
                    workspace=root,
                    host=host,
                    env=planned.command.env,
                    write=write,
                )
            else:
                env = {
                    **workspace.git_env(),
                    **planned.command.env,
                    "OFFLOAD_HOST_DIR": str(host),
                    "OFFLOAD_WORKSPACE": str(root),
                }
                code = await run_command(
                    ["/bin/sh", "-c", _CHDIR, "offload-host-step", str(cwd), *planned.command.argv],
                    on_output=command.write,
                    env=env,
                    grace=self.settings.kill_grace,
                )
            command.exit_code = code
        if code != 0:
            raise StepFailed(f"host step {planned.key} exited with code {code}")

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


def mount_of(root: Path, key: str, mount: StepMount) -> Mount:
    """The runtime's mount of a step's mount: its source checked, found in the workspace."""
    source = workspace.inside(root, mount.source)
    if not source.exists():
        raise StepFailed(
            f"step {key} mounts {mount.source!r} at {mount.target}, but the workspace has no "
            f"{mount.source!r} when the step starts; write it in an earlier step or in the "
            "job's files"
        )
    return Mount(source=source, target=mount.target, read_only=mount.read_only)
