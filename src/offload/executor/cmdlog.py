"""Command logs: one entry per command, streamed to the server about once a second."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from offload.executor.redaction import Redactor
from offload.queue.record import Lease, LogEntry, NotOwned

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0
T = TypeVar("T")


class LogSink(Protocol):
    """Where log entries go (the server, through the client)."""

    async def add_log_entry(self, lease: Lease, entry: LogEntry) -> int:
        """Append an entry; its id."""
        ...

    async def update_log_entry(self, lease: Lease, entry_id: int, entry: LogEntry) -> None:
        """Replace an entry."""
        ...


@dataclass
class Command:
    """One running command's log entry."""

    key: str
    command: list[str]
    start_time: datetime
    started: float
    parts: list[str] = field(default_factory=list)
    exit_code: int | None = None
    duration_ms: int | None = None
    changed: bool = True
    created: bool = False  # its creation went out
    ended: bool = False

    def write(self, stream: str, line: str) -> None:
        """Add one line of output from `stream` (stdout or stderr)."""
        self.parts.append(f"{stream}: {line}\n")
        self.changed = True

    def note(self, text: str) -> None:
        """Add a line written by the executor itself."""
        self.parts.append(text if text.endswith("\n") else text + "\n")
        self.changed = True


class CommandLog:
    """The log of one job: entries created, flushed and finished against a sink, redacted.

    Writes go out in the background, one after another in the order they were made, so a
    job's commands never wait on the server between them; `drain()` waits for them all (the
    job must drain before it is reported finished). A command that ends before its creation
    went out is created finished, in one request instead of two: most setup commands take
    less time than a request.
    """

    def __init__(
        self, sink: LogSink, lease: Lease, redactor: Redactor, *, interval: float = FLUSH_INTERVAL
    ) -> None:
        self.sink = sink
        self.lease = lease
        self.redactor = redactor
        self.interval = interval
        self._tail: asyncio.Task[Any] | None = None
        self._failure: BaseException | None = None

    def _entry(self, command: Command, *, final: bool = True) -> LogEntry:
        out = "".join(command.parts)
        if not final:
            out = self.redactor.settled(out)
        return LogEntry(
            key=command.key,
            command=self.redactor.words(command.command),
            start_time=command.start_time,
            exit_code=command.exit_code,
            out=self.redactor.text(out),
            duration_ms=command.duration_ms,
        )

    def _then(self, write: Callable[[], Awaitable[T]], *, keep: bool = True) -> asyncio.Task[T]:
        """Run `write` once every write queued before it has ended; its failure is kept
        for drain() unless `keep` is false (a flush that a later write makes good)."""
        previous = self._tail

        async def in_turn() -> T:
            if previous is not None:
                await asyncio.wait([previous])
            return await write()

        task = asyncio.create_task(in_turn())
        if keep:
            task.add_done_callback(self._keep_failure)
        self._tail = task
        return task

    def _keep_failure(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def drain(self) -> None:
        """Wait until every write made so far has ended; raise the first one that failed."""
        if self._tail is not None:
            await asyncio.wait([self._tail])
        if self._failure is not None:
            raise self._failure

    @contextlib.asynccontextmanager
    async def command(self, key: str, words: list[str]) -> AsyncIterator[Command]:
        """An entry for one command: created now, flushed while it runs, finished at the end.

        Set `exit_code` on the yielded Command before leaving the block (an exception leaves
        it unset: the entry then records the failure).
        """
        command = Command(key, list(words), datetime.now(UTC), time.monotonic())

        async def create() -> int:
            command.changed = False
            command.created = True
            entry = self._entry(command, final=command.ended)
            return await self.sink.add_log_entry(self.lease, entry)

        created = self._then(create)

        async def update(final: bool) -> None:
            # Shielded: a flush given up on must not take the entry's creation down with it.
            entry_id = await asyncio.shield(created)
            await self.sink.update_log_entry(
                self.lease, entry_id, self._entry(command, final=final)
            )

        flusher = asyncio.create_task(self._flush_while_running(command, update))
        try:
            yield command
        except BaseException as exc:
            if command.exit_code is None:
                command.note(f"offload: {type(exc).__name__}: {exc}".rstrip(": "))
                command.exit_code = -1
            raise
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            command.duration_ms = int((time.monotonic() - command.started) * 1000)
            command.ended = True
            if command.created:
                # The last update carries the exit code; it goes out after everything before.
                self._then(functools.partial(update, True))

    async def _flush_while_running(
        self, command: Command, update: Callable[[bool], Awaitable[None]]
    ) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not command.changed:
                continue
            command.changed = False
            try:
                await asyncio.shield(self._then(functools.partial(update, False), keep=False))
            except NotOwned:
                return  # the job is lost; the final update fails too, and drain() says so
            except Exception as exc:  # the next flush or the final update will try again
                command.changed = True
                log.warning("could not stream the log of %s: %s", command.key, exc)
