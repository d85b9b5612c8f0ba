"""The SQL store of one record queue: every verb of the queue, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from offload import metrics
from offload.clock import Clock, SystemClock
from offload.db.base import Database, Transaction
from offload.db.values import parse_time
from offload.queue.coalescer import Coalescer
from offload.queue.record import Heartbeat, Lease, LogEntry, LogSlice, NotOwned, Record, Resets
from offload.queue.spec import QueueSpec
from offload.queue.statements import Statements
from offload.queue.states import State

# Per-entry cap on stored output: a runaway step must not fill the database.
DEFAULT_LOG_LIMIT = 1024 * 1024
# Cap on a stored failure message (an executor may quote a step's output in it).
MESSAGE_LIMIT = 64 * 1024
# What a NUL byte of a job's output is stored as: PostgreSQL text refuses NUL, and one job's
# bytes must never make a write fail. The same on SQLite, so both read back alike.
NUL_MARK = "\u2400"  # SYMBOL FOR NULL, shown as ␀
# Lone surrogates (from JSON "\ud800" escapes) cannot be encoded as UTF-8 for either backend.
_SURROGATE = re.compile("[\ud800-\udfff]")


_OUTCOMES = {
    State.COMPLETED: metrics.COMPLETIONS,
    State.ERRORED: metrics.ERRORS,
    State.FAILED: metrics.FAILURES,
    State.CANCELED: metrics.CANCELS,
}


def storable(text: str) -> str:
    """`text` as any text column of either backend accepts it: NUL shown as ␀, lone
    surrogates as U+FFFD."""
    text = text.replace("\x00", NUL_MARK)
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def cap_output(out: str, limit: int) -> str:
    """`out` cut to about `limit` characters, keeping its head and tail around a visible marker."""
    if len(out) <= limit:
        return out
    keep = max(limit // 2, 1)
    dropped = len(out) - 2 * keep
    marker = f"\n[... offload: {dropped} characters of output truncated ...]\n"
    return out[:keep] + marker + out[-keep:]


class SqlQueueStore:
    """Every verb of one record queue, against the SQL database."""

    def __init__(
        self,
        db: Database,
        spec: QueueSpec,
        *,
        clock: Clock | None = None,
        log_limit: int = DEFAULT_LOG_LIMIT,
    ) -> None:
        self.db = db
        self.spec = spec
        self.clock = clock or SystemClock()
        self.log_limit = log_limit
        self._sql = Statements(db.dialect, spec)
        self._completions: Coalescer[Lease, State] = Coalescer(self._complete_many)

    def _now(self) -> datetime:
        return self.clock.now()

    # -- producing ------------------------------------------------------------------------

    async def enqueue(
        self, fields: Mapping[str, Any] | None = None, *, process_after: datetime | None = None
    ) -> int:
        """Add one record and wake idle consumers; returns its id."""
        params = self._insert_params(fields, process_after)
        rows = await self.db.fetch(self._sql["enqueue"], params)
        if self.db.dialect == "sqlite":
            await self.db.notify(self.spec.name)
        return int(rows[0]["id"])

    async def enqueue_many(
        self, many: Sequence[Mapping[str, Any]], *, process_after: datetime | None = None
    ) -> int:
        """Add many records in one transaction, then wake consumers once; returns how many."""
        if not many:
            return 0
        await self.db.executemany(
            self._sql["enqueue_many"], [self._insert_params(f, process_after) for f in many]
        )
        await self.db.notify(self.spec.name)
        return len(many)

    def _insert_params(
        self, fields: Mapping[str, Any] | None, process_after: datetime | None
    ) -> dict[str, Any]:
        fields = {**self.spec.defaults, **(fields or {})}
        unknown = set(fields) - set(self.spec.columns)
        missing = set(self.spec.columns) - set(fields)
        if unknown or missing:
            raise ValueError(
                f"queue {self.spec.name}: enqueue takes exactly the fields "
                f"{sorted(self.spec.columns)}; unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        return {
            "now": self._now(),
            "process_after": process_after,
            "queue": self.spec.name,
            **fields,
        }

    # -- consuming ------------------------------------------------------------------------

    async def dequeue(self, holder: str, *, limit: int = 1, wait: float = 0.0) -> list[Record]:
        """Lease up to `limit` eligible records to `holder`, waiting up to `wait` s for one.

        Safe to cancel: records leased by a statement that was already under way are released
        back to the queue before the cancellation goes on.
        """
        deadline = time.monotonic() + wait
        waiter = await self.db.waiter(self.spec.name) if wait > 0 else None
        try:
            while True:
                if waiter is not None:
                    waiter.clear()
                records = await self._dequeue_once(holder, limit)
                if records:
                    metrics.DEQUEUES.labels(self.spec.name).inc(len(records))
                remaining = deadline - time.monotonic()
                if records or waiter is None or remaining <= 0:
                    return records
                await waiter.wait(remaining)
        finally:
            if waiter is not None:
                waiter.close()

    async def _dequeue_once(self, holder: str, limit: int) -> list[Record]:
        params = {"now": self._now(), "holder": holder, "limit": limit}
        statement = asyncio.ensure_future(self.db.fetch(self._sql["dequeue"], params))
        try:
            rows = await asyncio.shield(statement)
        except asyncio.CancelledError:
            # The statement may have leased rows already: hand them back, then stop.
            rows = await statement
            for row in rows:
                await self.release(Record.from_row(self.spec, row).lease)
            raise
        return [Record.from_row(self.spec, row) for row in rows]

    async def dequeue_matching(
        self, holder: str, condition: str, params: Mapping[str, Any], *, limit: int
    ) -> list[Record]:
        """Lease to `holder`, at once, up to `limit` eligible records that also meet
        `condition` (trusted SQL over the queue's table; `params` bound), in queue order."""
        if limit < 1:
            return []
        # Leased now, started when it starts: its first log entry sets started_at.
        sql = self._sql.narrowed("dequeue", condition)
        rows = await self.db.fetch(
            sql, {**params, "now": self._now(), "holder": holder, "limit": limit}
        )
        if rows:
            metrics.DEQUEUES.labels(self.spec.name).inc(len(rows))
        return [Record.from_row(self.spec, row) for row in rows]

    async def release(self, lease: Lease) -> None:
        """Hand a held job back to the queue untouched (a consumer that is shutting down)."""
        await self._fenced("release", lease, "release", now=self._now())
        await self.db.notify(self.spec.name)

    async def heartbeat(self, holder: str, ids: Sequence[int]) -> Heartbeat:
        """Refresh `holder`'s jobs; unknown ids are lost to it, cancel ids should stop."""
        if not ids:
            return Heartbeat([], [])
        rows = await self.db.fetch(
            self._sql["heartbeat"], {"now": self._now(), "holder": holder, "ids": list(ids)}
        )
        known = sorted(int(r["id"]) for r in rows)
        return Heartbeat(known, sorted(int(r["id"]) for r in rows if r["cancel"]))

    async def _fenced(
        self, name: str, lease: Lease, action: str, *, on: Transaction | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        rows = await (on or self.db).fetch(
            self._sql[name],
            {
                "id": lease.id,
                "holder": lease.holder,
                "token": lease.token,
                "queue": self.spec.name,
                **params,
            },
        )
        if not rows:
            raise NotOwned(lease, action)
        return rows

    async def mark_complete(self, lease: Lease) -> State:
        """Finish the job as completed (canceled if cancel was requested meanwhile)."""
        state = await self._completions.submit(lease)
        if state is None:
            raise NotOwned(lease, "complete")
        return self._counted(state)

    async def _complete_many(self, leases: Sequence[Lease]) -> dict[Lease, State]:
        """Complete many held jobs in one statement; the leases that were still held."""
        rows = await self.db.fetch(
            self._sql["mark_complete"],
            {
                "now": self._now(),
                "ids": [lease.id for lease in leases],
                "holders": [lease.holder for lease in leases],
                "tokens": [lease.token for lease in leases],
                "leases": [[lease.id, lease.holder, lease.token] for lease in leases],
            },
        )
        done = {(int(row["id"]), row["lease_token"]): State(row["state"]) for row in rows}
        return {
            lease: done[lease.id, lease.token]
            for lease in leases
            if (lease.id, lease.token) in done
        }

    async def mark_errored(self, lease: Lease, message: str) -> State:
        """Record a failure that may be retried after the backoff; failed past max_retries."""
        rows = await self._fenced(
            "mark_errored",
            lease,
            "mark errored",
            now=self._now(),
            message=storable(cap_output(message, MESSAGE_LIMIT)),
            max_retries=self.spec.max_retries,
            backoff=self.spec.retry_backoff.total_seconds(),
            max_backoff=self.spec.max_backoff.total_seconds(),
        )
        return self._counted(State(rows[0]["state"]))

    async def mark_failed(self, lease: Lease, message: str) -> State:
        """Finish the job as failed, without retries (canceled if cancel was requested)."""
        rows = await self._fenced(
            "mark_failed",
            lease,
            "mark failed",
            now=self._now(),
            message=storable(cap_output(message, MESSAGE_LIMIT)),
        )
        return self._counted(State(rows[0]["state"]))

    def _counted(self, state: State) -> State:
        counter = _OUTCOMES.get(state)
        if counter is not None:
            counter.labels(self.spec.name).inc()
        return state

    # -- logs -----------------------------------------------------------------------------

    def _entry_params(self, entry: LogEntry) -> dict[str, Any]:
        return {
            "key": storable(entry.key),
            "command": [storable(word) for word in entry.command],
            "start_time": entry.start_time,
            "exit_code": entry.exit_code,
            "out": storable(cap_output(entry.out, self.log_limit)),
            "duration_ms": entry.duration_ms,
        }

    async def add_log_entry(self, lease: Lease, entry: LogEntry) -> int:
        """Append a log entry to the held job; returns the entry's id."""
        return (await self.add_log_entries(lease, [entry]))[0]

    async def add_log_entries(self, lease: Lease, entries: Sequence[LogEntry]) -> list[int]:
        """Append several log entries to the held job, all or none; their ids, in order."""
        ids = []
        async with self.db.transaction() as tx:
            if entries:
                await tx.fetch(
                    self._sql["started"],
                    {
                        "id": lease.id,
                        "holder": lease.holder,
                        "token": lease.token,
                        "start_time": entries[0].start_time,
                    },
                )
            for entry in entries:
                params = self._entry_params(entry)
                rows = await self._fenced("add_log_entry", lease, "log to", on=tx, **params)
                ids.append(int(rows[0]["id"]))
        return ids

    async def update_log_entry(self, lease: Lease, entry_id: int, entry: LogEntry) -> None:
        """Replace a log entry of the held job (output so far, exit code, duration)."""
        await self._fenced(
            "update_log_entry",
            lease,
            "update the log of",
            entry_id=entry_id,
            **self._entry_params(entry),
        )

    async def logs(self, record_id: int) -> list[LogEntry]:
        """Every log entry of a record, oldest first."""
        rows = await self.db.fetch(self._sql["logs"], {"queue": self.spec.name, "id": record_id})
        return [LogEntry.from_row(row) for row in rows]

    async def logs_from(self, record_id: int, entry_id: int, chars: int) -> list[LogSlice]:
        """The log entries of a record from `entry_id` on, oldest first; that entry's output
        only from character `chars` on (a live log reads what it lacks, not the whole log)."""
        rows = await self.db.fetch(
            self._sql["logs_from"],
            {
                "queue": self.spec.name,
                "id": record_id,
                "entry": entry_id,
                "start_char": max(0, chars) + 1,
            },
        )
        return [
            LogSlice(
                LogEntry.from_row(row),
                offset=max(0, chars) if int(row["id"]) == entry_id else 0,
                length=int(row["chars"] or 0),
            )
            for row in rows
        ]

    # -- operating ------------------------------------------------------------------------

    async def get(self, record_id: int) -> Record | None:
        """One record, or None."""
        rows = await self.db.fetch(self._sql["get"], {"id": record_id})
        return Record.from_row(self.spec, rows[0]) if rows else None

    async def cancel(self, record_id: int) -> State | None:
        """Cancel a waiting record at once, or ask a processing one's holder to stop.

        Returns the record's state afterwards (canceled, or processing until its holder
        notices), or None when the record does not exist or has already finished.
        """
        rows = await self.db.fetch(self._sql["cancel"], {"id": record_id, "now": self._now()})
        if not rows:
            return None
        state = State(rows[0]["state"])
        if state is State.CANCELED:
            metrics.CANCELS.labels(self.spec.name).inc()
        return state

    async def requeue(self, record_id: int, *, process_after: datetime | None = None) -> bool:
        """Put a record that is not processing back in the queue with fresh counters."""
        rows = await self.db.fetch(
            self._sql["requeue"],
            {"id": record_id, "now": self._now(), "process_after": process_after},
        )
        if rows:
            await self.db.notify(self.spec.name)
        return bool(rows)

    async def reset_stalled(self) -> Resets:
        """Hand back records whose holder stopped heartbeating; fail those reset too often."""
        now = self._now()
        params = {
            "now": now,
            "cutoff": now - self.spec.stalled_after,
            "max_resets": self.spec.max_resets,
        }
        failed = await self.db.fetch(self._sql["fail_stalled"], params)
        reset = await self.db.fetch(self._sql["reset_stalled"], params)
        if reset:
            metrics.RESETS.labels(self.spec.name).inc(len(reset))
            await self.db.notify(self.spec.name)
        if failed:
            metrics.FAILURES.labels(self.spec.name).inc(len(failed))
        return Resets(sorted(int(r["id"]) for r in reset), sorted(int(r["id"]) for r in failed))

    async def counts(self) -> dict[State, int]:
        """How many records are in each state (every state present, zero or not)."""
        counts = dict.fromkeys(State, 0)
        for row in await self.db.fetch(self._sql["counts"]):
            counts[State(row["state"])] = int(row["n"])
        return counts

    async def oldest_queued_age(self) -> timedelta | None:
        """How long the longest-waiting eligible record has waited, or None when none waits."""
        rows = await self.db.fetch(self._sql["oldest_queued"])
        oldest = parse_time(rows[0]["oldest"]) if rows else None
        return None if oldest is None else max(self._now() - oldest, timedelta(0))

    async def delete_finished(
        self, *, logs_before: datetime, records_before: datetime | None
    ) -> int:
        """Drop logs of records finished before `logs_before`, records before `records_before`."""
        await self.db.fetch(
            self._sql["delete_logs_before"], {"queue": self.spec.name, "cutoff": logs_before}
        )
        if records_before is None:
            return 0
        await self.db.fetch(
            self._sql["delete_logs_before"], {"queue": self.spec.name, "cutoff": records_before}
        )
        rows = await self.db.fetch(self._sql["delete_finished_before"], {"cutoff": records_before})
        return len(rows)


__all__ = ["DEFAULT_LOG_LIMIT", "NUL_MARK", "SqlQueueStore", "cap_output", "storable"]
