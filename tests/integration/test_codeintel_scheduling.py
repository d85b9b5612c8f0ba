"""Which index jobs a repository gets and when: configuration over `sourcegraph.yaml` over
inference (acceptance b), and the scheduler's order, minimum interval and manual requests
(acceptance c). Real mirrored git repositories, the real scheduler and queue, both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleet import git, make_repo

from offload.codeintel.config import ConfigErrors
from offload.codeintel.events import UsageEvent, UsageEvents
from offload.codeintel.popularity import PopularityUpdater
from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.codeintel.scheduler import Scheduler
from offload.codeintel.service import IndexService
from offload.db.base import Database
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer
from offload.testing import FakeClock

NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
MIN_INTERVAL = timedelta(hours=24)
PYTHON = {"pyproject.toml": '[project]\nname = "shapes"\nversion = "1.2.0"\n', "shapes/a.py": ""}
YAML = """index_jobs:
  - root: tools
    indexer: sourcegraph/scip-go
    indexer_args: [scip-go, --no-animation]
"""
EXPLICIT = """index_jobs:
  - root: web
    indexer: sourcegraph/scip-typescript
    indexer_args: [scip-typescript, index]
"""
# `indexer_args` must be a list: line 3, column 19 is where the string starts.
BROKEN = """index_jobs:
  - indexer: sourcegraph/scip-go
    indexer_args: scip-go
"""


class Site:
    """Repositories made by the test, mirrored, and the index service over them."""

    def __init__(self, db: Database, tmp_path: Path, clock: FakeClock) -> None:
        self.db = db
        self.tmp = tmp_path
        self.clock = clock
        self.registry = RepoRegistry(db, clock=clock)
        self.mirrors = Mirrors.in_data_dir(tmp_path / "data")
        self.syncer = Syncer(self.registry, self.mirrors)
        self.service = IndexService(db, self.registry, self.mirrors, clock=clock)

    async def repo(self, name: str, files: dict[str, str]) -> Path:
        source = self.tmp / "src" / name
        make_repo(source, files)
        await self.syncer.add(str(source), name=name)
        return source

    async def commit(self, name: str, files: dict[str, str | None]) -> None:
        """A new commit on `name`'s main branch (None deletes the file), then a sync."""
        source = self.tmp / "src" / name
        for path, content in files.items():
            if content is None:
                git("rm", "-q", path, cwd=source)
            else:
                (source / path).parent.mkdir(parents=True, exist_ok=True)
                (source / path).write_text(content)
                git("add", path, cwd=source)
        git("commit", "-q", "-m", "change", cwd=source)
        await self.syncer.sync(await self.registry.require(name))

    def scheduler(self, batch_size: int) -> Scheduler:
        return Scheduler(
            self.service, batch_size=batch_size, min_interval=MIN_INTERVAL, clock=self.clock
        )

    async def jobs(self) -> list[tuple[str, str, str, int]]:
        """Every index job as (repository, root, indexer, priority), in queue-id order."""
        rows = await self.db.fetch(
            "SELECT repo_name, root, indexer, priority FROM codeintel_index_jobs ORDER BY id"
        )
        return [(r["repo_name"], r["root"], r["indexer"], int(r["priority"])) for r in rows]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def site(db: Database, tmp_path: Path, clock: FakeClock) -> Site:
    return Site(db, tmp_path, clock)


async def test_configuration_beats_sourcegraph_yaml_which_beats_inference(site: Site) -> None:
    await site.repo("acme/api", {**PYTHON, "sourcegraph.yaml": YAML})
    done = await site.service.queue("acme/api", manual=True)
    assert done.source == "sourcegraph.yaml"
    assert [(j.root, j.indexer) for j in done.jobs] == [("tools", "scip-go")]

    await site.service.set_config("acme/api", EXPLICIT, by="admin")
    done = await site.service.queue("acme/api", manual=True)
    assert done.source == "configuration"
    assert [(j.root, j.indexer, j.outcome) for j in done.jobs] == [
        ("web", "scip-typescript", "queued")
    ]

    # Without the stored configuration and the file, the tree decides.
    assert await site.service.delete_config("acme/api")
    await site.commit("acme/api", {"sourcegraph.yaml": None})
    done = await site.service.queue("acme/api", manual=True)
    assert done.source == "inferred"
    assert [(j.root, j.indexer) for j in done.jobs] == [("", "scip-python")]
    queued = await site.service.index_jobs(repo="acme/api")
    assert queued[0].job["indexer_args"] == [
        "scip-python", "index", ".", "--project-name", "shapes", "--project-version", "1.2.0"
    ]  # fmt: skip


async def test_an_invalid_sourcegraph_yaml_is_on_the_status_with_line_and_column(
    site: Site,
) -> None:
    await site.repo("acme/broken", {**PYTHON, "sourcegraph.yaml": BROKEN})
    result = await site.scheduler(batch_size=10).run_once()
    (done,) = result.queued
    # The file wins even when broken: nothing is inferred in its place.
    assert (done.source, done.jobs) == ("sourcegraph.yaml", ())
    assert await site.jobs() == []
    status = await site.service.status("acme/broken")
    assert status is not None and status.source == "sourcegraph.yaml"
    ((error),) = status.errors
    assert (error["file"], error["line"], error["column"]) == ("sourcegraph.yaml", 3, 19)
    assert "indexer_args" in error["path"] and "list" in error["message"]
    # A stored configuration is checked before it is kept, with the same words.
    with pytest.raises(ConfigErrors) as refused:
        await site.service.set_config("acme/broken", BROKEN, by="admin")
    assert str(refused.value.errors[0]).startswith("3:19: ")
    assert await site.service.config("acme/broken") is None


async def test_the_scheduler_takes_repositories_in_ranking_order(
    db: Database, site: Site, clock: FakeClock
) -> None:
    for name in ("busy", "quiet", "searched"):
        await site.repo(name, PYTHON)
    events = UsageEvents(db, clock)
    await events.record_many(
        [
            # busy: 100 results, all precise; searched: 60, mostly search-based; quiet: none.
            UsageEvent("busy", "precise", 100),
            UsageEvent("searched", "precise", 10),
            UsageEvent("searched", "search", 50),
        ]
    )
    await PopularityUpdater(db, clock).update()
    scheduler = site.scheduler(batch_size=2)

    first = await scheduler.run_once()
    assert [q.repo for q in first.queued] == ["busy", "searched"]
    second = await scheduler.run_once()
    assert [q.repo for q in second.queued] == ["quiet"]
    # Every repository was looked at within the minimum interval: nothing is due.
    clock.advance(MIN_INTERVAL - timedelta(minutes=1))
    assert (await scheduler.run_once()).queued == ()
    assert await site.jobs() == [
        ("busy", "", "scip-python", 1),
        ("searched", "", "scip-python", 1),
        ("quiet", "", "scip-python", 1),
    ]
    # Past it, they are looked at again, oldest first; what is queued stays queued once.
    clock.advance(timedelta(minutes=2))
    again = await site.scheduler(batch_size=10).run_once()
    assert [q.repo for q in again.queued] == ["busy", "searched", "quiet"]
    assert {j.outcome for q in again.queued for j in q.jobs} == {"already queued"}
    assert len(await site.jobs()) == 3


async def test_a_manual_index_jumps_the_queue(db: Database, site: Site, clock: FakeClock) -> None:
    for name in ("alpha", "beta", "gamma"):
        await site.repo(name, PYTHON)
    scheduled = await site.scheduler(batch_size=2).run_once()
    assert [q.repo for q in scheduled.queued] == ["alpha", "beta"]
    done = await site.service.queue("gamma", manual=True, requested_by="olive")
    assert [j.outcome for j in done.jobs] == ["queued"]
    # Asked for again while it waits: moved ahead, not queued twice.
    moved = await site.service.queue("beta", manual=True, requested_by="olive")
    assert [j.outcome for j in moved.jobs] == ["moved ahead"]
    store = SqlQueueStore(db, INDEX_JOBS, clock=clock)
    records = [(await store.dequeue("executor-1"))[0] for _ in range(3)]
    assert [r.fields["repo_name"] for r in records] == ["beta", "gamma", "alpha"]
    # A running job is left alone; a completed one is indexed again only when asked for.
    running = await site.service.queue("alpha", manual=True)
    assert [j.outcome for j in running.jobs] == ["running"]
    await store.mark_complete(records[2].lease)
    clock.advance(MIN_INTERVAL * 2)
    again = await site.scheduler(batch_size=10).run_once()
    assert [j.outcome for q in again.queued for j in q.jobs if q.repo == "alpha"] == [
        "already indexed"
    ]
    forced = await site.service.queue("alpha", manual=True)
    assert [j.outcome for j in forced.jobs] == ["queued"]
