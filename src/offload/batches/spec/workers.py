"""Worker processes that parse what users send, so no request does that work on the event loop.

Parsing a spec is pure Python (ruamel.yaml, jsonschema): in a thread it would hold the GIL and
starve the loop, and a thread cannot be stopped. So each parse runs in one of a few worker
processes, started on first use, with a deadline: the worker stops its own parse when the
deadline passes (an alarm), and a worker that does not answer a moment later is killed and
replaced. Each worker's address space is capped, so a parse that explodes fails there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, ParamSpec, TypeVar, cast

from offload.batches.spec.limits import (
    MAX_WAITING_PARSES,
    PARSE_DEADLINE,
    PARSE_MEMORY,
    PARSE_WORKERS,
    SpecLimitExceeded,
)
from offload.batches.spec.model import BatchSpec, SpecError
from offload.batches.spec.recall import recalled, remember

P = ParamSpec("P")
T = TypeVar("T")

# How long a worker may take to start, and to answer once its own deadline passed.
START_TIMEOUT = 60.0
GRACE = 2.0


class WorkersBusy(RuntimeError):
    """Too many parses are waiting for a worker; the caller should try again shortly."""


class _Overtime(BaseException):
    """Raised in a worker by its alarm when a call runs past its deadline (a BaseException,
    so that no `except Exception` in the parsing code swallows it)."""


class SpecWorkers:
    """A few processes that run parse functions with a deadline; started on first use."""

    def __init__(
        self,
        size: int = PARSE_WORKERS,
        *,
        deadline: float = PARSE_DEADLINE,
        memory: int = PARSE_MEMORY,
        max_waiting: int = MAX_WAITING_PARSES,
    ) -> None:
        self.size = size
        self.deadline = deadline
        self.memory = memory
        self.max_waiting = max_waiting
        # One thread per worker process waits for its answers (the GIL is free while it
        # waits); a thread keeps its own worker, so no two calls ever share one.
        self._threads = ThreadPoolExecutor(size, thread_name_prefix="spec-worker")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._waiting = 0
        self._workers: set[_Worker] = set()

    async def parse(self, text: str, source: str = "<spec>") -> BatchSpec:
        """parse_spec(text) in a worker; SpecErrors as parse_spec raises them."""
        if (known := recalled(text)) is not None:
            return known
        with self.admitted():
            spec = await self.run(_parse, text, source)
        remember(text, spec)
        return spec

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """fn(*args) in a worker (fn must be a module's function, its values picklable).

        Call it inside admitted(). SpecLimitExceeded when it runs past the deadline.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return cast(T, await loop.run_in_executor(self._threads, self._call, call))

    def close(self) -> None:
        """Stop every worker (they also stop by themselves when this process ends)."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers, self._workers = self._workers, set()
        for worker in workers:
            worker.stop()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """A place among the parses running or waiting; WorkersBusy when all are taken.

        Taken before a request's body is read, so the bodies held at once are few too.
        """
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise WorkersBusy(
                    f"the server is parsing {self._waiting} batch specs already (the limit is "
                    f"{self.max_waiting}, MAX_WAITING_PARSES); try again in a few seconds"
                )
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def _call(self, call: Callable[[], Any]) -> Any:
        """In one of the waiting threads: the call's result from this thread's worker."""
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is not None and not worker.alive():  # killed while idle, say
            self._drop(worker)
            worker = None
        if worker is None:
            worker = _Worker(self.memory)
            self._local.worker = worker
            with self._lock:
                self._workers.add(worker)
        try:
            ok, value = worker.call(call, self.deadline)
        except (_NoAnswer, _Died) as exc:
            # Stuck where the alarm cannot reach (one long C call), or dead: replace it.
            self._drop(worker)
            if isinstance(exc, _Died):
                raise _died(worker.process.returncode) from None
            raise _overtime(self.deadline) from None
        if not ok:
            raise value
        return value

    def _drop(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._workers.discard(worker)
        self._local.worker = None


class _NoAnswer(Exception):
    """The worker did not answer in time."""


class _Died(Exception):
    """The worker's process ended (a crash, or the kernel's OOM killer)."""


class _Worker:
    """One worker process and the socket to it."""

    def __init__(self, memory: int) -> None:
        # A plain child (not multiprocessing's spawn, which re-runs the parent's main script).
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
        command = f"from offload.batches.spec.workers import serve; serve({fd}, {memory})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", command], pass_fds=[fd], stdin=subprocess.DEVNULL
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        if not self.conn.poll(START_TIMEOUT) or self.conn.recv() != "ready":
            self.stop()
            raise RuntimeError("a spec worker process did not start")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def call(self, call: Callable[[], Any], deadline: float) -> tuple[bool, Any]:
        """(True, result) or (False, exception) of call() in the worker."""
        try:
            self.conn.send((call, deadline))
            if self.conn.poll(deadline + GRACE):
                return cast(tuple[bool, Any], self.conn.recv())
        except (EOFError, OSError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(GRACE)
            raise _Died from None
        raise _NoAnswer

    def stop(self) -> None:
        """Kill the process and close the socket."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.conn.close()


def serve(fd: int, memory: int) -> None:
    """A worker process: run each call sent on socket `fd` until the other end closes it."""
    conn = Connection(fd)
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _alarm)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # The first call pays for imports and the schema's compilation; pay it before "ready".
    with contextlib.suppress(Exception):
        importlib.import_module("offload.batches.spec.submission")
        _parse("name: warm-up\n", "<warm-up>")
    conn.send("ready")
    while True:
        try:
            call, deadline = conn.recv()
        except (EOFError, OSError):
            return
        answer: tuple[bool, Any]
        try:
            signal.setitimer(signal.ITIMER_REAL, deadline)
            try:
                answer = (True, call())
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Overtime:
            answer = (False, _overtime(deadline))
        except MemoryError:
            answer = (False, _out_of_memory(memory))
        except Exception as exc:
            answer = (False, exc)
        try:
            conn.send(answer)
        except (EOFError, OSError):
            return
        except Exception as exc:  # an answer that does not pickle
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Overtime


def _overtime(deadline: float) -> SpecLimitExceeded:
    message = (
        f"the batch spec took longer than {deadline:g}s to read, the limit (PARSE_DEADLINE); "
        "make it smaller or simpler"
    )
    return SpecLimitExceeded(SpecError(message), 422)


def _died(exitcode: int | None) -> SpecLimitExceeded:
    message = (
        f"the process reading the batch spec stopped (exit code {exitcode}); make the spec "
        "smaller or simpler"
    )
    return SpecLimitExceeded(SpecError(message), 422)


def _out_of_memory(memory: int) -> SpecLimitExceeded:
    message = (
        f"reading the batch spec needed more than {memory >> 20} MiB, the limit (PARSE_MEMORY); "
        "make it smaller or simpler"
    )
    return SpecLimitExceeded(SpecError(message), 413)


def _parse(text: str, source: str) -> BatchSpec:
    from offload.batches.spec.reader import read

    return read(text, source=source)


@functools.cache
def shared() -> SpecWorkers:
    """This process's workers (the server's and the worker's routes and jobs share them)."""
    return SpecWorkers()
