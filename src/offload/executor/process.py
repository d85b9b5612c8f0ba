"""A step's host process: its own process group, streamed output, terminate and time limit."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence

from offload.executor.runtimes.base import Outcome, Runtime

# Receives ("stdout" | "stderr", line without its newline); may be a coroutine function.
OutputSink = Callable[[str, str], Awaitable[None] | None]

_CHUNK = 64 * 1024


class StepTimeout(TimeoutError):
    """The step ran past its wall-clock limit and was killed."""


class StepProcess:
    """Runs one argv in a new process group; nothing of it survives run()."""

    def __init__(
        self,
        argv: Sequence[str],
        on_output: OutputSink,
        *,
        stop: Callable[[], Awaitable[Outcome | None]] | None = None,
        env: Mapping[str, str] | None = None,
        max_line: int = 1 << 20,
        user: tuple[int, int] | None = None,
    ) -> None:
        self._argv = list(argv)
        self._on_output = on_output
        self._stop_engine = stop
        self._env = dict(env) if env is not None else None
        self._max_line = max_line
        self._user = user
        # What the runtime's stop() saw of the run (a limit it hit), once it ended.
        self.outcome = Outcome()
        self._proc: asyncio.subprocess.Process | None = None
        self._terminating = False
        self._stopped = False
        self._sink_error: Exception | None = None

    @classmethod
    def for_runtime(
        cls, runtime: Runtime, run_id: str, argv: Sequence[str], on_output: OutputSink
    ) -> StepProcess:
        """A step's process whose terminate() also stops what the runtime's engine runs."""
        return cls(argv, on_output, stop=lambda: runtime.stop(run_id))

    @property
    def pid(self) -> int | None:
        """The process id (and process group id) once started."""
        return self._proc.pid if self._proc is not None else None

    async def run(self, timeout: float | None = None, grace: float = 10.0) -> int:
        """Run to the end; the exit code (negative: killed by that signal).

        StepTimeout after `timeout` seconds. On a timeout, or when the awaiting task is
        cancelled, the group gets SIGTERM, then SIGKILL after `grace` seconds. When the output
        sink raises (a job's output limit, say), the group is killed and run() raises that.
        """
        proc = await asyncio.create_subprocess_exec(
            *as_user(self._user),
            *self._argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=self._env,
        )
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(self._pump("stdout", proc.stdout)),
            asyncio.create_task(self._pump("stderr", proc.stderr)),
        ]
        try:
            if self._terminating:
                self._signal(signal.SIGKILL)
            try:
                code = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                await self.terminate(grace)
                raise StepTimeout(
                    f"the step ran longer than its time limit of {timeout:g}s and was killed"
                ) from None
            except asyncio.CancelledError:
                # Shielded: a second cancellation must not leave the group running.
                await asyncio.shield(self.terminate(grace))
                raise
        finally:
            await asyncio.shield(self._finish(pumps))
        if self._sink_error is not None:
            raise self._sink_error
        return code

    async def terminate(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole group, SIGKILL after `grace` seconds, then the engine's stop."""
        self._terminating = True
        if self._proc is None:
            return
        self._signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # The grace is for the whole group: children that trap SIGTERM outlive the leader.
        # Polled: the kernel tells nobody when the last member of a group exits.
        while self._group_alive() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self._signal(signal.SIGKILL)
        await self._proc.wait()
        await self._stop()

    async def _finish(self, pumps: list[asyncio.Task[None]]) -> None:
        assert self._proc is not None
        self._signal(signal.SIGKILL)
        await self._proc.wait()
        # A process that left the group (setsid) may hold the pipes open: do not wait for it.
        _, pending = await asyncio.wait(pumps, timeout=2.0)
        for task in pending:
            task.cancel()
        await self._stop()

    async def _stop(self) -> None:
        if not self._stopped and self._stop_engine is not None:
            self._stopped = True
            outcome = await self._stop_engine()
            if outcome is not None:
                self.outcome = outcome

    def _signal(self, signum: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

    def _group_alive(self) -> bool:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        # The leader may be an unreaped zombie; a reaped leader with live children is alive.
        return True

    async def _pump(self, stream: str, reader: asyncio.StreamReader) -> None:
        # Reading chunks rather than readline(): no line-length limit, and both pipes drain
        # independently, so a child filling one pipe never blocks on the other.
        partial = b""
        while chunk := await reader.read(_CHUNK):
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                await self._emit(stream, line)
            while len(partial) >= self._max_line:
                await self._emit(stream, partial[: self._max_line])
                partial = partial[self._max_line :]
        if partial:
            await self._emit(stream, partial)

    async def _emit(self, stream: str, line: bytes) -> None:
        if self._sink_error is not None:
            return  # keep draining so the step cannot block on a full pipe
        try:
            result = self._on_output(stream, line.decode("utf-8", errors="replace"))
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._sink_error = exc
            # Nothing more of its output is wanted: stop the step now, not at its end.
            self._signal(signal.SIGKILL)


def as_user(user: tuple[int, int] | None) -> list[str]:
    """The argv prefix that runs a command as host `user` (uid, gid) with no other groups.

    setpriv rather than Popen's user=: changing ids in the child makes Python fork the whole
    executor instead of vfork-ing it, which costs milliseconds of CPU for every command.
    """
    if user is None:
        return []
    uid, gid = user
    setpriv = shutil.which("setpriv") or "setpriv"
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--"]


async def run_command(
    argv: Sequence[str],
    *,
    on_output: OutputSink,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    grace: float = 10.0,
    stop: Callable[[], Awaitable[Outcome | None]] | None = None,
    user: tuple[int, int] | None = None,
) -> int:
    """Run `argv` in its own process group (as host `user`, if given), streaming its lines;
    its exit code."""
    process = StepProcess(argv, on_output, stop=stop, env=env, user=user)
    return await process.run(timeout=timeout, grace=grace)
