"""The web interface at scale: how fast the batch change and preview pages answer with 45,000
changesets, how soon a line printed in a sandbox shows in the browser, and what a first visit
downloads.

Everything runs as in production, as separate processes on this machine, on a fresh database
per database kind (a temporary SQLite file; with ``--postgres``, a fresh PostgreSQL database,
dropped afterwards): ``offload migrate up``, an ``offload server`` (its first start prints the
site admin's password), and, for the live log, one ``offload executor`` with the sandbox
runtime.

Seeding, in this process, through offload's own stores (tests/support/batch_seed.py writes one
workspace at a time, far too slow for 45,000): a plain user ``bench`` with a password; a batch
spec over N repositories ``bench-svc-NNNNN`` written in bulk (``BatchStore.add_workspaces``,
``set_cached``: each workspace's result came from the step cache, so it needs no job and is
"cached"; ``add_changeset_specs``, one changeset spec with a 12-line diff per workspace; its
resolution job marked complete through its ``SqlQueueStore``), applied with
``BatchService.apply`` (N changesets); then the changesets get states with one UPDATE per state
group and day (60% open, 25% merged, 10% closed on the code host, 5% failed to publish), their
times spread over the past ``DAYS`` days, so the burndown has a shape. A second spec of the same
batch change (the spec edited: new title and diff; 1% of the repositories dropped, 1% new) is
written the same way and left unapplied: its preview is the one measured, the heavier case, as
its plan matches N changeset specs against the N changesets and their current specs.
Seeding is timed per phase and printed.

What is measured, per database:

1. **Page time**, per run (``--runs``, a fresh server process each, medians of the runs
   reported): signed in through ``POST /sign-in`` (a session cookie, as a browser), ``--requests``
   (30) sequential requests of each page after ``--warmups`` (3), timed by the client on
   127.0.0.1 from sending the request to the last byte (server time plus a local round trip):
   the batch change page (first page, ``?status=open``, a page 90% deep with ``?after=ID``) and
   the preview page (first page, ``?action=publish``, a page 90% deep reached through the
   page's own "Next changesets" link). p50/p99 per page and over all of them. The preview's
   plan is computed once per spec state and kept in the server process
   (``batches.listing.PLANS_KEPT``): the first preview request of each run, on the fresh
   server, is the cold one and is reported apart.
2. **Where the time goes**, in this process on the same database: the reads each page makes
   (``BatchListing``, ``burndown``, ``BatchService``) timed alone, medians of ``--samples``;
   what a page takes beyond them is rendering and HTTP. The preview's plan is also timed
   computed afresh, and in the parts ``BatchService.plan`` makes it of: reading the spec's
   changeset specs, the batch change's changesets and their current specs, and matching them.
3. **Live log delay**: Playwright drives Debian's Chromium (as tests/support/browser.py does),
   signed in as the site admin, on the job page of ``--log-runs`` (3) jobs started with
   ``offload run --detach``, each printing ``--log-lines`` (11) lines ``line-N <time>`` from the
   sandbox, ``LOG_PAUSE`` apart (not a whole second, so that lines fall at every point of the
   executor's flush); a MutationObserver notes when each appears in the page. Delay = shown -
   printed (one clock: the same machine). The executor sends a running command's output every
   ``executor.cmdlog.FLUSH_INTERVAL`` (1 s) and the page's event stream reads the job every
   ``web.livelog.POLL_INTERVAL`` (0.25 s): the delay cannot be below the time a line waits for
   both, on average half of each.
4. **First visit**: a fresh client (no cache, no cookie) opens the home page, is sent to the
   sign-in page, signs in, and opens the home page, the batch change page and the preview
   page, each with every stylesheet, script and icon it references (each asset once, as a
   browser's cache keeps it for the visit). Bytes as sent (the server's Content-Encoding is
   recorded) and each body gzip-compressed at level 6.

Targets: page p50 <= 100 ms (each page measured), live log p50 <= 1 s, first visit <= 300 KB
compressed (300,000 bytes). Results go to ``bench/results/web-<UTC timestamp>.json`` (and
``web-latest.json``). Run by hand, as root (the sandbox runtime's cgroups), with bubblewrap
and Debian's chromium installed and the test extra (Playwright):

    .venv/bin/python bench/web.py                                   # 45,000 changesets
    .venv/bin/python bench/web.py --changesets 2000 --runs 5 --databases sqlite   # quick

It imports the test helpers ``tests/support/fleet.py`` (server and executor processes) and
``tests/support/browser.py`` (Chromium, the sign-in form).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import html
import os
import platform
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from playwright.async_api import async_playwright
from rich.console import Console
from rich.table import Table

from offload.batches import changesets as cs
from offload.batches import resolver
from offload.batches.burndown import burndown
from offload.batches.listing import (
    PLANS_KEPT,
    SUMMARY_CACHED_FROM,
    SUMMARY_KEPT_AT_MOST,
    BatchListing,
    diff_text,
)
from offload.batches.results import stored_diff
from offload.batches.service import BatchService
from offload.batches.spec.workers import shared
from offload.batches.store import NewWorkspace
from offload.db.base import Database
from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.executor.cmdlog import FLUSH_INTERVAL
from offload.identity.users import Users
from offload.queue.store import SqlQueueStore
from offload.web.diffview import parse_diff
from offload.web.livelog import POLL_INTERVAL
from provenance import software, tool_version
from report import RESULTS, medians, percentile, write_results
from scratchdb import database

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support")]
from fleet import Fleet, make_repo  # noqa: E402

from browser import LAPTOP, Account, first_admin, launch, sign_in  # noqa: E402

NAME = "web"
DATABASES = ("sqlite", "postgresql")
USER = "bench"
PASSWORD = "correct horse battery staple"
CHANGE = "web-bench"
REPO_PREFIX = "bench-svc-"
REV = "c0ffee" * 6 + "c0ff"
# The changesets' times are spread over this many days before now (the burndown's span).
DAYS = 14
# Share of changesets per state, by `id % 20`: (status, first, last) residues.
GROUPS = (("open", 0, 11), ("merged", 12, 16), ("closed", 17, 18), ("failed", 19, 19))
SPEC = """\
name: {name}
description: {description}
on:
  - repositoriesMatchingQuery: repo:^{prefix}
steps:
  - run: sed -i 's/colour/color/g' README.md
    container: busybox
changesetTemplate:
  title: {title}
  body: American spelling in the README.
  branch: batch/{name}
  commit:
    message: Use color in the README
  published: true
"""
LOG_PAUSE = 0.37
# Notes, in the page, when each printed line first appears in its log (as
# tests/browser/test_browser_job_live.py does).
WATCH = """() => {
  window.linesSeen = {};
  const log = document.getElementById("log");
  const scan = () => {
    for (const m of log.textContent.matchAll(/line-(\\d+) (\\d+\\.\\d+)/g)) {
      if (!(m[1] in window.linesSeen)) {
        window.linesSeen[m[1]] = [Number(m[2]), Date.now() / 1000];
      }
    }
  };
  new MutationObserver(scan).observe(log, {childList: true, subtree: true, characterData: true});
  scan();
}"""
PAGE_TARGET_MS = 100.0
LOG_TARGET_S = 1.0
BYTES_TARGET = 300_000
HTML = {"Accept": "text/html,application/xhtml+xml", "Accept-Encoding": "gzip, deflate, br"}
# The measured pages, in the order they are shown.
PAGES = (
    "change",
    "change?status=open",
    "change deep",
    "preview",
    "preview?action=publish",
    "preview deep",
)


@dataclass(frozen=True)
class Params:
    """What one invocation measures."""

    changesets: int
    runs: int
    requests: int
    warmups: int
    samples: int
    log_runs: int
    log_lines: int
    databases: tuple[str, ...]
    postgres_url: str | None
    keep: bool


def ms(seconds: float) -> float:
    """Seconds as milliseconds."""
    return seconds * 1000.0


def note(console: Console, text: str) -> None:
    """A progress line, stamped with the time of day (runs are long; output may go to a file)."""
    console.print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", markup=False, highlight=False)


def spread(samples: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of `samples`."""
    return {
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }


# -- seeding ------------------------------------------------------------------------------


def repos(count: int, *, edited: bool = False) -> list[str]:
    """The first spec's `count` repositories; or the edited spec's: every hundredth of them
    dropped (spread through the preview's order), as many new ones after the last."""
    if not edited:
        return [f"{REPO_PREFIX}{i:05d}" for i in range(count)]
    dropped = range(50, count, 100)
    kept = [i for i in range(count + len(dropped)) if i >= count or i % 100 != 50]
    return [f"{REPO_PREFIX}{i:05d}" for i in kept]


def diff_of(repo: str, version: int) -> bytes:
    """A README's diff as the spec's step makes it: 3 lines changed among context."""
    words = ("color", "colors", "colored") if version == 1 else ("color", "colors", "colorful")
    return (
        f"diff --git README.md README.md\n--- README.md\n+++ README.md\n@@ -1,9 +1,9 @@\n"
        f" # {repo}\n \n-The colour of {repo} is blue.\n+The {words[0]} of {repo} is blue.\n"
        f" It serves the other services.\n \n-Its colours are set in config.\n"
        f"+Its {words[1]} are set in config.\n \n-A coloured badge shows its state.\n"
        f"+A {words[2]} badge shows its state.\n"
    ).encode()


def changeset(repo: str, version: int) -> dict[str, Any]:
    """The changeset spec the spec's template renders for `repo` (version 2: edited)."""
    title = f"Use color in {repo}" + ("" if version == 1 else "'s README")
    return {
        "repo_name": repo,
        "kind": "branch",
        "external_id": None,
        "base_ref": "main",
        "base_rev": REV,
        "head_ref": f"batch/{CHANGE}",
        "title": title,
        "body": f"American spelling in the README of {repo}.\n\nMade by offload batch changes.",
        "commit_message": "Use color in the README",
        "author_name": USER,
        "author_email": f"{USER}@example.com",
        "published": True,
        "diff": stored_diff(diff_of(repo, version)),
        "diff_added": 3,
        "diff_deleted": 3,
    }


@dataclass
class Seeded:
    """What the pages show: the applied spec, the next one (previewed), the batch change."""

    applied: str
    previewed: str
    change_id: int
    # The id of the changeset 90% of the way through the batch change's list.
    deep_id: int
    timings_s: dict[str, float] = field(default_factory=dict)


async def write_spec(
    db: Database, service: BatchService, raw: str, names: list[str], version: int
) -> tuple[str, dict[str, float]]:
    """A spec of `USER` over `names`, every workspace answered by the cache, resolved; its id
    and the seconds each phase took."""
    took: dict[str, float] = {}
    start = time.perf_counter()
    row = await service.submit(USER, raw, created_by=USER)
    took["submit"] = time.perf_counter() - start
    start = time.perf_counter()
    found = [NewWorkspace(repo_name=n, branch="main", commit=REV) for n in names]
    workspaces = await service.store.add_workspaces(row.id, found)
    took["add_workspaces"] = time.perf_counter() - start
    start = time.perf_counter()
    # A workspace whose result came from the step cache needs no job: its state is "cached".
    await service.store.set_cached(
        [(w.id, 1, True) for w in workspaces], {w.id: f"{row.rand_id}-{w.id}" for w in workspaces}
    )
    took["set_cached"] = time.perf_counter() - start
    start = time.perf_counter()
    await service.store.add_changeset_specs(
        row.id, {w.id: [changeset(w.repo_name, version)] for w in workspaces}
    )
    took["add_changeset_specs"] = time.perf_counter() - start
    start = time.perf_counter()
    resolutions = SqlQueueStore(db, resolver.SPEC)
    (record,) = await resolutions.dequeue("bench-seed")
    await resolutions.mark_complete(record.lease)
    took["resolution_complete"] = time.perf_counter() - start
    return row.rand_id, took


async def give_states(db: Database, change_id: int, now: datetime) -> None:
    """The changesets' states on the code host, and times spread over the past DAYS days:
    published in the first two, merged and closed over the rest (one UPDATE per state group
    and day, so both dialects take the times as bound values)."""
    start = now - timedelta(days=DAYS)
    later = (now - start - timedelta(days=2)) / DAYS
    await db.fetch(
        "UPDATE batch_changes SET created_at = :t WHERE id = :b", {"t": start, "b": change_id}
    )
    reviews = {"open": ("approved", "pending"), "merged": ("approved", "passed")}
    reviews |= {"closed": ("changes_requested", "failed")}
    for status, lo, hi in GROUPS:
        for day in range(DAYS):
            published = start + timedelta(hours=day * 48 / DAYS)
            ended = start + timedelta(days=2) + later * (day + 0.5)
            values: dict[str, Any] = {"b": change_id, "day": day, "start": start}
            where = (
                f"WHERE batch_change_id = :b AND id % 20 BETWEEN {lo} AND {hi} "
                f"AND (id / 20) % {DAYS} = :day"
            )
            if status == "failed":
                await db.fetch(
                    "UPDATE changesets SET state = 'failed', num_failures = 5, failure_message ="
                    " 'pushing batch/web-bench: the code host refused the push (protected "
                    f"branch)', created_at = :start, updated_at = :ended {where}",
                    values | {"ended": ended},
                )
                continue
            review, checks = reviews[status]
            await db.fetch(
                "UPDATE changesets SET state = 'completed', publication_state = 'published', "
                "external_state = :status, external_id = CAST(id AS VARCHAR(32)), "
                "external_url = 'https://code.example.com/pulls/' || CAST(id AS VARCHAR(32)), "
                "head_ref = 'batch/web-bench', review_state = :review, checks_state = :checks, "
                "created_at = :start, published_at = :published, merged_at = :merged, "
                f"closed_at = :closed, updated_at = :updated {where}",
                values
                | {
                    "status": status,
                    "review": review,
                    "checks": checks,
                    "published": published,
                    "merged": ended if status == "merged" else None,
                    "closed": ended if status == "closed" else None,
                    "updated": ended if status != "open" else published,
                },
            )


async def seed(url: DatabaseURL, n: int, console: Console) -> Seeded:
    """The user, an applied spec of `n` changesets with states, and the next spec."""
    db = await open_database(url)
    timings: dict[str, float] = {}
    try:
        start = time.perf_counter()
        await Users(db).create(USER, password=PASSWORD)
        service = BatchService(db)
        first = SPEC.format(
            name=CHANGE, description="American spelling.", prefix=REPO_PREFIX, title="Use color"
        )
        applied, took = await write_spec(db, service, first, repos(n), 1)
        timings |= {f"first_spec.{k}": v for k, v in took.items()}
        note(console, f"  seeded the first spec ({n} workspaces): {sum(took.values()):.1f} s")
        started = time.perf_counter()
        result = await service.apply(applied)
        timings["apply"] = time.perf_counter() - started
        note(console, f"  applied it: {result['counts']} in {timings['apply']:.1f} s")
        change_id = int(result["id"])
        started = time.perf_counter()
        await give_states(db, change_id, datetime.now(UTC))
        timings["states"] = time.perf_counter() - started
        edited = SPEC.format(
            name=CHANGE,
            description="American spelling, every word.",
            prefix=REPO_PREFIX,
            title="Use color in the README",
        )
        previewed, took = await write_spec(db, service, edited, repos(n, edited=True), 2)
        timings |= {f"second_spec.{k}": v for k, v in took.items()}
        rows = await db.fetch(
            "SELECT id FROM changesets WHERE batch_change_id = :b ORDER BY id LIMIT 1 OFFSET :k",
            {"b": change_id, "k": n * 9 // 10},
        )
        if url.dialect == "postgresql":
            # As autovacuum would have done by the time anyone reads these pages.
            await db.fetch("ANALYZE")
        timings["total"] = time.perf_counter() - start
        note(console, f"  seeded in {timings['total']:.1f} s (both specs, apply, states)")
        return Seeded(applied, previewed, change_id, int(rows[0]["id"]), timings)
    finally:
        await db.close()


# -- page time ------------------------------------------------------------------------------


class Links(HTMLParser):
    """The stylesheets, scripts and icons a page references, and its links by their text."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.anchors: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note assets and where links start."""
        found = {k: v or "" for k, v in attrs}
        rel = found.get("rel", "").split()
        if tag == "link" and ({"stylesheet", "icon"} & set(rel)) and found.get("href"):
            self.assets.append(found["href"])
        elif tag == "script" and found.get("src"):
            self.assets.append(found["src"])
        elif tag == "a" and "href" in found:
            self._href, self._text = found["href"], []

    def handle_data(self, data: str) -> None:
        """A link's text."""
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        """A link's end."""
        if tag == "a" and self._href is not None:
            self.anchors.append((self._href, "".join(self._text).strip()))
            self._href = None


def links_of(page: str) -> Links:
    """`page` parsed."""
    parser = Links()
    parser.feed(page)
    parser.close()
    return parser


def next_link(page: str) -> str:
    """The address of a page's "Next changesets" link; RuntimeError if it has none."""
    for href, text in links_of(page).anchors:
        if text == "Next changesets":
            return html.unescape(href)
    raise RuntimeError("the page has no 'Next changesets' link")


def signed_in_client(base: str) -> httpx.Client:
    """A client with a session of `USER`, signed in through the sign-in form."""
    client = httpx.Client(base_url=base, timeout=600, headers=HTML)
    answer = client.post(
        "/sign-in", data={"username": USER, "password": PASSWORD, "next": "/batch-changes"}
    )
    if answer.status_code != 303 or answer.headers.get("location") != "/batch-changes":
        raise RuntimeError(f"signing in as {USER}: {answer.status_code} {answer.text[:300]}")
    return client


def get_page(client: httpx.Client, path: str, expect: str) -> tuple[float, str]:
    """Seconds to GET `path` to its last byte, and its text; RuntimeError unless a 200 page
    that shows `expect`."""
    start = time.perf_counter()
    answer = client.get(path)
    elapsed = time.perf_counter() - start
    if answer.status_code != 200 or expect not in answer.text:
        raise RuntimeError(
            f"GET {path}: {answer.status_code}, {expect!r} "
            f"{'missing' if expect not in answer.text else 'present'}: {answer.text[:300]}"
        )
    return elapsed, answer.text


def page_paths(seeded: Seeded) -> dict[str, tuple[str, str]]:
    """Each measured page but the deep preview: its path and a text it must show."""
    change = f"/batch-changes/{USER}/{CHANGE}"
    preview = f"/batch-specs/{seeded.previewed}/preview"
    row = 'class="operation"'
    return {
        "change": (change, "Next changesets"),
        "change?status=open": (f"{change}?status=open", "Next changesets"),
        "change deep": (f"{change}?after={seeded.deep_id}", "Next changesets"),
        "preview": (preview, row),
        "preview?action=publish": (f"{preview}?action=publish", row),
    }


def deep_preview(client: httpx.Client, seeded: Seeded, n: int) -> str:
    """A preview page 90% of the way in, as its own "Next changesets" link names it: the page
    after the one that starts at the repository 90% along."""
    repo = f"{REPO_PREFIX}{n * 9 // 10:05d}"
    _, page = get_page(
        client, f"/batch-specs/{seeded.previewed}/preview?after={repo}", 'class="operation"'
    )
    return next_link(page)


def measure_pages(
    fleet: Fleet, seeded: Seeded, params: Params, paths: dict[str, tuple[str, str]], run: int
) -> dict[str, Any]:
    """One run on a fresh server: the cold preview, then every page's samples (ms)."""
    fleet.restart_server()
    with contextlib.closing(signed_in_client(fleet.base)) as client:
        change, change_marker = paths["change"]
        counted, _ = get_page(client, change, change_marker)
        preview, marker = paths["preview"]
        cold, _ = get_page(client, preview, marker)
        if "preview deep" not in paths:
            paths["preview deep"] = (deep_preview(client, seeded, params.changesets), marker)
        samples: dict[str, list[float]] = {}
        for name in PAGES:
            path, expect = paths[name]
            for _ in range(params.warmups):
                get_page(client, path, expect)
            samples[name] = [ms(get_page(client, path, expect)[0]) for _ in range(params.requests)]
    return {
        "run": run,
        "cold_preview_ms": ms(cold),
        "cold_change_ms": ms(counted),
        "samples_ms": samples,
    }


def page_figures(kind: str, measured: dict[str, Any]) -> dict[str, float]:
    """One run's page figures, flat."""
    flat: dict[str, float] = {
        f"{kind}.preview_cold.ms": measured["cold_preview_ms"],
        f"{kind}.change_cold.ms": measured["cold_change_ms"],
    }
    every: list[float] = []
    for name, values in measured["samples_ms"].items():
        flat[f"{kind}.page.{name}.p50_ms"] = percentile(values, 50)
        flat[f"{kind}.page.{name}.p99_ms"] = percentile(values, 99)
        every += values
    flat[f"{kind}.page.all.p50_ms"] = percentile(every, 50)
    flat[f"{kind}.page.all.p99_ms"] = percentile(every, 99)
    return flat


# -- where the time goes ------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]], samples: int) -> float:
    """The median milliseconds of `samples` calls (after one discarded)."""
    await call()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        await call()
        times.append(ms(time.perf_counter() - start))
    return statistics.median(times)


async def breakdown(url: DatabaseURL, seeded: Seeded, params: Params) -> dict[str, float]:
    """The reads behind each page, each alone, in this process (median ms)."""
    db = await open_database(url)
    try:
        service = BatchService(db)
        listing = BatchListing(service)
        change_id = seeded.change_id
        row = await service.spec_row(seeded.previewed)
        out: dict[str, float] = {}
        k = params.samples

        async def chart() -> None:
            now = datetime.now(UTC)
            await burndown(db, change_id, now - timedelta(days=DAYS), now)

        async def cold_plan() -> None:
            await BatchListing(service).operations(row, limit=20)

        async def page_diffs() -> None:
            page = await listing.operations(row, limit=20)
            ids = [op.spec_id for op in page.operations if op.spec_id is not None]
            for spec in await listing.changeset_specs(ids):
                parse_diff(diff_text(spec), max_lines=400)

        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "change: find_change": lambda: service.find_change(USER, CHANGE),
            "change: changesets, first page": lambda: listing.changesets(change_id, limit=51),
            "change: changesets, ?status=open": lambda: listing.changesets(
                change_id, status="open", limit=51
            ),
            "change: changesets, deep": lambda: listing.changesets(
                change_id, after=seeded.deep_id, limit=51
            ),
            "change: status_counts": lambda: listing.status_counts(change_id),
            "change: burndown": chart,
            "change: specs_of": lambda: listing.specs_of(USER, CHANGE, limit=10),
            "preview: progress": lambda: service.progress(seeded.previewed),
            "preview: operations, plan kept": lambda: listing.operations(row, limit=20),
            "preview: operations, ?action=publish": lambda: listing.operations(
                row, action="publish", limit=20
            ),
            "preview: operations + their 20 changeset specs + parse_diff": page_diffs,
        }
        for name, call in reads.items():
            out[name] = await timed(call, k)
        # The plan itself, computed afresh: what the cold preview request waits for, and its
        # parts as BatchService.plan makes them.
        few = max(1, min(k, 3))
        out["preview: operations, plan computed"] = await timed(cold_plan, few)
        sql = "SELECT * FROM changesets WHERE batch_change_id = :b ORDER BY id"
        existing = [cs.ChangesetRow.from_row(r) for r in await db.fetch(sql, {"b": change_id})]
        ids = [c.spec_id for c in existing if c.spec_id is not None]
        specs = await service.store.changeset_specs(row.id)
        current = await service.changeset_specs_by_id(ids)

        async def read_changesets() -> None:
            _ = [cs.ChangesetRow.from_row(r) for r in await db.fetch(sql, {"b": change_id})]

        async def matching() -> None:
            cs.plan(specs, existing, current)

        parts: dict[str, Callable[[], Awaitable[Any]]] = {
            "plan part: the spec's changeset specs": lambda: service.store.changeset_specs(row.id),
            "plan part: the batch change's changesets": read_changesets,
            "plan part: their current changeset specs": lambda: service.changeset_specs_by_id(ids),
            "plan part: matching (changesets.plan)": matching,
        }
        for name, call in parts.items():
            out[name] = await timed(call, few)
        return out
    finally:
        await db.close()


# -- live log -------------------------------------------------------------------------------


def log_command(lines: int) -> str:
    """A job printing `lines` lines, each with the time the sandbox printed it."""
    numbers = " ".join(str(i) for i in range(1, lines + 1))
    # The pause first lets the page open (and watch) before the first line.
    return f"sleep 1.5; for i in {numbers}; do echo line-$i $(date +%s.%N); sleep {LOG_PAUSE}; done"


async def live_log(
    fleet: Fleet, admin: Account, params: Params, console: Console, kind: str
) -> list[float]:
    """Seconds from printed in the sandbox to shown in Chromium, for every line of every run."""
    delays: list[float] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            context = await browser.new_context(viewport=LAPTOP)
            page = await context.new_page()
            await sign_in(page, fleet.base, admin, path="/jobs")
            for n in range(params.log_runs):
                run = await asyncio.to_thread(
                    fleet.offload,
                    "run",
                    "--detach",
                    "--repo",
                    "demo",
                    "--",
                    "sh",
                    "-c",
                    log_command(params.log_lines),
                )
                if run.returncode != 0:
                    raise RuntimeError(f"offload run: {run.stderr or run.stdout}")
                job_id = int(run.stdout.strip().splitlines()[-1])
                await page.goto(f"{fleet.base}/jobs/{job_id}")
                await page.evaluate(WATCH)
                await page.wait_for_function(
                    f"() => Object.keys(window.linesSeen).length === {params.log_lines}",
                    timeout=120_000,
                )
                seen: dict[str, list[float]] = await page.evaluate("() => window.linesSeen")
                got = [shown - printed for printed, shown in seen.values()]
                delays += got
                note(
                    console,
                    f"  {kind}: live log run {n + 1}/{params.log_runs}: job {job_id}, "
                    f"{len(got)} lines, median {statistics.median(got):.2f} s, "
                    f"max {max(got):.2f} s",
                )
                await asyncio.to_thread(fleet.wait_state, job_id, {"completed"}, 120)
        finally:
            await browser.close()
    return delays


# -- first visit ----------------------------------------------------------------------------


def first_visit(base: str, seeded: Seeded) -> dict[str, Any]:
    """What a fresh client downloads to sign in and open the home, batch change and preview
    pages, with each referenced asset once: bytes as sent and gzip-compressed (level 6)."""
    fetched: list[dict[str, Any]] = []
    seen_assets: set[str] = set()

    def keep(answer: httpx.Response, what: str) -> None:
        fetched.append(
            {
                "what": what,
                "url": str(answer.url),
                "status": answer.status_code,
                "content_type": answer.headers.get("content-type", ""),
                "content_encoding": answer.headers.get("content-encoding"),
                "sent_bytes": answer.num_bytes_downloaded,
                "body_bytes": len(answer.content),
                "gzip_bytes": len(gzip.compress(answer.content, compresslevel=6)),
            }
        )

    with httpx.Client(base_url=base, timeout=600, headers=HTML) as client:

        def visit(path: str, what: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
            answer = client.request(method, path, **kwargs)
            keep(answer, what)
            while answer.is_redirect:
                location = answer.headers["location"]
                answer = client.get(urljoin(str(answer.url), location))
                keep(answer, f"{what} (redirected)")
            if answer.status_code != 200:
                raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
            for asset in links_of(answer.text).assets:
                url = urljoin(str(answer.url), html.unescape(asset))
                if urlsplit(url).netloc != urlsplit(base).netloc or url in seen_assets:
                    continue
                seen_assets.add(url)
                got = client.get(url)
                if got.status_code != 200:
                    raise RuntimeError(f"GET {url}: {got.status_code}")
                keep(got, "asset")
            return answer

        visit("/", "home, signed out")
        visit(
            "/sign-in",
            "sign in",
            method="POST",
            data={"username": USER, "password": PASSWORD, "next": "/"},
        )
        visit(f"/batch-changes/{USER}/{CHANGE}", "batch change")
        visit(f"/batch-specs/{seeded.previewed}/preview", "preview")
    kinds: dict[str, dict[str, int]] = {}
    for item in fetched:
        kind = kind_of(item["content_type"])
        totals = kinds.setdefault(kind, {"sent_bytes": 0, "gzip_bytes": 0})
        totals["sent_bytes"] += item["sent_bytes"]
        totals["gzip_bytes"] += item["gzip_bytes"]
    return {
        "responses": fetched,
        "by_kind": kinds,
        "sent_bytes": sum(i["sent_bytes"] for i in fetched),
        "gzip_bytes": sum(i["gzip_bytes"] for i in fetched),
        "server_compresses": any(i["content_encoding"] for i in fetched),
    }


def kind_of(content_type: str) -> str:
    """html, css, javascript, image or other, from a Content-Type."""
    for word, kind in (
        ("html", "html"),
        ("css", "css"),
        ("javascript", "javascript"),
        ("image", "image"),
    ):
        if word in content_type:
            return kind
    return "none (redirects)" if not content_type else "other"


# -- one database ---------------------------------------------------------------------------


def one_database(kind: str, params: Params, console: Console) -> dict[str, Any]:
    """Seed, then every measurement, on a fresh database of `kind`."""
    with (
        tempfile.TemporaryDirectory(prefix="offload-bench-web-") as tmp,
        database(
            params.postgres_url if kind == "postgresql" else None,
            Path(tmp),
            source="--postgres",
            keep=params.keep,
        ) as url,
    ):
        scratch = Path(tmp)
        # The sandbox's job user passes through it to the executor's workspaces.
        scratch.chmod(0o711)
        fleet = Fleet(url, scratch / "data")
        migrated = fleet.offload("migrate", "up")
        if migrated.returncode != 0:
            raise RuntimeError(f"offload migrate up: {migrated.stderr or migrated.stdout}")
        make_repo(scratch / "src" / "demo", {"README.md": "A repository to run jobs on.\n"})
        try:
            fleet.start_server()
            admin = first_admin(fleet)
            added = fleet.offload("repos", "add", str(scratch / "src" / "demo"), "--name", "demo")
            if added.returncode != 0:
                raise RuntimeError(f"offload repos add: {added.stderr or added.stdout}")
            note(console, f"{kind}: seeding {params.changesets} changesets")
            seeded = asyncio.run(seed(url, params.changesets, console))
            paths = page_paths(seeded)
            runs = []
            for n in range(params.runs):
                measured = measure_pages(fleet, seeded, params, paths, n)
                runs.append(measured)
                p50s = {k: percentile(v, 50) for k, v in measured["samples_ms"].items()}
                note(
                    console,
                    f"  {kind}: run {n + 1}/{params.runs}: cold preview "
                    f"{measured['cold_preview_ms']:.0f} ms; p50 "
                    + ", ".join(f"{k} {v:.1f}" for k, v in p50s.items())
                    + " ms",
                )
            note(console, f"  {kind}: the pages' reads alone, in-process")
            reads = asyncio.run(breakdown(url, seeded, params))
            note(console, f"  {kind}: first visit")
            visit = first_visit(fleet.base, seeded)
            note(console, f"  {kind}: live log, {params.log_runs} x {params.log_lines} lines")
            fleet.start_executor("bench-live", slots=1)
            delays = asyncio.run(live_log(fleet, admin, params, console, kind))
        finally:
            fleet.stop_all()
        problems = [
            line.rstrip()
            for process in [p for p in (fleet.server,) if p is not None] + fleet.executors
            for line in process.lines
            if re.search(r"\b(ERROR|Traceback|CRITICAL)\b", line)
        ]
    runs_figures = [{"figures": page_figures(kind, r)} for r in runs]
    figures = medians(runs_figures)
    log = spread(delays)
    figures |= {f"{kind}.live_log.{k}_s": v for k, v in log.items()}
    figures[f"{kind}.live_log.lines"] = float(len(delays))
    figures[f"{kind}.first_visit.sent_bytes"] = float(visit["sent_bytes"])
    figures[f"{kind}.first_visit.gzip_bytes"] = float(visit["gzip_bytes"])
    figures |= {f"{kind}.read.{k}_ms": v for k, v in reads.items()}
    figures |= {f"{kind}.seed.{k}_s": v for k, v in seeded.timings_s.items()}
    return {
        "figures": figures,
        "runs": [r | {"figures": f["figures"]} for r, f in zip(runs, runs_figures, strict=True)],
        "paths": {k: v[0] for k, v in paths.items()},
        "live_log_delays_s": delays,
        "first_visit": visit,
        "server_problems": problems,
    }


# -- reporting ------------------------------------------------------------------------------


def targets(meds: dict[str, float], databases: tuple[str, ...]) -> list[dict[str, Any]]:
    """The targets, read from the figures."""
    goals = []

    def goal(target: str, limit: float, value: float, unit: str, acceptance: bool) -> None:
        goals.append(
            {
                "target": target,
                "goal": limit,
                "value": value,
                "unit": unit,
                "met": value <= limit,
                "ratio": value / limit,
                "acceptance": acceptance,
            }
        )

    for kind in databases:
        for name in PAGES:
            goal(f"{kind}: {name} p50", PAGE_TARGET_MS,
                 meds[f"{kind}.page.{name}.p50_ms"], "ms", True)  # fmt: skip
        goal(f"{kind}: every page p50", PAGE_TARGET_MS,
             meds[f"{kind}.page.all.p50_ms"], "ms", False)  # fmt: skip
        goal(f"{kind}: preview, first request (plan computed)", PAGE_TARGET_MS,
             meds[f"{kind}.preview_cold.ms"], "ms", False)  # fmt: skip
        goal(f"{kind}: batch change, first request (summary counted)", PAGE_TARGET_MS,
             meds[f"{kind}.change_cold.ms"], "ms", False)  # fmt: skip
        goal(f"{kind}: live log delay p50", LOG_TARGET_S,
             meds[f"{kind}.live_log.p50_s"], "s", True)  # fmt: skip
        goal(f"{kind}: first visit, gzip-compressed", BYTES_TARGET / 1000,
             meds[f"{kind}.first_visit.gzip_bytes"] / 1000, "KB", True)  # fmt: skip
        goal(f"{kind}: first visit, as sent", BYTES_TARGET / 1000,
             meds[f"{kind}.first_visit.sent_bytes"] / 1000, "KB", False)  # fmt: skip
    return goals


def fmt(value: float | None, spec: str = ".1f") -> str:
    """`value` formatted with `spec`, or a dash."""
    return "-" if value is None else format(value, spec)


def print_summary(
    console: Console,
    params: Params,
    meds: dict[str, float],
    details: dict[str, Any],
    goals: list[dict[str, Any]],
) -> None:
    """Every figure, and the targets."""
    kinds = params.databases
    pages = Table(
        title=f"Page time, ms, {params.changesets} changesets: client-timed on 127.0.0.1, "
        f"{params.requests} sequential requests per page after {params.warmups} warm-ups; "
        f"medians of {params.runs} run(s), a fresh server each"
    )
    pages.add_column("page")
    for kind in kinds:
        pages.add_column(f"{kind} p50", justify="right")
        pages.add_column(f"{kind} p99", justify="right")
    for name in (*PAGES, "all"):
        cells = []
        for kind in kinds:
            cells += [
                fmt(meds[f"{kind}.page.{name}.p50_ms"]),
                fmt(meds[f"{kind}.page.{name}.p99_ms"]),
            ]
        pages.add_row(name, *cells)
    pages.add_row(
        "preview, first request",
        *(c for kind in kinds for c in (fmt(meds[f"{kind}.preview_cold.ms"]), "")),
    )
    pages.add_row(
        "batch change, first request",
        *(c for kind in kinds for c in (fmt(meds[f"{kind}.change_cold.ms"]), "")),
    )
    console.print(pages)
    console.print(
        "The first preview request on a fresh server computes the spec's plan (every changeset "
        "spec against every changeset); the server keeps it per spec state (batches.listing."
        f"PLANS_KEPT = {PLANS_KEPT} plans) and later pages of that preview read it. The first "
        "batch change request counts its burndown and statuses; a count that took longer than "
        f"{SUMMARY_CACHED_FROM * 1000:.0f} ms is kept ten times as long (at most "
        f"{SUMMARY_KEPT_AT_MOST:.0f} s), so later requests within that time read it and the "
        "p99 holds the recounts.",
        markup=False,
    )

    reads = Table(title="The pages' reads alone, in-process on the same database (median ms)")
    reads.add_column("read")
    for kind in kinds:
        reads.add_column(kind, justify="right")
    names = [k[len(f"{kinds[0]}.read.") : -3] for k in meds if k.startswith(f"{kinds[0]}.read.")]
    for name in names:
        reads.add_row(name, *(fmt(meds.get(f"{kind}.read.{name}_ms"), ".2f") for kind in kinds))
    console.print(reads)

    log = Table(
        title=f"Live log: printed in the sandbox -> shown in Chromium, {params.log_runs} job(s) "
        f"of {params.log_lines} lines (s)"
    )
    log.add_column("database")
    for column in ("lines", "p50", "p90", "max"):
        log.add_column(column, justify="right")
    for kind in kinds:
        log.add_row(
            kind,
            fmt(meds[f"{kind}.live_log.lines"], ".0f"),
            *(fmt(meds[f"{kind}.live_log.{p}_s"], ".2f") for p in ("p50", "p90", "max")),
        )
    console.print(log)
    console.print(
        f"The executor sends a running command's output every {FLUSH_INTERVAL:g} s "
        f"(executor.cmdlog.FLUSH_INTERVAL) and the page's stream reads the job every "
        f"{POLL_INTERVAL:g} s (web.livelog.POLL_INTERVAL): a line waits for both, about "
        f"{(FLUSH_INTERVAL + POLL_INTERVAL) / 2:.2f} s on average and up to "
        f"{FLUSH_INTERVAL + POLL_INTERVAL:.2f} s, before any HTTP or rendering.",
        markup=False,
    )

    visit = Table(
        title="First visit (sign in; home, batch change and preview pages; each asset once)"
    )
    visit.add_column("database")
    visit.add_column("kind")
    visit.add_column("as sent, KB", justify="right")
    visit.add_column("gzip -6, KB", justify="right")
    for kind in kinds:
        first = details[kind]["first_visit"]
        for name, totals in sorted(first["by_kind"].items()):
            visit.add_row(
                kind, name, fmt(totals["sent_bytes"] / 1000), fmt(totals["gzip_bytes"] / 1000)
            )
        visit.add_row(
            kind, "total", fmt(first["sent_bytes"] / 1000), fmt(first["gzip_bytes"] / 1000)
        )
        encoding = "compresses" if first["server_compresses"] else "does not compress"
        console.print(f"{kind}: the server {encoding} its responses (Content-Encoding)")
    console.print(visit)

    seeding = Table(title="Seeding, s")
    seeding.add_column("phase")
    for kind in kinds:
        seeding.add_column(kind, justify="right")
    phases = [k[len(f"{kinds[0]}.seed.") : -2] for k in meds if k.startswith(f"{kinds[0]}.seed.")]
    for phase in phases:
        seeding.add_row(phase, *(fmt(meds.get(f"{kind}.seed.{phase}_s"), ".2f") for kind in kinds))
    console.print(seeding)

    table = Table(title="Targets")
    for column in ("kind", "target", "goal", "measured", "ratio", "status"):
        table.add_column(
            column, justify="right" if column in ("goal", "measured", "ratio") else "left"
        )
    for goal in goals:
        status = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        table.add_row(
            "acceptance" if goal["acceptance"] else "info",
            goal["target"],
            f"<= {goal['goal']:g} {goal['unit']}",
            f"{goal['value']:.2f} {goal['unit']}",
            f"{goal['ratio']:.2f}x",
            status,
        )
    console.print(table)


def machine_info(params: Params) -> dict[str, Any]:
    """Where the benchmark ran."""
    postgres = None
    if "postgresql" in params.databases and params.postgres_url:
        postgres = asyncio.run(postgres_version(params.postgres_url))
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "databases": {
            "sqlite": f"SQLite {sqlite3.sqlite_version}",
            "postgresql": postgres,
        },
        "chromium": tool_version("chromium", "--version"),
        "load_1min": os.getloadavg()[0],
        **software(
            (
                "offload",
                "httpx",
                "fastapi",
                "starlette",
                "uvicorn",
                "asyncpg",
                "jinja2",
                "playwright",
            )
        ),
    }


async def postgres_version(url: str) -> str | None:
    """The version PostgreSQL at `url` reports, or None if it cannot be reached."""
    try:
        db = await open_database(DatabaseURL.parse(url, source="--postgres"), pool_size=1)
    except OSError:
        return None
    try:
        rows = await db.fetch("SHOW server_version")
        return f"PostgreSQL {next(iter(rows[0].values()))}"
    finally:
        await db.close()


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Params:
    """The benchmark's parameters from the command line."""
    env_url = os.environ.get("OFFLOAD_TEST_POSTGRES_URL")
    parser = argparse.ArgumentParser(
        description="The web interface at scale: server time of the batch change and preview\n"
        "pages with N changesets, the live log's delay from the sandbox to Chromium, and the\n"
        "bytes a first visit downloads; on SQLite and PostgreSQL. Run by hand, as root; see\n"
        "the module docstring.",
        epilog="examples:\n"
        "  .venv/bin/python bench/web.py                       # 45,000 changesets\n"
        "  .venv/bin/python bench/web.py --changesets 2000 --runs 5 --databases sqlite\n"
        "  .venv/bin/python bench/web.py --postgres postgresql://postgres@127.0.0.1/postgres",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--changesets", type=int, default=45_000, help="changesets to seed (default 45000)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="page-time runs, each on a fresh server; medians are reported (default 3)",
    )
    parser.add_argument(
        "--requests", type=int, default=30, help="timed requests per page per run (default 30)"
    )
    parser.add_argument(
        "--warmups", type=int, default=3, help="untimed requests per page first (default 3)"
    )
    parser.add_argument(
        "--samples", type=int, default=5, help="calls per read in the breakdown (default 5)"
    )
    parser.add_argument("--log-runs", type=int, default=3, help="live log jobs (default 3)")
    parser.add_argument(
        "--log-lines", type=int, default=11, help="lines each live log job prints (default 11)"
    )
    parser.add_argument(
        "--databases",
        default=None,
        help=f"comma-separated subset of {','.join(DATABASES)} (default: sqlite, and "
        "postgresql when a PostgreSQL URL is known)",
    )
    parser.add_argument(
        "--postgres",
        default=env_url,
        metavar="URL",
        help="a database on the PostgreSQL server where a scratch database is created and "
        "dropped (default $OFFLOAD_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the PostgreSQL database (its name is printed)"
    )
    args = parser.parse_args(argv)
    if args.databases is None:
        databases: tuple[str, ...] = ("sqlite", "postgresql") if args.postgres else ("sqlite",)
    else:
        databases = tuple(d.strip() for d in args.databases.split(",") if d.strip())
    unknown = set(databases) - set(DATABASES)
    if unknown or not databases:
        parser.error(f"unknown databases {sorted(unknown)}; choose from {','.join(DATABASES)}")
    if "postgresql" in databases and not args.postgres:
        parser.error("postgresql needs --postgres URL (or $OFFLOAD_TEST_POSTGRES_URL)")
    counts = (args.changesets, args.runs, args.requests, args.samples, args.log_runs)
    if min(counts) < 1 or args.log_lines < 1 or args.warmups < 0:
        parser.error("every count must be positive")
    if args.changesets < 200:
        parser.error("--changesets must be at least 200: the pages measured are 50 rows deep")
    return Params(
        changesets=args.changesets,
        runs=args.runs,
        requests=args.requests,
        warmups=args.warmups,
        samples=args.samples,
        log_runs=args.log_runs,
        log_lines=args.log_lines,
        databases=databases,
        postgres_url=args.postgres,
        keep=args.keep,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary and write the results."""
    params = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so that the processes started here stop and databases drop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started_at = datetime.now(UTC)
    machine = machine_info(params)
    note(
        console,
        f"web: {params.changesets} changesets, {', '.join(params.databases)}, "
        f"{params.runs} run(s), {machine['cpu_count']} CPUs, load {machine['load_1min']:.1f}",
    )
    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    try:
        for kind in params.databases:
            result = one_database(kind, params, console)
            figures |= result.pop("figures")
            details[kind] = result
    finally:
        # The spec parsers the seeding started (processes of their own).
        shared().close()
    goals = targets(figures, params.databases)
    document = {
        "benchmark": NAME,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": asdict(params)
        | {
            "postgres_url": DatabaseURL.parse(params.postgres_url).redacted()
            if params.postgres_url
            else None,
            "days": DAYS,
            "log_pause_s": LOG_PAUSE,
            "flush_interval_s": FLUSH_INTERVAL,
            "livelog_poll_interval_s": POLL_INTERVAL,
            "plans_kept": PLANS_KEPT,
        },
        "definitions": {
            "page.NAME.p50_ms, p99_ms": "one run's percentiles of sequential GETs by a signed-in "
            "client on 127.0.0.1 (send to last byte); the figure is the median over the runs",
            "preview_cold.ms": "the first preview request on a fresh server: the plan computed",
            "change_cold.ms": "the first batch change request on a fresh server: the summary "
            "(burndown, status counts) counted",
            "read.NAME_ms": "one read a page makes, alone, in-process (median of --samples)",
            "live_log.*_s": "the line's time printed in the sandbox -> first seen in the page",
            "first_visit.sent_bytes": "bodies as the server sent them (Content-Encoding)",
            "first_visit.gzip_bytes": "each body gzip-compressed at level 6, summed",
            "seed.*_s": "seconds each seeding phase took",
        },
        "figures": figures,
        "details": details,
        "targets": goals,
    }
    path = write_results(document, NAME, default=str)
    print_summary(console, params, figures, details, goals)
    problems = [line for kind in params.databases for line in details[kind]["server_problems"]]
    if problems:
        console.print(f"[yellow]the processes printed {len(problems)} error lines, e.g.:[/yellow]")
        for line in problems[:5]:
            console.print(line, markup=False)
    console.print(f"results: {path} (and {RESULTS / f'{NAME}-latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
