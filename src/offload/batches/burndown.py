"""A batch change's burndown: how many of its changesets existed, were open, merged and closed
at each of a few moments from its creation until now.

One aggregate over the changesets' four times (changesets.STATE_TIMES keeps them), not a
history table: the chart of 45,000 changesets is one scan of their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from offload.db.base import Database

# The lines of the chart, in the order a legend lists them.
SERIES = ("total", "open", "merged", "closed")
POINTS = 24

# A changeset from before its times were kept counts from its last update.
_CREATED = "COALESCE(created_at, updated_at)"
_CONDITIONS = {
    "total": f"{_CREATED} <= :t{{i}}",
    "open": "published_at <= :t{i} AND (merged_at IS NULL OR merged_at > :t{i}) "
    "AND (closed_at IS NULL OR closed_at > :t{i})",
    "merged": "merged_at <= :t{i}",
    "closed": "closed_at <= :t{i}",
}


@dataclass(frozen=True)
class Burndown:
    """Counts per series at each moment of `times`."""

    times: list[datetime]
    series: dict[str, list[int]]


def moments(start: datetime, end: datetime, points: int = POINTS) -> list[datetime]:
    """`points` moments from `start` to `end`, evenly spaced, `end` last."""
    if end <= start:
        return [end]
    step = (end - start) / (points - 1)
    return [start + step * i for i in range(points - 1)] + [end]


async def burndown(
    db: Database, change_id: int, start: datetime, end: datetime, points: int = POINTS
) -> Burndown:
    """The burndown of batch change `change_id` between `start` and `end`."""
    times = moments(start - timedelta(seconds=1), end, points)
    sums = [
        f"SUM(CASE WHEN {_CONDITIONS[name].format(i=i)} THEN 1 ELSE 0 END) AS {name}_{i}"
        for i in range(len(times))
        for name in SERIES
    ]
    rows = await db.fetch(
        f"SELECT {', '.join(sums)} FROM changesets "
        "WHERE batch_change_id = :change AND NOT detached",
        {"change": change_id, **{f"t{i}": t for i, t in enumerate(times)}},
    )
    row = rows[0]
    return Burndown(
        times=times,
        series={name: [int(row[f"{name}_{i}"] or 0) for i in range(len(times))] for name in SERIES},
    )
