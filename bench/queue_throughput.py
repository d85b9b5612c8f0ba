"""Throughput and latency of offload's record queue, side by side with procrastinate and pgqueuer.

The workload is no-op jobs. For each system, in a fresh database of its own:

1. enqueue ``--jobs`` jobs in bulk (``--enqueue-batch`` per call) and time it: the enqueue rate;
2. start ``--consumers`` concurrent consumers and time how long they take to drain the queue,
   up to the moment the database shows every job finished: the drain throughput;
3. with one idle consumer waiting, enqueue single jobs one at a time (``--samples`` of them,
   ``--gap`` apart) and time each from just before the enqueue call to the moment the consumer's
   handler has the job in hand: the enqueue-to-start latency (p50 and p99).

offload runs through its real consumer loop (``offload.queue.consumer.Consumer``) on
PostgreSQL and on SQLite (a temporary file), with the producer on connections of its own, as an
API server in another process would be. procrastinate and pgqueuer run on the same PostgreSQL
server in the same run, set up as their documentation and their own benchmarks do:
procrastinate's worker with ``concurrency`` equal to ``--consumers`` on a psycopg pool, and
pgqueuer's QueueManager on an asyncpg connection. After the bulk enqueue every database is
ANALYZEd (outside the timings), as autovacuum would have done in a long-running deployment.

"8 concurrent consumers" is measured in two layouts where the system has both:

* one consumer running 8 jobs at a time (offload: one Consumer with 8 slots, which leases up
  to its free slots in one statement; pgqueuer: one QueueManager with batch_size 4 and
  max_concurrent_tasks 8, the closest pgqueuer allows to 8 jobs in flight; procrastinate: one
  worker with concurrency 8). This layout also serves the latency step.
* 8 separate consumers (offload: 8 Consumers with one slot each, sharing one connection pool;
  pgqueuer: 8 QueueManagers on a connection each, with its default batch_size of 10 and no
  cap, the layout of pgqueuer's own drain benchmark).

Each step is repeated ``--runs`` times (the order of systems rotates between runs) and the
medians are reported, with offload/peer ratios and the acceptance targets:

* drain throughput on PostgreSQL >= 1.0x pgqueuer and >= 3x procrastinate (offload's best
  layout against each peer's best layout);
* enqueue-to-start p50 <= 10 ms (offload on PostgreSQL; the SQLite figures are shown against
  the same goal for information).

Results go to ``bench/results/queue_throughput-<UTC timestamp>.json`` and
``bench/results/queue_throughput-latest.json``. The benchmark is run by hand, never as a test:

    .venv/bin/python bench/queue_throughput.py --runs 3

It needs a PostgreSQL server where it may create and drop databases (``--postgres-url``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``) and the ``bench`` extra
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from offload.db import schema
from offload.db.base import Database
from offload.db.connect import open_database
from offload.db.sqlite import CROSS_PROCESS_POLL
from offload.db.url import DatabaseURL
from offload.jobs.queue import spec as job_queue
from offload.queue.consumer import Consumer
from offload.queue.record import Record
from offload.queue.store import SqlQueueStore
from provenance import software
from report import RESULTS, percentile, write_results
from scratchdb import connect, create, drop, url_of

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WARMUP_SAMPLES = 10  # latency samples taken first and discarded (connections, statement caches)
SETTLE_POLL = 0.005  # seconds between "is every job finished?" probes once all have started
STEP_TIMEOUT = 600.0  # a step that takes longer than this is reported as a failure

# Every layout measured: key -> (system, backend, description).
CONFIGURATIONS: dict[str, tuple[str, str, str]] = {
    "offload-pg": ("offload", "postgresql", "1 Consumer, slots={n}"),
    "offload-pg-split": ("offload", "postgresql", "{n} Consumers, slots=1, one pool"),
    "offload-pg-wide": ("offload", "postgresql", "{n} Consumers, slots=10, one pool"),
    "pgqueuer": ("pgqueuer", "postgresql", "1 QueueManager, batch {half}, cap {n}"),
    "pgqueuer-split": ("pgqueuer", "postgresql", "{n} QueueManagers, batch 10, uncapped"),
    "procrastinate": ("procrastinate", "postgresql", "1 worker, concurrency={n}"),
    "offload-sqlite": ("offload", "sqlite", "1 Consumer, slots={n}"),
}
SYSTEMS = ("offload", "pgqueuer", "procrastinate", "sqlite")


@dataclass(frozen=True)
class Params:
    """What one invocation measures."""

    jobs: int
    consumers: int
    runs: int
    enqueue_batch: int
    samples: int
    gap: float
    postgres_url: str
    systems: tuple[str, ...]
    loop: str


@dataclass
class Figures:
    """What one trial of one configuration measured."""

    enqueue_s: float = 0.0
    drain_s: float = 0.0
    jobs: int = 0
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """Rates and latency percentiles, keyed by figure name."""
        out = {
            "enqueue_rate": self.jobs / self.enqueue_s,
            "throughput": self.jobs / self.drain_s,
            "enqueue_s": self.enqueue_s,
            "drain_s": self.drain_s,
        }
        for name, samples in self.latencies_ms.items():
            prefix = f"latency{name}"
            out[f"{prefix}_p50_ms"] = percentile(samples, 50)
            out[f"{prefix}_p99_ms"] = percentile(samples, 99)
            out[f"{prefix}_max_ms"] = max(samples)
        return out


# -- measuring helpers --------------------------------------------------------------------


class Tally:
    """Counts handled no-op jobs and fires once `total` have been handled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.done = asyncio.Event()

    def hit(self) -> None:
        """One more job reached its handler."""
        self.count += 1
        if self.count >= self.total:
            self.done.set()


class Arrivals:
    """When each latency sample reached its handler, by sample number."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[float]] = {}

    def expect(self, sample: int) -> asyncio.Future[float]:
        """A future that resolves to the perf_counter() at which `sample` is handled."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[sample] = future
        return future

    def arrive(self, sample: int) -> None:
        """Sample `sample` is in a handler's hands now."""
        now = time.perf_counter()
        future = self._waiting.pop(sample, None)
        if future is not None and not future.done():
            future.set_result(now)


class Sink:
    """The body of every no-op job: a tally for bulk jobs, an arrival for latency samples."""

    def __init__(self, total: int) -> None:
        self.tally = Tally(total)
        self.arrivals = Arrivals()

    def handle(self, sample: int | None) -> None:
        """A job with `sample` (None for bulk jobs) has started."""
        if sample is None:
            self.tally.hit()
        else:
            self.arrivals.arrive(sample)


async def enqueue_in_batches(
    jobs: int, batch: int, enqueue: Callable[[int], Awaitable[Any]]
) -> float:
    """Seconds to enqueue `jobs` no-op jobs, `batch` per call of `enqueue(n)`."""
    start = time.perf_counter()
    left = jobs
    while left > 0:
        n = min(batch, left)
        await enqueue(n)
        left -= n
    return time.perf_counter() - start


async def drain(sink: Sink, unfinished: Callable[[], Awaitable[int]]) -> float:
    """Seconds until every bulk job has been handled and the database shows none unfinished.

    Call right after starting the consumers; the clock starts here.
    """
    start = time.perf_counter()
    await asyncio.wait_for(sink.tally.done.wait(), STEP_TIMEOUT)
    while await unfinished() > 0:  # noqa: ASYNC110 - the database has no event to wait on
        await asyncio.sleep(SETTLE_POLL)
    return time.perf_counter() - start


async def measure_latency(
    sink: Sink,
    params: Params,
    enqueue_one: Callable[[int], Awaitable[Any]],
    *,
    jitter: float = 0.0,
) -> list[float]:
    """Enqueue-to-start latencies (ms) of single jobs enqueued one at a time to an idle consumer.

    Samples are `params.gap` apart plus a random share of `jitter`: give a consumer that polls
    its jitter as its poll period, so that samples do not fall in step with the polls.
    """
    latencies: list[float] = []
    for sample in range(WARMUP_SAMPLES + params.samples):
        arrived = sink.arrivals.expect(sample)
        start = time.perf_counter()
        await enqueue_one(sample)
        started = await asyncio.wait_for(arrived, 30.0)
        if sample >= WARMUP_SAMPLES:
            latencies.append((started - start) * 1000)
        await asyncio.sleep(params.gap + random.uniform(0, jitter))
    return latencies


async def stop_all(tasks: list[asyncio.Task[Any]], grace: float = 30.0) -> None:
    """Wait for stopping consumer tasks, cancelling any that outstay `grace` seconds."""
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            logging.getLogger("bench").warning("a consumer ended with %r", result)


# -- PostgreSQL databases -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, label: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards; yields its URL."""
    name = await create(admin_url, label)
    try:
        yield url_of(admin_url, name)
    finally:
        await drop(admin_url, name)


class Probe:
    """A connection of its own that looks at a peer's PostgreSQL database between steps."""

    def __init__(self, conn: asyncpg.Connection, unfinished_sql: str) -> None:
        self._conn = conn
        self._unfinished_sql = unfinished_sql

    @classmethod
    async def open(cls, url: str, unfinished_sql: str) -> Probe:
        """Connect to `url`; `unfinished_sql` counts the jobs not finished yet."""
        return cls(await asyncpg.connect(url, timeout=10), unfinished_sql)

    async def unfinished(self) -> int:
        """How many jobs are not finished yet."""
        return int(await self._conn.fetchval(self._unfinished_sql))

    async def analyze(self) -> None:
        """Refresh the planner's statistics, as autovacuum would in a long-running deployment."""
        await self._conn.execute("ANALYZE")

    async def close(self) -> None:
        """Disconnect."""
        await self._conn.close()


# -- offload --------------------------------------------------------------------------------


class NoopHandler:
    """offload's handler for the no-op jobs."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle(self, record: Record) -> None:
        """Report the job as started; do nothing else."""
        self.sink.handle(record.fields["payload"].get("i"))


def offload_consumers(
    store: SqlQueueStore, sink: Sink, consumers: int, split: bool, split_slots: int = 1
) -> list[Consumer]:
    """offload's consumers: one with `consumers` slots, or `consumers` with `split_slots` each."""
    handler = NoopHandler(sink)
    if split:
        return [
            Consumer(store, handler, holder=f"bench-{i}", slots=split_slots)
            for i in range(consumers)
        ]
    return [Consumer(store, handler, holder="bench-0", slots=consumers)]


async def offload_unfinished(db: Database) -> int:
    """Jobs of offload's queue not yet completed."""
    rows = await db.fetch("SELECT COUNT(*) AS n FROM jobs WHERE state <> 'completed'")
    return int(rows[0]["n"])


async def offload_trial(
    url: DatabaseURL, params: Params, *, split: bool, latency: bool, split_slots: int = 1
) -> Figures:
    """Enqueue, drain and (optionally) latency of offload on the migrated database at `url`."""
    figures = Figures(jobs=params.jobs)
    sink = Sink(params.jobs)
    db = await open_database(url, pool_size=params.consumers + 2)
    producer_db = await open_database(url, pool_size=2)
    try:
        store = SqlQueueStore(db, job_queue())
        producer = SqlQueueStore(producer_db, job_queue())
        empty: dict[str, Any] = {"payload": {}}
        figures.enqueue_s = await enqueue_in_batches(
            params.jobs, params.enqueue_batch, lambda n: producer.enqueue_many([empty] * n)
        )
        await producer_db.fetch("ANALYZE")
        consumers = offload_consumers(store, sink, params.consumers, split, split_slots)
        tasks = [asyncio.create_task(c.run()) for c in consumers]
        try:
            figures.drain_s = await drain(sink, lambda: offload_unfinished(producer_db))
            if latency:
                # The producer stands for another process (an API server). On SQLite its
                # commits reach the consumer through the cross-process poll, as theirs would.
                jitter = CROSS_PROCESS_POLL if url.dialect == "sqlite" else 0.0
                figures.latencies_ms[""] = await measure_latency(
                    sink, params, lambda i: producer.enqueue({"payload": {"i": i}}), jitter=jitter
                )
                if url.dialect == "sqlite":
                    # The consumer's own process enqueues: woken in-process, not by polling.
                    figures.latencies_ms["_same_process"] = await measure_latency(
                        sink, params, lambda i: store.enqueue({"payload": {"i": i}})
                    )
        finally:
            for consumer in consumers:
                consumer.stop()
            await stop_all(tasks)
    finally:
        await producer_db.close()
        await db.close()
    return figures


async def offload_pg(
    params: Params, *, split: bool, latency: bool, split_slots: int = 1
) -> Figures:
    """offload on a fresh PostgreSQL database."""
    async with fresh_database(params.postgres_url, "offload") as raw:
        url = DatabaseURL.parse(raw)
        await schema.upgrade(url)
        return await offload_trial(
            url, params, split=split, latency=latency, split_slots=split_slots
        )


async def offload_sqlite(params: Params, *, split: bool, latency: bool) -> Figures:
    """offload on a fresh SQLite file in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as tmp:
        url = DatabaseURL.for_sqlite(Path(tmp) / "offload.db")
        await schema.upgrade(url)
        return await offload_trial(url, params, split=split, latency=latency)


# -- pgqueuer -------------------------------------------------------------------------------


async def pgqueuer_trial(params: Params, *, split: bool, latency: bool) -> Figures:
    """Enqueue, drain and (optionally) latency of pgqueuer on a fresh database."""
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    figures = Figures(jobs=params.jobs)
    sink = Sink(params.jobs)
    async with fresh_database(params.postgres_url, "pgqueuer") as url:
        producer_conn = await asyncpg.connect(url)
        consumer_conns: list[asyncpg.Connection] = []
        probe = await Probe.open(url, "SELECT COUNT(*) FROM pgqueuer")
        try:
            producer = Queries(AsyncpgDriver(producer_conn))
            await producer.install()
            figures.enqueue_s = await enqueue_in_batches(
                params.jobs,
                params.enqueue_batch,
                lambda n: producer.enqueue(["noop"] * n, [None] * n, [0] * n),
            )
            await probe.analyze()

            async def noop(job: Job) -> None:
                sink.handle(int(job.payload) if job.payload else None)

            managers = []
            for _ in range(params.consumers if split else 1):
                conn = await asyncpg.connect(url)
                consumer_conns.append(conn)
                manager = QueueManager(Queries(AsyncpgDriver(conn)))
                manager.entrypoint("noop", accepts_context=False)(noop)
                managers.append(manager)
            if split:
                runs = [m.run(batch_size=10) for m in managers]
            else:
                batch = max(params.consumers // 2, 1)
                runs = [managers[0].run(batch_size=batch, max_concurrent_tasks=2 * batch)]
            tasks = [asyncio.create_task(run) for run in runs]
            try:
                figures.drain_s = await drain(sink, probe.unfinished)
                if latency:
                    figures.latencies_ms[""] = await measure_latency(
                        sink, params, lambda i: producer.enqueue("noop", str(i).encode())
                    )
            finally:
                for manager in managers:
                    manager.shutdown.set()
                await stop_all(tasks)
        finally:
            await probe.close()
            for conn in [producer_conn, *consumer_conns]:
                await conn.close()
    return figures


# -- procrastinate --------------------------------------------------------------------------


async def procrastinate_trial(params: Params, *, split: bool, latency: bool) -> Figures:
    """Enqueue, drain and (optionally) latency of procrastinate on a fresh database."""
    import procrastinate

    figures = Figures(jobs=params.jobs)
    sink = Sink(params.jobs)
    async with fresh_database(params.postgres_url, "procrastinate") as url:
        # The pool serves the worker's fetches, completions, heartbeats and its LISTEN.
        pool_size = params.consumers + 4
        connector = procrastinate.PsycopgConnector(conninfo=url, min_size=4, max_size=pool_size)
        app = procrastinate.App(connector=connector)

        async def noop(i: int | None = None) -> None:
            sink.handle(i)

        task = app.task(name="noop")(noop)
        probe = await Probe.open(
            url, "SELECT COUNT(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
        )
        try:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                figures.enqueue_s = await enqueue_in_batches(
                    params.jobs, params.enqueue_batch, lambda n: task.batch_defer_async(*[{}] * n)
                )
                await probe.analyze()
                worker = asyncio.create_task(
                    app.run_worker_async(
                        concurrency=params.consumers, install_signal_handlers=False
                    )
                )
                try:
                    figures.drain_s = await drain(sink, probe.unfinished)
                    if latency:
                        figures.latencies_ms[""] = await measure_latency(
                            sink, params, lambda i: task.defer_async(i=i)
                        )
                finally:
                    worker.cancel()  # procrastinate's worker stops gracefully when cancelled
                    with contextlib.suppress(asyncio.CancelledError):
                        await stop_all([worker])
        finally:
            await probe.close()
    return figures


# -- orchestration --------------------------------------------------------------------------

Trial = Callable[[Params], Coroutine[Any, Any, Figures]]


def trials(params: Params) -> dict[str, Trial]:
    """The trials of one run, by configuration key, for the systems asked for."""
    table: dict[str, tuple[str, Trial]] = {
        "offload-pg": ("offload", lambda p: offload_pg(p, split=False, latency=True)),
        "offload-pg-split": ("offload", lambda p: offload_pg(p, split=True, latency=False)),
        # Mirrors pgqueuer-split: as many consumers, each leasing up to 10 jobs at a time.
        "offload-pg-wide": (
            "offload",
            lambda p: offload_pg(p, split=True, latency=False, split_slots=10),
        ),
        "pgqueuer": ("pgqueuer", lambda p: pgqueuer_trial(p, split=False, latency=True)),
        "pgqueuer-split": ("pgqueuer", lambda p: pgqueuer_trial(p, split=True, latency=False)),
        "procrastinate": (
            "procrastinate",
            lambda p: procrastinate_trial(p, split=False, latency=True),
        ),
        "offload-sqlite": ("sqlite", lambda p: offload_sqlite(p, split=False, latency=True)),
    }
    return {key: trial for key, (system, trial) in table.items() if system in params.systems}


def run_loop(params: Params, coroutine: Coroutine[Any, Any, Figures]) -> Figures:
    """Run one trial on a fresh event loop of the chosen kind."""
    factory = None
    if params.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def rotated(keys: list[str], run: int) -> list[str]:
    """`keys` rotated by `run` places, so that no system always goes first."""
    shift = run % len(keys)
    return keys[shift:] + keys[:shift]


def run_all(params: Params, console: Console) -> list[dict[str, dict[str, float]]]:
    """Every trial of every run; each run maps configuration key to its figures."""
    runs: list[dict[str, dict[str, float]]] = []
    available = trials(params)
    for run in range(params.runs):
        figures: dict[str, dict[str, float]] = {}
        for key in rotated(list(available), run):
            gc.collect()
            started = time.perf_counter()
            try:
                result = run_loop(params, available[key](params)).flat()
            except Exception as exc:  # one failed trial must not lose the others
                console.print(f"  run {run + 1}/{params.runs} {key:<17} [red]failed: {exc!r}[/red]")
                continue
            figures[key] = result
            console.print(
                f"  run {run + 1}/{params.runs} {key:<17} enqueue {result['enqueue_rate']:>9,.0f}/s"
                f"  drain {result['throughput']:>8,.0f}/s"
                + (
                    f"  p50 {result['latency_p50_ms']:6.2f} ms"
                    if "latency_p50_ms" in result
                    else ""
                )
                + f"  ({time.perf_counter() - started:.1f}s)"
            )
        runs.append(figures)
    return runs


def medians(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The median of every figure of every configuration across runs."""
    out: dict[str, dict[str, float]] = {}
    for key in CONFIGURATIONS:
        measured = [run[key] for run in runs if key in run]
        if measured:
            out[key] = {name: statistics.median(m[name] for m in measured) for name in measured[0]}
    return out


def best(meds: dict[str, dict[str, float]], keys: tuple[str, ...]) -> tuple[str, float] | None:
    """The configuration among `keys` with the highest median throughput, and that throughput."""
    present = [(key, meds[key]["throughput"]) for key in keys if key in meds]
    return max(present, key=lambda kv: kv[1]) if present else None


def ratios(meds: dict[str, dict[str, float]]) -> dict[str, float]:
    """offload/peer ratios of the medians: throughput (higher is better), latency (lower is)."""
    out: dict[str, float] = {}
    offload = best(meds, ("offload-pg", "offload-pg-split", "offload-pg-wide"))
    for peer, keys in (
        ("pgqueuer", ("pgqueuer", "pgqueuer-split")),
        ("procrastinate", ("procrastinate",)),
    ):
        peer_best = best(meds, keys)
        if offload is None or peer_best is None:
            continue
        out[f"throughput_best_vs_{peer}"] = offload[1] / peer_best[1]
        if "offload-pg" in meds and peer in meds:
            mine, theirs = meds["offload-pg"], meds[peer]
            out[f"throughput_one_process_vs_{peer}"] = mine["throughput"] / theirs["throughput"]
            out[f"enqueue_rate_vs_{peer}"] = mine["enqueue_rate"] / theirs["enqueue_rate"]
            out[f"latency_p50_vs_{peer}"] = mine["latency_p50_ms"] / theirs["latency_p50_ms"]
            out[f"latency_p99_vs_{peer}"] = mine["latency_p99_ms"] / theirs["latency_p99_ms"]
    if "offload-pg-split" in meds and "pgqueuer-split" in meds:
        out["throughput_split_vs_pgqueuer"] = (
            meds["offload-pg-split"]["throughput"] / meds["pgqueuer-split"]["throughput"]
        )
    if "offload-pg-wide" in meds and "pgqueuer-split" in meds:
        # Same shape on both sides: 8 consumers, each with up to 10 jobs leased.
        out["throughput_wide_vs_pgqueuer_split"] = (
            meds["offload-pg-wide"]["throughput"] / meds["pgqueuer-split"]["throughput"]
        )
    return out


def targets(meds: dict[str, dict[str, float]], rats: dict[str, float]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met.

    The acceptance targets come first; the rows marked informational read the same goals
    another way (like for like, or on SQLite).
    """
    out: list[dict[str, Any]] = []

    def check(name: str, value: float | None, goal: float, unit: str, acceptance: bool) -> None:
        if value is None:
            return
        met = value >= goal if unit == "x" else value <= goal
        out.append(
            {
                "target": name,
                "goal": goal,
                "value": value,
                "unit": unit,
                "met": met,
                "acceptance": acceptance,
            }
        )

    pg = meds.get("offload-pg", {})
    sqlite = meds.get("offload-sqlite", {})
    check(
        "PostgreSQL drain throughput vs pgqueuer (best layouts)",
        rats.get("throughput_best_vs_pgqueuer"),
        1.0,
        "x",
        True,
    )
    check(
        "PostgreSQL drain throughput vs procrastinate (best layouts)",
        rats.get("throughput_best_vs_procrastinate"),
        3.0,
        "x",
        True,
    )
    check("enqueue-to-start p50, PostgreSQL", pg.get("latency_p50_ms"), 10.0, "ms", True)
    check(
        "drain throughput vs pgqueuer, one consumer, 8 in flight",
        rats.get("throughput_one_process_vs_pgqueuer"),
        1.0,
        "x",
        False,
    )
    check(
        "enqueue-to-start p50, SQLite, producer in another process",
        sqlite.get("latency_p50_ms"),
        10.0,
        "ms",
        False,
    )
    check(
        "enqueue-to-start p50, SQLite, producer in the same process",
        sqlite.get("latency_same_process_p50_ms"),
        10.0,
        "ms",
        False,
    )
    return out


# -- reporting ------------------------------------------------------------------------------


async def postgres_info(admin_url: str) -> dict[str, str]:
    """Version and durability settings of the PostgreSQL server."""
    conn = await connect(admin_url)
    try:
        settings = (
            "server_version",
            "synchronous_commit",
            "fsync",
            "shared_buffers",
            "max_connections",
        )
        info = {name: str(await conn.fetchval(f"SHOW {name}")) for name in settings}
        info["version"] = str(await conn.fetchval("SELECT version()"))
        return info
    finally:
        await conn.close()


def machine_info(params: Params) -> dict[str, Any]:
    """Where the benchmark ran."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "event_loop": params.loop,
        "postgres": asyncio.run(postgres_info(params.postgres_url)),
        **software(("offload", "pgqueuer", "procrastinate", "asyncpg", "psycopg", "uvloop")),
    }


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`, or a dash."""
    return "-" if value is None else format(value, spec)


def layout(key: str, consumers: int) -> str:
    """How configuration `key` runs its consumers, with the numbers filled in."""
    return CONFIGURATIONS[key][2].format(n=consumers, half=max(consumers // 2, 1))


def print_summary(
    console: Console,
    params: Params,
    meds: dict[str, dict[str, float]],
    rats: dict[str, float],
    goals: list[dict[str, Any]],
) -> None:
    """The medians, ratios and targets as tables."""
    figures = Table(
        title=f"Medians of {params.runs} run(s): {params.jobs:,} no-op jobs, "
        f"{params.consumers} consumers, {params.samples} latency samples"
    )
    figures.add_column("configuration")
    figures.add_column("layout")
    for column in ("enqueue jobs/s", "drain jobs/s", "p50 ms", "p99 ms"):
        figures.add_column(column, justify="right")
    for key, row in meds.items():
        figures.add_row(
            key,
            layout(key, params.consumers),
            fmt(row["enqueue_rate"], ",.0f"),
            fmt(row["throughput"], ",.0f"),
            fmt(row.get("latency_p50_ms"), ".2f"),
            fmt(row.get("latency_p99_ms"), ".2f"),
        )
        if "latency_same_process_p50_ms" in row:
            figures.add_row(
                f"{key}, same process",
                "producer in the consumer's process",
                "",
                "",
                fmt(row["latency_same_process_p50_ms"], ".2f"),
                fmt(row["latency_same_process_p99_ms"], ".2f"),
            )
    console.print(figures)
    if rats:
        table = Table(
            title="offload / peer on PostgreSQL (throughput: higher is better; latency: lower)"
        )
        table.add_column("ratio")
        table.add_column("value", justify="right")
        for name, value in rats.items():
            table.add_row(name, f"{value:.2f}x")
        console.print(table)
    table = Table(title="Targets")
    table.add_column("kind")
    table.add_column("target")
    table.add_column("goal", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("status")
    for goal in goals:
        sign = ">=" if goal["unit"] == "x" else "<="
        unit = "x" if goal["unit"] == "x" else " ms"
        status = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        measured = f"{goal['value']:.2f}{unit}"
        kind = "acceptance" if goal["acceptance"] else "info"
        table.add_row(kind, goal["target"], f"{sign} {goal['goal']:g}{unit}", measured, status)
    console.print(table)


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Params:
    """The benchmark's parameters from the command line."""
    parser = argparse.ArgumentParser(
        description="No-op job throughput and enqueue-to-start latency of offload's record\n"
        "queue on PostgreSQL and SQLite, against procrastinate and pgqueuer on the same\n"
        "PostgreSQL server. Run by hand; see the module docstring for what is measured.",
        epilog="example: .venv/bin/python bench/queue_throughput.py --runs 3\n"
        "quick check: .venv/bin/python bench/queue_throughput.py --runs 1 --jobs 2000 --samples 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="repetitions; medians are reported (default 3)"
    )
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="jobs to enqueue and drain (default 20000)"
    )
    parser.add_argument("--consumers", type=int, default=8, help="concurrent consumers (default 8)")
    parser.add_argument(
        "--enqueue-batch", type=int, default=1000, help="jobs per bulk enqueue call (default 1000)"
    )
    parser.add_argument(
        "--samples", type=int, default=300, help="latency samples per run (default 300)"
    )
    parser.add_argument(
        "--gap", type=float, default=0.005, help="seconds between latency samples (default 0.005)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OFFLOAD_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a database on the server where fresh databases are created and dropped "
        f"(default $OFFLOAD_BENCH_POSTGRES_URL or {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop (default asyncio)",
    )
    args = parser.parse_args(argv)
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {','.join(SYSTEMS)}")
    if min(args.runs, args.jobs, args.consumers, args.enqueue_batch, args.samples) < 1:
        parser.error("--runs, --jobs, --consumers, --enqueue-batch and --samples must be positive")
    return Params(
        jobs=args.jobs,
        consumers=args.consumers,
        runs=args.runs,
        enqueue_batch=args.enqueue_batch,
        samples=args.samples,
        gap=args.gap,
        postgres_url=args.postgres_url,
        systems=systems,
        loop=args.loop,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary and write the results."""
    params = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("pgqueuer", "procrastinate", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    started_at = datetime.now(UTC)
    machine = machine_info(params)
    console.print(
        f"queue throughput: {params.jobs:,} jobs, {params.consumers} consumers, "
        f"{params.runs} run(s), PostgreSQL {machine['postgres']['server_version']}, "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}"
    )
    runs = run_all(params, console)
    meds = medians(runs)
    rats = ratios(meds)
    goals = targets(meds, rats)
    document = {
        "benchmark": "queue_throughput",
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": asdict(params) | {"warmup_samples": WARMUP_SAMPLES},
        "configurations": {
            key: {"system": system, "backend": backend, "layout": layout(key, params.consumers)}
            for key, (system, backend, _) in CONFIGURATIONS.items()
            if key in meds
        },
        "runs": runs,
        "medians": meds,
        "ratios": rats,
        "targets": goals,
    }
    path = write_results(document, "queue_throughput")
    print_summary(console, params, meds, rats, goals)
    console.print(f"results: {path} (and {RESULTS / 'queue_throughput-latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
