"""`codeintel.popularity`: folds usage events into weekly usage, then recomputes the ranking.

Each pass, every OFFLOAD_CODEINTEL_POPULARITY_INTERVAL:
1. Events are taken out of codeintel_events and added to codeintel_usage, one row per
   repository and week (weeks start on Monday 00:00 UTC of the event's time). Taking and
   adding happen in one transaction, so an event counts once even if the pass dies midway.
2. codeintel_ranking is rebuilt: for each repository with usage in the *ranking window*,
   precise_week and search_week are the sums of its usage rows whose week started on or after
   the Monday of the week that holds `now - 7 days`. That is the current week plus the whole
   previous one: between 7 and 14 days of results, never a partial last-7-days estimate, so
   a repository does not lose its usage on Monday morning.
3. Usage rows of weeks that started more than 8 weeks before the current week's Monday go.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from offload.clock import Clock, SystemClock
from offload.codeintel.events import ResultKind
from offload.db.base import Database, Row, Transaction
from offload.db.values import parse_time
from offload.worker.routine import Periodic, Routine

if TYPE_CHECKING:
    from offload.worker.job import WorkerContext

log = logging.getLogger(__name__)

NAME = "codeintel.popularity"
# Events per transaction: a backlog is folded in steps that never hold the database long.
FOLD_BATCH = 10_000
# Usage weeks kept before the current one (the ranking reads two; the rest is history).
USAGE_WEEKS_KEPT = 8
WEEK = timedelta(days=7)
KINDS = frozenset(kind.value for kind in ResultKind)

# One statement deletes the events and returns them, so exactly the events returned are the
# ones removed. A read followed by "delete id <= max id read" would lose an event whose
# lower id committed between the two statements (PostgreSQL hands out ids at insert, not at
# commit); here such an event is invisible to the delete and waits for the next pass.
_TAKE = """
DELETE FROM codeintel_events WHERE id IN (
  SELECT id FROM codeintel_events ORDER BY id LIMIT :limit)
RETURNING repo_name, kind, count, occurred_at
"""
_ADD_USAGE = """
INSERT INTO codeintel_usage (repo_name, week_start, precise, search)
VALUES (:repo_name, :week_start, :precise, :search)
ON CONFLICT (repo_name, week_start) DO UPDATE SET
  precise = codeintel_usage.precise + excluded.precise,
  search = codeintel_usage.search + excluded.search
"""
_CLEAR_RANKING = "DELETE FROM codeintel_ranking"
# {now}: the bound time, cast on PostgreSQL (an untyped parameter in a SELECT list is text).
_RANK = """
INSERT INTO codeintel_ranking (repo_name, precise_week, search_week, updated_at)
SELECT repo_name, SUM(precise), SUM(search), {now}
FROM codeintel_usage WHERE week_start >= :since
GROUP BY repo_name
"""
_EXPIRE_USAGE = "DELETE FROM codeintel_usage WHERE week_start < :before"


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of the week that holds `moment`."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def ranking_since(now: datetime) -> datetime:
    """The first week the ranking counts at `now`: the one that holds `now - 7 days`."""
    return week_start(now - WEEK)


class PopularityUpdater:
    """Folds usage events into weekly usage and rebuilds the ranking from it."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def fold(self) -> int:
        """Move every event into codeintel_usage; how many events were folded."""
        folded = 0
        while True:
            async with self.db.transaction() as tx:
                rows = await tx.fetch(_TAKE, {"limit": FOLD_BATCH})
                await _add_usage(tx, rows)
            folded += len(rows)
            if len(rows) < FOLD_BATCH:
                return folded

    async def rank(self) -> int:
        """Rebuild codeintel_ranking and drop usage past retention; how many repositories."""
        now = self.clock.now()
        cast = "CAST(:now AS TIMESTAMPTZ)" if self.db.dialect == "postgresql" else ":now"
        async with self.db.transaction() as tx:
            await tx.fetch(_CLEAR_RANKING)
            await tx.fetch(_RANK.format(now=cast), {"now": now, "since": ranking_since(now)})
            ranked = await tx.fetch("SELECT COUNT(*) AS n FROM codeintel_ranking")
            before = week_start(now) - USAGE_WEEKS_KEPT * WEEK
            await tx.fetch(_EXPIRE_USAGE, {"before": before})
        return int(ranked[0]["n"])

    async def update(self) -> None:
        """One pass: fold, then rank."""
        folded = await self.fold()
        ranked = await self.rank()
        if folded:
            log.info("folded %d usage events; %d repositories ranked", folded, ranked)


async def _add_usage(tx: Transaction, events: list[Row]) -> None:
    """Add events to their repository's week, one upsert per repository and week."""
    weeks: dict[tuple[str, datetime], dict[str, int]] = defaultdict(
        lambda: {ResultKind.PRECISE: 0, ResultKind.SEARCH: 0}
    )
    for event in events:
        occurred = parse_time(event["occurred_at"])
        assert occurred is not None  # the column is NOT NULL
        if event["kind"] not in KINDS:
            # Only UsageEvents writes events, and it checks kinds; a row written by hand must
            # not wedge every later pass on the same failing transaction.
            log.warning("dropped a usage event of unknown kind %r", event["kind"])
            continue
        counts = weeks[(event["repo_name"], week_start(occurred))]
        counts[ResultKind(event["kind"])] += int(event["count"])
    for (repo_name, week), counts in weeks.items():
        await tx.fetch(
            _ADD_USAGE,
            {
                "repo_name": repo_name,
                "week_start": week,
                "precise": counts[ResultKind.PRECISE],
                "search": counts[ResultKind.SEARCH],
            },
        )


def build(context: WorkerContext) -> list[Routine]:
    """One pass every OFFLOAD_CODEINTEL_POPULARITY_INTERVAL."""
    updater = PopularityUpdater(context.db, clock=context.clock)
    return [
        Periodic(
            NAME,
            context.settings.codeintel_popularity_interval,
            updater.update,
            sleep=context.sleep,
        )
    ]


__all__ = [
    "NAME",
    "PopularityUpdater",
    "build",
    "ranking_since",
    "week_start",
]
