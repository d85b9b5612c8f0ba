"""Runs one job on the executor: workspace, checkout, files, steps, logs, clean-up.

Steps run in the job's `sequence` (default: docker steps, then cli steps). Docker steps run
in the runtime; cli steps run a host tool (executor/hosttools.py) on the host, outside it.
Everything a job could get wrong about its steps is checked before anything runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import posixpath
import re
import signal
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from offload.executor import bundle, uploads, workspace
from offload.executor.client import RETRIES, ExecutorClient
from offload.executor.cmdlog import Command, CommandLog, OutputLimitReached
from offload.executor.disks import Disk, Disks
from offload.executor.gitproxy import GitProxy
from offload.executor.hosttools import HostCommand, HostToolRefused, host_command
from offload.executor.limits import named
from offload.executor.process import StepProcess, run_command
from offload.executor.redaction import Redactor
from offload.executor.runtimes.base import (
    WORKSPACE_MOUNT,
    Limits,
    Mount,
    Outcome,
    Runtime,
    Step,
    StepUnsupported,
)
from offload.protocol.wire import DockerStep, Job, JobUpload, StepMount
from offload.queue.consumer import JobFailed
from offload.queue.record import Lease, NotOwned, Record

log = logging.getLogger(__name__)

# Seconds between the runs of a checkout's fetch that failed (the server went away mid-fetch).
FETCH_RETRY_DELAYS = (1.0, 3.0, 10.0)
# What git says when the connection, not the repository, failed.
_CUT_OFF = re.compile(
    r"RPC failed|early EOF|hung up unexpectedly|unable to access|Connection refused|"
    r"returned error: 50[234]|HTTP 50[234]|protocol error|invalid index-pack output|"
    r"unexpected disconnect|transfer closed"
)
# What the executor token and job tokens become in logs.
TOKEN_REPLACEMENT = "SECRET_REMOVED"
# Runs a host step in its directory without a cwd argument to run_command; "$@" is the argv.
_CHDIR = 'cd -- "$1" && shift && exec "$@"'
# HOME of the git commands that run as the step uid: root's home is not theirs to read.
_NO_HOME = "/nonexistent"
# Seconds between looks at whether a bundled job was canceled or lost (heartbeats tell).
_RIDER_POLL = 0.5
# A step throttled less than this (seconds, as the kernel counts) gets no note in its log.
_THROTTLE_NOTE = 0.1


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
    for upload in job.uploads:
        try:
            uploads.check_path(upload)
        except uploads.UploadRefused as exc:
            raise JobFailed(str(exc)) from exc
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
    # Size-limited filesystems for workspaces (None: workspaces go in `workspaces`, unlimited).
    disks: Disks | None = None
    # Each job of a bundle gets this long (seconds; None: no limit), as a job on its own would.
    max_runtime: float | None = None


class JobHandler:
    """The consumer loop's handler on executors."""

    def __init__(self, client: ExecutorClient, runtime: Runtime, settings: HandlerSettings) -> None:
        self.client = client
        self.runtime = runtime
        self.settings = settings

    async def handle(self, record: Record) -> None:
        """Run the job in `record` (and its bundle) end to end; raise to error or fail it."""
        job = record.fields["job"]
        if not isinstance(job, Job):
            raise JobFailed(f"malformed job payload: {job!r}")
        disks = self.settings.disks
        disk = await disks.acquire() if disks is not None else None
        try:
            parent = disk.path if disk is not None else self.settings.workspaces
            if not job.bundle:
                await self._job(job, record.lease, parent, disk)
            else:
                await self._bundle(job, record.lease, parent, disk)
        finally:
            if disks is not None and disk is not None:
                disks.release(disk)

    async def _job(
        self, job: Job, lease: Lease, parent: Path, disk: Disk | None, base: _Base | None = None
    ) -> None:
        """Run one job in a workspace of its own (its checkout copied from `base`, if given)."""
        steps = plan(job)
        held = self.client.held(lease)
        redactor = Redactor(
            {
                **job.redacted_values,
                self.client.token: TOKEN_REPLACEMENT,
                held.token: TOKEN_REPLACEMENT,
            }
        )
        header = f"offload: job {job.id}, attempt {job.attempt}, on executor {self.client.name}"
        logs = CommandLog(
            self.client,
            lease,
            redactor,
            header=header,
            output_limit=self.settings.limits.output_bytes,
        )
        root = workspace.create(parent, job, owner=self._owner())
        try:
            try:
                await self._run(job, steps, root, logs, disk, base)
                for upload in job.uploads:
                    await self._upload(upload, lease, root, logs)
            finally:
                # Every log write lands before the job is reported finished.
                await asyncio.shield(logs.drain())
        except workspace.WorkspaceError as exc:
            raise JobFailed(str(exc)) from exc
        except OutputLimitReached as exc:
            raise StepFailed(f"job {job.id} was stopped: {exc}") from exc
        finally:
            if self.settings.keep_workspaces:
                log.info("keeping the workspace of job %s at %s", job.id, root)
            else:
                workspace.remove(root)

    async def _bundle(self, job: Job, lease: Lease, parent: Path, disk: Disk | None) -> None:
        """Run `job`, then each job of its bundle, from one checkout; each is reported on
        its own and fails alone. `job`'s own outcome is raised last."""
        riders = [(member, self.client.ride(member)) for member in job.bundle]
        waiting = {rider_lease.id: rider_lease for _, rider_lease in riders}
        root = workspace.create(parent, job, owner=self._owner())
        base = _Base(bundle.checkout_job(job), root, size=1 + len(job.bundle))
        try:
            failure: BaseException | None = None
            try:
                await self._job(job, lease, parent, disk, base)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                failure = exc
            for member, rider_lease in riders:
                await self._rider(member, rider_lease, parent, disk, base)
                del waiting[rider_lease.id]
            if failure is not None:
                raise failure
        finally:
            # A bundle stopped early (canceled, lost, shutting down) hands back what it did
            # not start, so that other executors take it now.
            for rider_lease in waiting.values():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.client.release(rider_lease))
            if not self.settings.keep_workspaces:
                workspace.remove(base.root)

    async def _rider(
        self, job: Job, lease: Lease, parent: Path, disk: Disk | None, base: _Base
    ) -> None:
        """Run and report one job of a bundle; its failure is its own."""
        why = bundle.mismatch(base.job, job) or (
            f"the checkout it shares with job {base.job.id} failed: {base.failure}"
            if base.failure
            else ""
        )
        task = asyncio.ensure_future(
            self._job(job, lease, parent, disk, base) if not why else _refuse(why)
        )
        stop = ""
        try:
            async with asyncio.timeout(self.settings.max_runtime):
                while not task.done():
                    await asyncio.wait({task}, timeout=_RIDER_POLL)
                    if not task.done() and (stop := self.client.stopped(lease)):
                        task.cancel()
        except TimeoutError:
            stop = "timeout"
            task.cancel()
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
        try:
            if stop == "lost":
                log.warning("heartbeat lost job %s of a bundle; abandoning it", job.id)
                self.client.forget(lease)
            elif stop == "canceled":
                await self.client.mark_failed(lease, "canceled on request")
            elif stop == "timeout":
                await self.client.mark_errored(
                    lease,
                    f"job exceeded its maximum runtime of {self.settings.max_runtime:g}s "
                    "(EXECUTOR_MAXIMUM_RUNTIME_PER_JOB)",
                )
            elif (exc := task.exception()) is None:
                await self.client.mark_complete(lease)
            elif isinstance(exc, JobFailed):
                await self.client.mark_failed(lease, str(exc) or type(exc).__name__)
            else:
                log.info("job %s of a bundle errored: %r", job.id, exc)
                await self.client.mark_errored(lease, f"{type(exc).__name__}: {exc}")
        except NotOwned as exc:
            log.warning("%s", exc)

    def _owner(self) -> tuple[int, int] | None:
        """The host uid and gid steps run as, when not this process's own: they own the
        workspace and run the checkout."""
        limits = self.settings.limits
        if limits.uid is None or limits.uid == os.geteuid():
            return None
        return limits.uid, limits.gid if limits.gid is not None else limits.uid

    async def _run(
        self,
        job: Job,
        steps: list[RuntimeStep | HostStep],
        root: Path,
        logs: CommandLog,
        disk: Disk | None,
        base: _Base | None = None,
    ) -> None:
        if self.settings.runtime_notice:
            async with logs.command("setup.runtime", [self.runtime.name]) as note:
                note.note(self.settings.runtime_notice)
                note.exit_code = 0
        if job.repository_name and base is None:
            await self._checkout(job, root, logs)
        elif job.repository_name and base is not None:
            await self._copy(base, job, root, logs)
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
                await self._runtime_step(job, planned, root, limits, logs, disk)

    async def _runtime_step(
        self,
        job: Job,
        planned: RuntimeStep,
        root: Path,
        limits: Limits,
        logs: CommandLog,
        disk: Disk | None,
    ) -> None:
        docker_step = planned.step
        failure = ""
        run_id = f"{job.id}-{planned.index}-{uuid.uuid4().hex[:8]}"
        async with logs.command(
            f"step.{self.runtime.name}.{planned.key}", docker_step.commands
        ) as command:
            workspace.inside(root, docker_step.dir)
            shell = await self.runtime.shell(docker_step.image or None)
            command.note(f"offload: {shell.started(planned.key)}")
            step = Step(
                key=planned.key,
                script=workspace.write_script(root, job, planned.index, docker_step.commands),
                image=docker_step.image or None,
                dir=docker_step.dir,
                env={
                    **dict(pair.split("=", 1) for pair in docker_step.env if "=" in pair),
                    # A step with side effects can tell a re-run (its attempt > 1) from a first run.
                    "OFFLOAD_JOB_ATTEMPT": str(job.attempt),
                },
                mounts=tuple(mount_of(root, planned.key, m) for m in docker_step.mounts),
                shell=shell.path,
            )
            try:
                argv = self.runtime.command(step, root, limits, run_id)
            except StepUnsupported as exc:
                raise StepFailed(str(exc)) from exc
            process = StepProcess(
                argv, command.write, stop=functools.partial(self.runtime.stop, run_id)
            )
            try:
                code = await process.run(grace=self.settings.kill_grace)
            except OutputLimitReached as exc:
                code, failure = -signal.SIGKILL, f"step {planned.key} was stopped: {exc}"
            command.exit_code = code
            failure = failure or _limit_failure(
                planned.key, process.outcome, limits, disk, code, command
            )
            if failure:
                command.note(f"offload: {failure}")
            elif code != 0 and (hint := shell.failed(planned.key)):
                command.note(f"offload: {hint}")
            if process.outcome.throttled >= _THROTTLE_NOTE:
                command.note(
                    f"offload: the {named('cpu', limits.cpus)} held the step back "
                    f"(throttled for {process.outcome.throttled:.1f}s)"
                )
        if failure:
            raise StepFailed(failure)
        if code != 0:
            raise StepFailed(f"step {planned.key} exited with code {code}")

    async def _upload(self, upload: JobUpload, lease: Lease, root: Path, logs: CommandLog) -> None:
        """Send one file the steps left to the server; a missing or unsafe one fails the job."""
        async with logs.command(upload.key, ["upload", upload.path]) as command:
            try:
                with uploads.open_within(root, upload) as fd:
                    digest = await asyncio.to_thread(uploads.digest, fd)
                    command.note(f"{upload.path}: {digest.size} bytes, sha256 {digest.sha256}")
                    answer = await self.client.upload(lease, fd, digest)
            except uploads.UploadRefused as exc:
                command.note(str(exc))
                command.exit_code = 1
                raise JobFailed(str(exc)) from exc
            command.note(f"uploaded as upload {answer.get('id', '?')}")
            command.exit_code = 0

    async def _host_step(self, planned: HostStep, root: Path, logs: CommandLog) -> None:
        host = workspace.host_dir(root)
        async with logs.command(f"step.host.{planned.key}", planned.given) as command:
            cwd = workspace.inside(root, planned.dir)
            if (tool := planned.command.in_process) is not None:
                loop = asyncio.get_running_loop()

                def write(line: str) -> None:
                    loop.call_soon_threadsafe(_write_within_limit, command, line)

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
                if command.budget is not None and command.budget.reached:
                    raise OutputLimitReached(f"{named('output', command.budget.limit)} reached")
            else:
                argv = list(planned.command.argv)
                if argv[1:2] == ["-C"] and len(argv) > 2:
                    # `git -C DIR`: the directory is the job's, so it must be in its workspace.
                    argv[2] = str(workspace.inside(root, posixpath.join(planned.dir, argv[2])))
                env = {
                    **workspace.git_env(),
                    # What steps left in the workspace (its .git included) is untrusted.
                    **workspace.untrusted_git_env(root),
                    **planned.command.env,
                    "OFFLOAD_HOST_DIR": str(host),
                    "OFFLOAD_WORKSPACE": str(root),
                }
                code = await run_command(
                    ["/bin/sh", "-c", _CHDIR, "offload-host-step", str(cwd), *argv],
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
        workspace.give(root, repo_dir)
        # As the step uid: it must own the checkout that its steps change.
        owner = self._owner()
        env = {**workspace.git_env(), **({"HOME": _NO_HOME} if owner else {})}
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
                code = await self._git(key, argv, logs, env, owner)
                if code != 0:
                    raise StepFailed(f"{key} failed with exit code {code}; see its log")
        finally:
            await proxy.close()

    async def _copy(self, base: _Base, job: Job, root: Path, logs: CommandLog) -> None:
        """The job's checkout made from its bundle's: the base is checked out by the first
        job that needs it; every job gets its own git directory and files from it."""
        base_repo = workspace.inside(base.root, base.job.repository_directory or ".")
        if not base.ready:
            try:
                await self._checkout(base.job, base.root, logs)
            except BaseException as exc:
                base.failure = str(exc) or type(exc).__name__
                raise
            bundle.seal_objects(base_repo / ".git")
            base.ready = True
        repo_dir = workspace.inside(root, job.repository_directory or ".")
        repo_dir.mkdir(parents=True, exist_ok=True)
        workspace.give(root, repo_dir)
        owner = self._owner()
        async with logs.command("setup.bundle", ["copy", f"job {base.job.id}"]) as note:
            bundle.copy_git_dir(base_repo, repo_dir, job.sparse_checkout, owner)
            note.note(
                f"offload: checked out once for the {base.size} jobs of job "
                f"{base.job.id}'s bundle; this job's files come from that checkout"
            )
            note.exit_code = 0
        env = {**workspace.git_env(), **({"HOME": _NO_HOME} if owner else {})}
        code = await self._git("setup.git.read-tree", bundle.read_tree(repo_dir), logs, env, owner)
        if code != 0:
            raise StepFailed(f"setup.git.read-tree failed with exit code {code}; see its log")

    async def _git(
        self,
        key: str,
        argv: list[str],
        logs: CommandLog,
        env: dict[str, str],
        owner: tuple[int, int] | None,
    ) -> int:
        """Run one git command of the checkout; a fetch the server cut off runs again."""
        said: list[str] = []
        for attempt, delay in enumerate((*FETCH_RETRY_DELAYS, None), start=1):
            said.clear()
            name = key if attempt == 1 else f"{key}.attempt{attempt}"
            async with logs.command(name, argv) as command:

                def output(stream: str, line: str, into: Command = command) -> None:
                    said.append(line)
                    into.write(stream, line)

                code = await run_command(argv, on_output=output, env=env, user=owner)
                command.exit_code = code
            # Only what the connection broke (a server restart mid-fetch) is worth running
            # again: the proxy retries just the requests that never reached the server.
            cut_off = any(_CUT_OFF.search(line) for line in said[-20:])
            if code == 0 or key != "setup.git.fetch" or not cut_off or delay is None:
                return code
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns")


@dataclass
class _Base:
    """The checkout a bundle's jobs share: checked out by the first job that runs."""

    job: Job
    root: Path
    size: int
    ready: bool = False
    failure: str = ""


async def _refuse(why: str) -> None:
    raise JobFailed(f"this job cannot run in its bundle: {why}")


def _write_within_limit(command: Command, line: str) -> None:
    """An in-process tool's line; past the output limit, dropped (the tool ends by itself)."""
    with contextlib.suppress(OutputLimitReached):
        command.write("stdout", line)


def _limit_failure(
    key: str, outcome: Outcome, limits: Limits, disk: Disk | None, code: int, command: Command
) -> str:
    """Why a finished step failed because of a limit it hit; "" if it hit none."""
    if outcome.limit == "memory":
        return (
            f"step {key} failed: {named('memory', limits.memory_bytes)} reached "
            "(the kernel killed a process of the step)"
        )
    if outcome.limit == "pids":
        return f"step {key} failed: {named('pids', limits.pids)} reached (a fork failed)"
    if disk is not None and disk.full():
        return (
            f"step {key} failed: {named('disk', limits.disk_bytes)} reached (its workspace is full)"
        )
    if code != 0 and limits.tmp_bytes > 0 and _ran_out_of_space(command):
        # The tmpfs is gone with the sandbox: the step's own words are all there is to go by.
        if disk is not None:
            why = "and its workspace is not full"
        else:
            why = "; with no disk limit here, the host's disk may be full instead"
        return (
            f"step {key} failed: {named('tmp', limits.tmp_bytes)} reached "
            f'(it wrote "No space left on device" {why})'
        )
    return ""


def _ran_out_of_space(command: Command, lines: int = 200) -> bool:
    return any("no space left on device" in part.lower() for part in command.parts[-lines:])


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
