"""The order in which the scheduler takes repositories to index, and the ranking page's list.

Only repositories in `repos` with a head commit (synced at least once) are ranked; their usage
comes from codeintel_ranking (popularity.py), their last queueing from codeintel_repo_status.
The order, first key first:

1. never queued before (last_queued_at NULL) first, then the longest since last queued;
2. more results last week (precise_week + search_week) first;
3. a lower precise ratio, precise_week / (precise_week + search_week), first: the repository
   whose users get search-based results most has the most to gain from an index; with no
   usage the ratio counts as 1;
4. repository name.

`candidates()` also leaves out repositories queued within the minimum interval; `ranking()`
lists them all, in the same order, a page at a time.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from offload.db.base import Database, Row
from offload.db.values import parse_time

# Within one total, a lower ratio is exactly a lower precise_week (and with a total of 0 both
# are constant), so the SQL orders by integers: no float to compare or carry in a cursor.
_RANKED = """
SELECT * FROM (
  SELECT r.name AS repo_name, r.head_commit, r.default_branch,
    COALESCE(k.precise_week, 0) AS precise_week,
    COALESCE(k.search_week, 0) AS search_week,
    s.last_queued_at,
    CASE WHEN s.last_queued_at IS NULL THEN 0 ELSE 1 END AS queued,
    -(COALESCE(k.precise_week, 0) + COALESCE(k.search_week, 0)) AS neg_total
  FROM repos r
  LEFT JOIN codeintel_ranking k ON k.repo_name = r.name
  LEFT JOIN codeintel_repo_status s ON s.repo_name = r.name
  WHERE r.head_commit IS NOT NULL
) ranked
WHERE {where}
ORDER BY queued, last_queued_at, neg_total, precise_week, repo_name
LIMIT :limit
"""
_DUE = "(last_queued_at IS NULL OR last_queued_at <= :cutoff)"
# After the cursor's row in the order above (ascending on every key).
_AFTER = """(queued > :queued OR (queued = :queued AND (
  (queued = 1 AND last_queued_at > :last_queued_at)
  OR ((queued = 0 OR last_queued_at = :last_queued_at) AND (
    neg_total > :neg_total OR (neg_total = :neg_total AND (
      precise_week > :precise_week
      OR (precise_week = :precise_week AND repo_name > :repo_name))))))))"""
PAGE_MAX = 1000


class BadCursor(ValueError):
    """A ranking page cursor that this server did not hand out."""


@dataclass(frozen=True)
class Candidate:
    """A repository the scheduler may index next, with what placed it there."""

    repo_name: str
    head_commit: str
    default_branch: str | None
    precise_week: int
    search_week: int
    last_queued_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> Candidate:
        """A candidate from a row of the ranking query."""
        return cls(
            repo_name=row["repo_name"],
            head_commit=row["head_commit"],
            default_branch=row["default_branch"],
            precise_week=int(row["precise_week"]),
            search_week=int(row["search_week"]),
            last_queued_at=parse_time(row["last_queued_at"]),
        )


@dataclass(frozen=True)
class Ranked:
    """A repository's place in the ranking (1 is taken first) and what placed it there."""

    position: int
    repo_name: str
    head_commit: str
    default_branch: str | None
    precise_week: int
    search_week: int
    last_queued_at: datetime | None

    @property
    def total(self) -> int:
        """Code-navigation results last week, precise and search-based."""
        return self.precise_week + self.search_week

    @property
    def precise_ratio(self) -> float:
        """The share of last week's results that were precise; 1 with no results."""
        return self.precise_week / self.total if self.total else 1.0


@dataclass(frozen=True)
class RankingPage:
    """One page of the ranking; `next` is the cursor of the following page, if any."""

    rows: list[Ranked]
    next: str | None


async def candidates(
    db: Database, *, now: datetime, limit: int, min_interval: timedelta
) -> list[Candidate]:
    """Up to `limit` repositories in ranking order, leaving out those queued in the last
    `min_interval` before `now`."""
    if limit < 1:
        raise ValueError(f"candidates limit must be at least 1, got {limit}")
    sql = _RANKED.format(where=_DUE)
    rows = await db.fetch(sql, {"cutoff": now - min_interval, "limit": limit})
    return [Candidate.from_row(row) for row in rows]


async def ranking(db: Database, limit: int, after: str | None = None) -> RankingPage:
    """Up to `limit` repositories in ranking order, after the row of cursor `after`."""
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"ranking page size must be 1 to {PAGE_MAX}, got {limit}")
    position, params, where = 0, {"limit": limit + 1}, "1 = 1"
    if after:
        position, key = _decode(after)
        params.update(key)
        where = _AFTER
    rows = await db.fetch(_RANKED.format(where=where), params)
    page = [
        Ranked(position=position + n, **vars(Candidate.from_row(row)))
        for n, row in enumerate(rows[:limit], start=1)
    ]
    more = len(rows) > limit
    return RankingPage(page, _encode(page[-1]) if more else None)


def _encode(row: Ranked) -> str:
    queued_at = row.last_queued_at.isoformat() if row.last_queued_at else None
    key = [row.position, queued_at, row.total, row.precise_week, row.repo_name]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, dict[str, Any]]:
    """The position and sort key a cursor carries; BadCursor if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position, queued_at, total, precise, repo_name = json.loads(raw)
        last_queued_at = parse_time(queued_at)
        if not (
            isinstance(position, int)
            and isinstance(total, int)
            and isinstance(precise, int)
            and isinstance(repo_name, str)
        ):
            raise TypeError(cursor)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise BadCursor(
            f"ranking cursor {cursor[:40]!r} is not one this server gave out; "
            "start again from the first page"
        ) from exc
    key = {
        "queued": 0 if last_queued_at is None else 1,
        "last_queued_at": last_queued_at,
        "neg_total": -total,
        "precise_week": precise,
        "repo_name": repo_name,
    }
    return position, key


__all__ = ["PAGE_MAX", "BadCursor", "Candidate", "Ranked", "RankingPage", "candidates", "ranking"]
