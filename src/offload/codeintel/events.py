"""Usage events: code-navigation results, precise or search-based, as users got them.

Recording is a cheap append to codeintel_events; `codeintel.popularity` (popularity.py) folds
the events into weekly usage and the ranking the scheduler reads (ranking.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from offload.api.inputs import LONG_NAME_MAX, PRINTABLE
from offload.clock import Clock, SystemClock
from offload.db.base import Database


class ResultKind(StrEnum):
    """What a code-navigation request answered with; the values are codeintel_events.kind."""

    PRECISE = "precise"
    SEARCH = "search"


# Results one event may count: a client that saw more sends several events. The cap keeps
# one caller from outweighing every other repository's usage in a single request.
COUNT_MAX = 10_000
# Events per call (and per `POST /api/codeintel/events`).
BATCH_MAX = 1_000

_INSERT = (
    "INSERT INTO codeintel_events (repo_name, kind, count, occurred_at) "
    "VALUES (:repo_name, :kind, :count, :occurred_at)"
)


@dataclass(frozen=True)
class UsageEvent:
    """Results of one kind that a repository's users got from code navigation."""

    repo_name: str
    kind: ResultKind | str
    count: int = 1


def check(event: UsageEvent) -> UsageEvent:
    """`event` with its kind as a ResultKind; ValueError saying what is wrong otherwise."""
    if not event.repo_name or len(event.repo_name) > LONG_NAME_MAX:
        raise ValueError(
            f"usage event repository name must be 1 to {LONG_NAME_MAX} characters, "
            f"got {len(event.repo_name)}"
        )
    kinds = ", ".join(kind.value for kind in ResultKind)
    try:
        kind = ResultKind(event.kind)
    except ValueError:
        raise ValueError(
            f"usage event for {event.repo_name!r}: kind {event.kind!r} is not one of: {kinds}"
        ) from None
    if isinstance(event.count, bool) or not 1 <= event.count <= COUNT_MAX:
        raise ValueError(
            f"usage event for {event.repo_name!r}: count {event.count!r} is out of range; "
            f"send 1 to {COUNT_MAX} per event (split a larger count into several events)"
        )
    return UsageEvent(event.repo_name, kind, event.count)


class UsageEvents:
    """Appends usage events, stamped with the clock's time."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def record(self, repo_name: str, kind: ResultKind | str, count: int = 1) -> None:
        """Record `count` results of `kind` for a repository; ValueError if out of bounds."""
        await self.record_many([UsageEvent(repo_name, kind, count)])

    async def record_many(self, events: Sequence[UsageEvent]) -> None:
        """Record up to BATCH_MAX events in one transaction; none if any is refused."""
        if len(events) > BATCH_MAX:
            raise ValueError(
                f"{len(events)} usage events in one call; send at most {BATCH_MAX} at a time"
            )
        checked = [check(event) for event in events]
        if not checked:
            return
        now = self.clock.now()
        await self.db.executemany(
            _INSERT,
            [
                {
                    "repo_name": e.repo_name,
                    "kind": str(e.kind),
                    "count": e.count,
                    "occurred_at": now,
                }
                for e in checked
            ],
        )


class EventIn(BaseModel):
    """One event as `POST /api/codeintel/events` takes it."""

    model_config = ConfigDict(extra="forbid")

    repository: str = Field(min_length=1, max_length=LONG_NAME_MAX, pattern=PRINTABLE)
    kind: ResultKind
    count: int = Field(1, ge=1, le=COUNT_MAX, strict=True)


class EventsRequest(BaseModel):
    """The body of `POST /api/codeintel/events`: 1 to BATCH_MAX events."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=BATCH_MAX)

    def usage_events(self) -> list[UsageEvent]:
        """The events, ready for UsageEvents.record_many()."""
        return [UsageEvent(e.repository, e.kind, e.count) for e in self.events]


__all__ = [
    "BATCH_MAX",
    "COUNT_MAX",
    "EventIn",
    "EventsRequest",
    "ResultKind",
    "UsageEvent",
    "UsageEvents",
    "check",
]
