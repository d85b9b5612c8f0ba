"""Command logs: one entry per command, streamed to the server about once a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from offload.executor.redaction import Redactor
from offload.queue.record import Lease, LogEntry

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0


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

    def write(self, stream: str, line: str) -> None:
        """Add one line of output from `stream` (stdout or stderr)."""
        self.parts.append(f"{stream}: {line}\n")
        self.changed = True

    def note(self, text: str) -> None:
        """Add a line written by the executor itself."""
        self.parts.append(text if text.endswith("\n") else text + "\n")
        self.changed = True


class CommandLog:
    """The log of one job: entries created, flushed and finished against a sink, redacted."""

    def __init__(
        self, sink: LogSink, lease: Lease, redactor: Redactor, *, interval: float = FLUSH_INTERVAL
    ) -> None:
        self.sink = sink
        self.lease = lease
        self.redactor = redactor
        self.interval = interval

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

    @contextlib.asynccontextmanager
    async def command(self, key: str, words: list[str]) -> AsyncIterator[Command]:
        """An entry for one command: created now, flushed while it runs, finished at the end.

        Set `exit_code` on the yielded Command before leaving the block (an exception leaves
        it unset: the entry then records the failure).
        """
        command = Command(key, list(words), datetime.now(UTC), time.monotonic())
        entry_id = await self.sink.add_log_entry(self.lease, self._entry(command, final=False))
        command.changed = False
        flusher = asyncio.create_task(self._flush_while_running(command, entry_id))
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
            # The last update must land (it carries the exit code); it is shielded from a
            # cancellation that is tearing the job down.
            await asyncio.shield(
                self.sink.update_log_entry(self.lease, entry_id, self._entry(command))
            )

    async def _flush_while_running(self, command: Command, entry_id: int) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not command.changed:
                continue
            command.changed = False
            try:
                await self.sink.update_log_entry(
                    self.lease, entry_id, self._entry(command, final=False)
                )
            except Exception as exc:  # the next flush or the final update will try again
                command.changed = True
                log.warning("could not stream the log of %s: %s", command.key, exc)
