"""Usage events, the `codeintel.popularity` job and the order the scheduler takes repositories
in: real mirrored repositories, events recorded through UsageEvents, the job run once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleet import make_repo
from pydantic import ValidationError

from offload.codeintel import popularity
from offload.codeintel.events import EventsRequest, UsageEvent, UsageEvents
from offload.codeintel.popularity import PopularityUpdater
from offload.codeintel.ranking import BadCursor, candidates, ranking
from offload.config import Settings
from offload.db.base import Database
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer
from offload.testing import FakeClock
from offload.worker.job import WorkerContext

# A Wednesday: this week started on Monday 2026-03-09, the previous one on 2026-03-02.
NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MIN_INTERVAL = timedelta(hours=24)


async def mirrored(db: Database, tmp_path: Path, *names: str) -> None:
    """Repositories made by the test, registered and mirrored, so each has a head commit."""
    syncer = Syncer(RepoRegistry(db), Mirrors.in_data_dir(tmp_path / "data"))
    for name in names:
        make_repo(tmp_path / "src" / name, {"README.md": f"{name}\n"})
        await syncer.add(str(tmp_path / "src" / name), name=name)


async def queued_at(db: Database, repo_name: str, moment: datetime) -> None:
    """What the scheduler writes when it queues a repository's index jobs."""
    await db.fetch(
        "INSERT INTO codeintel_repo_status (repo_name, last_queued_at) VALUES (:r, :t)",
        {"r": repo_name, "t": moment},
    )


async def run_job_once(db: Database, clock: FakeClock, tmp_path: Path) -> None:
    """Build `codeintel.popularity` as the worker does and let it make exactly one pass."""
    passed = asyncio.Event()

    async def sleep(seconds: float) -> None:
        passed.set()
        await asyncio.sleep(3600)

    settings = Settings(data_dir=tmp_path / "data")
    (routine,) = popularity.build(WorkerContext(db, settings, clock=clock, sleep=sleep))
    assert routine.name == "codeintel.popularity"
    running = asyncio.create_task(routine.run())
    await asyncio.wait_for(passed.wait(), 20)
    routine.stop(1.0)
    await asyncio.wait_for(running, 5)


async def count(db: Database, table: str) -> int:
    rows = await db.fetch(f"SELECT COUNT(*) AS n FROM {table}")
    return int(rows[0]["n"])


async def test_ranking_orders_by_last_queued_then_usage_then_precise_ratio(
    db: Database, tmp_path: Path
) -> None:
    await mirrored(db, tmp_path, "alpha", "beta", "gamma", "delta")
    await RepoRegistry(db).add(str(tmp_path / "src" / "alpha"), name="unsynced")
    clock = FakeClock(NOW - DAY)
    events = UsageEvents(db, clock)
    # alpha and beta: 40 results each, alpha mostly precise, beta mostly search-based.
    await events.record_many(
        [
            UsageEvent("alpha", "precise", 30),
            UsageEvent("alpha", "search", 10),
            UsageEvent("beta", "precise", 5),
            UsageEvent("beta", "search", 35),
            UsageEvent("gamma", "precise", 2),
        ]
    )
    await events.record("gamma", "search", 3)
    await events.record("gamma", "search")
    await events.record("gamma", "search", 1)
    clock.advance(DAY)

    await run_job_once(db, clock, tmp_path)

    assert await count(db, "codeintel_events") == 0
    page = await ranking(db, 10)
    assert [(r.position, r.repo_name, r.precise_week, r.search_week) for r in page.rows] == [
        (1, "beta", 5, 35),
        (2, "alpha", 30, 10),
        (3, "gamma", 2, 5),
        (4, "delta", 0, 0),
    ]
    assert [r.precise_ratio for r in page.rows] == [0.125, 0.75, 2 / 7, 1.0]
    assert page.next is None
    due = await candidates(db, now=clock.now(), limit=10, min_interval=MIN_INTERVAL)
    assert [c.repo_name for c in due] == ["beta", "alpha", "gamma", "delta"]
    assert due[0].head_commit and len(due[0].head_commit) == 40
    assert due[0].default_branch == "main"

    # The scheduler queued beta an hour ago, alpha 3 days ago, gamma 2 days ago; delta never.
    await queued_at(db, "beta", clock.now() - timedelta(hours=1))
    await queued_at(db, "alpha", clock.now() - 3 * DAY)
    await queued_at(db, "gamma", clock.now() - 2 * DAY)

    due = await candidates(db, now=clock.now(), limit=10, min_interval=MIN_INTERVAL)
    assert [(c.repo_name, c.last_queued_at) for c in due] == [
        ("delta", None),
        ("alpha", clock.now() - 3 * DAY),
        ("gamma", clock.now() - 2 * DAY),
    ]
    assert [
        c.repo_name
        for c in await candidates(db, now=clock.now(), limit=2, min_interval=MIN_INTERVAL)
    ] == ["delta", "alpha"]
    # Past the minimum interval beta is due again, last: it was queued most recently.
    later = clock.now() + MIN_INTERVAL
    due = await candidates(db, now=later, limit=10, min_interval=MIN_INTERVAL)
    assert [c.repo_name for c in due] == ["delta", "alpha", "gamma", "beta"]

    # The ranking lists beta too, a page at a time, in the same order.
    first = await ranking(db, 3)
    assert [(r.position, r.repo_name) for r in first.rows] == [
        (1, "delta"),
        (2, "alpha"),
        (3, "gamma"),
    ]
    assert first.next is not None
    second = await ranking(db, 3, after=first.next)
    assert [(r.position, r.repo_name) for r in second.rows] == [(4, "beta")]
    assert second.next is None
    with pytest.raises(BadCursor, match="start again from the first page"):
        await ranking(db, 3, after="not-a-cursor")


async def test_ties_in_usage_page_through_by_name(db: Database, tmp_path: Path) -> None:
    await mirrored(db, tmp_path, "c", "a", "b")
    clock = FakeClock(NOW)
    for name in ("a", "b", "c"):
        await queued_at(db, name, NOW - 2 * DAY)
    one = await ranking(db, 1)
    two = await ranking(db, 1, after=one.next)
    three = await ranking(db, 1, after=two.next)
    assert [p.rows[0].repo_name for p in (one, two, three)] == ["a", "b", "c"]
    assert three.next is None
    due = await candidates(db, now=clock.now(), limit=10, min_interval=MIN_INTERVAL)
    assert [c.repo_name for c in due] == ["a", "b", "c"]


async def test_ranking_counts_this_week_and_the_previous_one(db: Database, tmp_path: Path) -> None:
    await mirrored(db, tmp_path, "alpha")
    previous_monday = datetime(2026, 3, 2, tzinfo=UTC)
    moments = {
        # (when, precise count): counted are the previous week and this one.
        previous_monday - timedelta(microseconds=1): 1,  # Sunday before: not counted
        previous_monday: 10,
        previous_monday + 6 * DAY + timedelta(hours=23): 100,  # Sunday 23:00: counted
        NOW - timedelta(hours=1): 1000,
        previous_monday - 2 * 7 * DAY: 5,  # three weeks ago: kept, not counted
        previous_monday - 8 * 7 * DAY: 7,  # nine weeks before this week: expired
    }
    for moment, n in moments.items():
        await UsageEvents(db, FakeClock(moment)).record("alpha", "precise", n)
    clock = FakeClock(NOW)

    updater = PopularityUpdater(db, clock)
    assert await updater.fold() == len(moments)
    assert await updater.rank() == 1

    (row,) = (await ranking(db, 10)).rows
    assert (row.repo_name, row.precise_week, row.search_week) == ("alpha", 1110, 0)
    usage = await db.fetch("SELECT week_start, precise FROM codeintel_usage ORDER BY week_start")
    weeks = [(str(r["week_start"])[:10], int(r["precise"])) for r in usage]
    assert weeks == [
        ("2026-02-16", 5),
        ("2026-02-23", 1),
        ("2026-03-02", 110),
        ("2026-03-09", 1000),
    ]

    # A week later only this week's 1000 (now the previous week) still counts.
    clock.advance(7 * DAY)
    await updater.update()
    (row,) = (await ranking(db, 10)).rows
    assert row.precise_week == 1000


async def test_bad_events_are_refused_with_their_reason(db: Database) -> None:
    events = UsageEvents(db, FakeClock(NOW))
    with pytest.raises(ValueError, match=r"kind 'hover' is not one of: precise, search"):
        await events.record("alpha", "hover")
    with pytest.raises(ValueError, match=r"count 0 is out of range; send 1 to 10000"):
        await events.record("alpha", "precise", 0)
    with pytest.raises(ValueError, match=r"count 10001 is out of range"):
        await events.record("alpha", "search", 10_001)
    with pytest.raises(ValueError, match="repository name must be 1 to 255 characters"):
        await events.record("", "search")
    with pytest.raises(ValueError, match="1001 usage events in one call; send at most 1000"):
        await events.record_many([UsageEvent("alpha", "precise")] * 1001)
    # One bad event refuses its whole batch.
    with pytest.raises(ValueError, match="'beta': kind 'Precise'"):
        await events.record_many([UsageEvent("alpha", "precise"), UsageEvent("beta", "Precise")])
    assert await count(db, "codeintel_events") == 0

    await events.record_many([UsageEvent("alpha", "precise")] * 1000)
    assert await count(db, "codeintel_events") == 1000

    body = {"events": [{"repository": "alpha", "kind": "search", "count": 3}]}
    assert EventsRequest.model_validate(body).usage_events() == [UsageEvent("alpha", "search", 3)]
    refused = {
        "events.0.kind": {"events": [{"repository": "alpha", "kind": "hover"}]},
        "events.0.count": {"events": [{"repository": "alpha", "kind": "search", "count": 10_001}]},
        "events.0.repository": {"events": [{"repository": "a\nb", "kind": "search"}]},
        "events.0.repo\n  Extra inputs": {
            "events": [{"repository": "alpha", "kind": "search", "repo": "x"}]
        },
        "events\n  List should have at most 1000 items": {
            "events": [{"repository": "alpha", "kind": "search"}] * 1001
        },
    }
    for where, bad in refused.items():
        with pytest.raises(ValidationError) as caught:
            EventsRequest.model_validate(bad)
        assert where in str(caught.value), str(caught.value)
    with pytest.raises(ValidationError, match="at least 1 item"):
        EventsRequest.model_validate({"events": []})


async def test_events_appended_while_folding_are_all_counted(db: Database) -> None:
    clock = FakeClock(NOW)
    events = UsageEvents(db, clock)
    updater = PopularityUpdater(db, clock)
    appended = 300

    async def append() -> None:
        for n in range(appended):
            await events.record("alpha", "precise" if n % 3 else "search")

    async def fold_repeatedly(done: asyncio.Task[None]) -> None:
        while not done.done():
            await updater.fold()

    appending = asyncio.create_task(append())
    await asyncio.gather(appending, fold_repeatedly(appending))
    await updater.update()

    assert await count(db, "codeintel_events") == 0
    (row,) = await db.fetch("SELECT precise, search FROM codeintel_usage")
    assert (int(row["precise"]), int(row["search"])) == (200, 100)


# PostgreSQL only: SQLite takes one writer at a time, so no insert can be pending there.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_an_event_committed_late_with_a_lower_id_waits_for_the_next_fold(
    db: Database,
) -> None:
    clock = FakeClock(NOW)
    updater = PopularityUpdater(db, clock)
    async with db.transaction() as pending:
        # This insert takes its id first but commits after the fold below has run.
        await pending.fetch(
            "INSERT INTO codeintel_events (repo_name, kind, count, occurred_at) "
            "VALUES ('alpha', 'search', 7, :t)",
            {"t": NOW},
        )
        await UsageEvents(db, clock).record("alpha", "precise", 2)
        assert await updater.fold() == 1
    assert await count(db, "codeintel_events") == 1
    assert await updater.fold() == 1
    await updater.rank()
    (usage,) = await db.fetch("SELECT precise, search FROM codeintel_usage")
    assert (int(usage["precise"]), int(usage["search"])) == (2, 7)
    (ranked,) = await db.fetch("SELECT precise_week, search_week FROM codeintel_ranking")
    assert (int(ranked["precise_week"]), int(ranked["search_week"])) == (2, 7)
