"""Command logs: one entry per command, streamed to the server about once a second."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from offload.executor.limits import named
from offload.executor.redaction import Redactor
from offload.protocol.wire import MAX_LOG_BATCH
from offload.queue.record import Lease, LogEntry, NotOwned

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0
# How long the creation of a command's entry waits for the next commands' (seconds): the
# commands of a short job go out in one request, and a reader sees them this much later.
LINGER = 0.25


class LogSink(Protocol):
    """Where log entries go (the server, through the client)."""

    async def add_log_entry(self, lease: Lease, entry: LogEntry) -> int:
        """Append an entry; its id."""
        ...

    async def add_log_entries(self, lease: Lease, entries: Sequence[LogEntry]) -> list[int]:
        """Append several entries in one call; their ids, in order."""
        ...

    async def update_log_entry(self, lease: Lease, entry_id: int, entry: LogEntry) -> None:
        """Replace an entry."""
        ...


class OutputLimitReached(RuntimeError):
    """The job wrote more output than its limit allows; the message names the limit."""


@dataclass
class _Budget:
    """What all of a job's commands may still write to its log, together."""

    limit: int
    used: int = 0
    reached: bool = False


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
    create_queued: bool = False
    created: bool = False  # its creation went out
    entry_id: int | None = None
    ended: bool = False
    budget: _Budget | None = None

    def write(self, stream: str, line: str) -> None:
        """Add one line of output from `stream` (stdout or stderr).

        OutputLimitReached (the line dropped) once the job's output passed its limit.
        """
        text = f"{stream}: {line}\n"
        budget = self.budget
        if budget is not None:
            # The executor holds a job's whole log in memory: the limit bounds that too.
            budget.used += len(text.encode(errors="replace"))
            if budget.used > budget.limit:
                message = f"{named('output', budget.limit)} reached"
                if not budget.reached:
                    budget.reached = True
                    self.note(f"offload: {message}: the rest of the output is dropped")
                raise OutputLimitReached(message)
        self.parts.append(text)
        self.changed = True

    def note(self, text: str) -> None:
        """Add a line written by the executor itself."""
        self.parts.append(text if text.endswith("\n") else text + "\n")
        self.changed = True


@dataclass
class _Write:
    """A creation or an update of one command's entry, waiting for its turn."""

    command: Command
    create: bool
    final: bool
    keep: bool  # its failure is kept for drain() (a flush's is not: a later write makes good)
    done: asyncio.Future[BaseException | None]


class CommandLog:
    """The log of one job: entries created, flushed and finished against a sink, redacted.

    Writes go out in the background, one after another in the order they were made, so a
    job's commands never wait on the server between them; `drain()` waits for them all (the
    job must drain before it is reported finished). An entry is created when its command
    ends, or after one flush interval if it runs longer: most commands take less time than
    that, and are created finished in one request instead of a creation and an update; a
    creation lingers a moment (LINGER) for the ones after it, and the creations that queue up
    go out together in one request.
    """

    def __init__(
        self,
        sink: LogSink,
        lease: Lease,
        redactor: Redactor,
        *,
        interval: float = FLUSH_INTERVAL,
        linger: float = LINGER,
        header: str = "",
        output_limit: int = 0,
    ) -> None:
        self.sink = sink
        self.lease = lease
        self.redactor = redactor
        self.interval = interval
        self.linger = linger
        # Set by drain(): from then on nothing lingers.
        self._draining = asyncio.Event()
        # The first line of the job's first entry (which job, which attempt, where).
        self._header = header
        # Bytes of output all commands together may write (0: no limit).
        self._budget = _Budget(output_limit) if output_limit > 0 else None
        self._pending: collections.deque[_Write] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
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

    def _queue(
        self, command: Command, *, create: bool = False, final: bool = True, keep: bool = True
    ) -> asyncio.Future[BaseException | None]:
        """Queue a write; the future ends with its failure (or None) once it went out."""
        done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(command, create, final, keep, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return done

    async def _write_pending(self) -> None:
        while self._pending:
            if self._pending[0].create and self.linger > 0 and not self._draining.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._draining.wait(), self.linger)
            batch = [self._pending.popleft()]
            while (
                batch[0].create
                and self._pending
                and self._pending[0].create
                and len(batch) < MAX_LOG_BATCH
            ):
                batch.append(self._pending.popleft())
            try:
                await self._send(batch)
            except Exception as exc:
                failure: Exception | None = exc
            else:
                failure = None
            for write in batch:
                if failure is not None and write.keep and self._failure is None:
                    self._failure = failure
                write.done.set_result(failure)

    async def _send(self, batch: list[_Write]) -> None:
        if not batch[0].create:
            (write,) = batch
            if write.command.entry_id is None:
                raise RuntimeError(f"the log entry of {write.command.key} was never created")
            entry = self._entry(write.command, final=write.final)
            await self.sink.update_log_entry(self.lease, write.command.entry_id, entry)
            return
        commands = [write.command for write in batch]
        entries = []
        for command in commands:
            command.changed = False
            command.created = True
            entries.append(self._entry(command, final=command.ended))
        if len(entries) == 1:
            ids = [await self.sink.add_log_entry(self.lease, entries[0])]
        else:
            ids = await self.sink.add_log_entries(self.lease, entries)
        for command, entry_id in zip(commands, ids, strict=True):
            command.entry_id = entry_id

    async def drain(self) -> None:
        """Wait until every write made so far has ended; raise the first one that failed."""
        self._draining.set()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._failure is not None:
            raise self._failure

    @contextlib.asynccontextmanager
    async def command(self, key: str, words: list[str]) -> AsyncIterator[Command]:
        """An entry for one command: created within a flush interval, flushed while it runs,
        finished at the end.

        Set `exit_code` on the yielded Command before leaving the block (an exception leaves
        it unset: the entry then records the failure).
        """
        command = Command(
            key, list(words), datetime.now(UTC), time.monotonic(), budget=self._budget
        )
        if self._header:
            command.note(self._header)
            self._header = ""
        flusher = asyncio.create_task(self._flush_while_running(command))
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
            if not command.create_queued:
                command.create_queued = True
                self._queue(command, create=True)  # created finished, in one request
            elif command.created:
                # The last update carries the exit code; it goes out after everything before.
                self._queue(command)
            # Otherwise its creation is still waiting, and carries the end with it.

    async def _flush_while_running(self, command: Command) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not command.create_queued:
                command.create_queued = True
                self._queue(command, create=True)
                continue
            if not command.changed or not command.created:
                continue
            command.changed = False
            failure = await asyncio.shield(self._queue(command, final=False, keep=False))
            if isinstance(failure, NotOwned):
                return  # the job is lost; the final update fails too, and drain() says so
            if failure is not None:  # the next flush or the final update will try again
                command.changed = True
                log.warning("could not stream the log of %s: %s", command.key, failure)
