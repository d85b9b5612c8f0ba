"""A job's live log as server-sent events: what its log entries gained since the reader's cursor.

The executor rewrites a running command's entry about once a second with its whole output so
far; a reader polls the entries and is sent only the characters it has not seen. The cursor
(the SSE event id) is `ENTRY.CHARS`: every entry before ENTRY was sent whole, ENTRY up to
CHARS. That holds because an executor finishes one entry before it creates the next, so a
browser that reconnects (with `Last-Event-ID`) or a page that rendered the log so far (with
`?since=`) picks up where it stopped, without repeats.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from offload.queue.record import LogEntry, LogSlice

# What one event carries at most (characters of output): a bigger gain goes out in several.
MAX_EVENT_CHARS = 64 * 1024
# How often a stream reads the job (seconds): the executor flushes every second, so a line
# reaches the reader within about 1.25 s of being printed.
POLL_INTERVAL = 0.25
# How long one stream lasts (seconds); the browser's EventSource then reconnects by itself.
STREAM_SECONDS = 600.0
# A comment this often (seconds) keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0
# Streams one user may hold open at once, per server process (a browser opens one per page).
MAX_STREAMS_PER_USER = 8
# The browser waits this long before reconnecting (milliseconds).
RETRY_MS = 2000
# How much of what was sent is remembered to notice output rewritten rather than extended
# (the store keeps the head and tail of an entry past its limit).
TAIL = 64

_CURSOR = re.compile(r"^(\d{1,18})\.(\d{1,12})$")


@dataclass(frozen=True)
class Cursor:
    """Where a reader stands in a job's log: entries before `entry` whole, `entry` to `sent`."""

    entry: int = 0
    sent: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """The cursor `text` names (`ENTRY.CHARS`); the start of the log for anything else."""
        found = _CURSOR.match((text or "").strip())
        return cls(int(found[1]), int(found[2])) if found else cls()

    def __str__(self) -> str:
        return f"{self.entry}.{self.sent}"


def cursor_after(entries: Sequence[LogEntry]) -> Cursor:
    """The cursor of a reader who has seen `entries` as they are now."""
    last = entries[-1] if entries else None
    if last is None or last.id is None:
        return Cursor()
    return Cursor(last.id, len(last.out))


def event(kind: str, data: dict[str, Any], cursor: Cursor | None = None) -> str:
    """One server-sent event; `data` as one line of JSON (which escapes every line break)."""
    head = f"event: {kind}\n" + (f"id: {cursor}\n" if cursor is not None else "")
    return head + "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"


@dataclass
class _Seen:
    sent: int
    tail: str | None  # None: sent before this stream (through the cursor), not known here
    status: tuple[int | None, int | None] | None
    # Output found rewritten in a partial read: the next read takes it whole, then resets.
    reset: bool = False


class LogFollower:
    """Turns successive reads of a job's log into the `log` events a reader lacks.

    Each read starts where `frontier()` says: at the oldest entry still running, from a
    little before what was sent of it (to notice output rewritten rather than extended), so
    following a log of 100,000 lines reads only what is new, not the whole log each time.
    """

    def __init__(self, start: Cursor) -> None:
        self.start = start
        self.seen: dict[int, _Seen] = {}

    def frontier(self) -> tuple[int, int]:
        """Where the next read starts: an entry id and how much of its output to skip."""
        if not self.seen:
            return self.start.entry, max(0, self.start.sent - TAIL)
        for entry_id in sorted(self.seen):
            seen = self.seen[entry_id]
            if seen.reset:
                return entry_id, 0
            if seen.status is None or seen.status[0] is None:  # still running
                return entry_id, max(0, seen.sent - TAIL)
        last = max(self.seen)
        return last, max(0, self.seen[last].sent - TAIL)

    def changes(self, slices: Sequence[LogSlice]) -> Iterator[str]:
        """The events for what `slices` hold beyond what was sent: new output, new entries,
        a command's end, and a `reset` for output rewritten rather than extended."""
        for part in slices:
            entry = part.entry
            if entry.id is None:
                continue
            seen = self.seen.get(entry.id)
            if seen is None:
                seen = self._first_sight(entry, part.length)
                self.seen[entry.id] = seen
                if seen.status is not None:
                    continue  # the reader has it all already
            yield from self._gain(part, seen)

    def _first_sight(self, entry: LogEntry, length: int) -> _Seen:
        assert entry.id is not None
        if entry.id < self.start.entry:
            return _Seen(length, None, (entry.exit_code, entry.duration_ms))
        sent = self.start.sent if entry.id == self.start.entry else 0
        return _Seen(sent, None, None)

    def _gain(self, part: LogSlice, seen: _Seen) -> Iterator[str]:
        entry, offset = part.entry, part.offset
        assert entry.id is not None
        out = entry.out  # the output from character `offset` on

        def text(start: int, end: int) -> str:
            return out[max(0, start - offset) : max(0, end - offset)]

        rewritten = seen.reset or (
            part.length < seen.sent
            or (
                seen.tail is not None
                and max(0, seen.sent - TAIL) >= offset
                and text(max(0, seen.sent - TAIL), seen.sent) != seen.tail
            )
        )
        if rewritten and offset > 0:
            seen.reset = True  # read it whole next time, and start the reader over
            return
        if rewritten:
            seen.sent, seen.reset = 0, False
        status = (entry.exit_code, entry.duration_ms)
        if seen.sent == part.length and status == seen.status and not rewritten:
            return
        first = True
        # At least one event, even with no new output: a new entry, a command's end.
        while first or seen.sent < part.length:
            chunk = text(seen.sent, seen.sent + MAX_EVENT_CHARS)
            seen.sent += len(chunk)
            yield event(
                "log",
                {
                    "entry": entry.id,
                    "key": entry.key,
                    "attempt": entry.attempt,
                    "text": chunk,
                    "reset": rewritten and first,
                    "exitCode": entry.exit_code,
                    "durationMs": entry.duration_ms,
                },
                Cursor(entry.id, seen.sent),
            )
            first = False
            if not chunk:
                break
        seen.tail = text(max(0, seen.sent - TAIL), seen.sent)
        seen.status = status


def plain_text(entries: Sequence[LogEntry]) -> str:
    """A job's whole log as plain text: each entry under a line naming it and how it ended."""
    parts = []
    for entry in entries:
        ended = "running" if entry.exit_code is None else f"exit {entry.exit_code}"
        attempt = f", attempt {entry.attempt}" if entry.attempt and entry.attempt > 1 else ""
        parts.append(f"=== {entry.key} ({ended}{attempt})\n")
        parts.append(entry.out if not entry.out or entry.out.endswith("\n") else entry.out + "\n")
    return "".join(parts)
