"""What authentication costs on offload's HTTP API, and how soon a revoked token stops working.

Every route of the API outside ``/.executors/`` needs a principal: a personal access token in
``Authorization: token <value>``. The server checks a token against the database once and then
trusts it for ``offload.identity.authenticator.CACHE_TTL`` seconds (2 s), so the check stays
cheap and a revoked token still stops working soon. This benchmark measures both sides of that
bargain, on SQLite (a temporary file) and on PostgreSQL (a scratch database created and dropped
on the server of ``--postgres-url``), each in a fresh database for every run.

For each run and each database, everything runs as in production: ``offload migrate up``, an
``offload server`` (its first start prints the site admin's token), a one-commit git repository
added with ``offload repos add``, a plain user ``bench`` made by the admin through
``POST /api/users`` and a token of theirs (``POST /api/users/bench/tokens``). The plain user's
token, the common case, is used for every measured request. No executor runs: jobs wait queued.

1. ``GET /api/jobs/{id}``: ``--get-requests`` (2,000) sequential requests on one kept-alive
   httpx client after a warm-up (p50/p99 ms), then ``--concurrency`` (8) asyncio tasks on one
   client with as many connections for ``--duration`` (10) seconds: requests/s, the p50/p99
   under load and the server's CPU time per request (from ``/proc``).
2. ``POST /api/jobs`` (``{"repo": ..., "command": ["true"]}``): likewise, with
   ``--post-requests`` (500) sequential requests.
3. The token check alone, in this process, on the same database:
   ``Authenticator(db, Sessions(db)).check_token(value)``. *Warm*: ``--warm-checks`` (100,000)
   calls served by the cache (the cache's refresh every CACHE_TTL is included); *cold*:
   ``--cold-checks`` (2,000) calls after ``forget()``, each reading the database; *unknown*:
   as many calls with a token that does not exist (401; never cached), for information.
   The ratio of the check's p50 to the GET's p50 says what share of a request the check is;
   the API cannot serve a request without it, so there is no unauthenticated floor to compare.
4. Revocation, ``--revocations`` (3) times each: a fresh token is used once (cached), revoked
   with ``DELETE /api/users/bench/tokens/{id}`` and then polled with ``GET /api/jobs/{id}``
   every 10 ms until it answers 401, timed from the moment the DELETE is sent. *Same server*:
   the server that revoked it (it clears its cache). *Another server*: a second ``offload
   server`` process on the same database, which cached the token just before the revocation:
   its cache is the only thing that delays the refusal, so this is the worst case. The time
   the last still-accepted request was sent is recorded too: the refusal happened between it
   and the 401, and it is bounded by CACHE_TTL (the 401 itself comes up to one poll later).

Targets (medians of the runs): the warm token check **p50 <= 0.3 ms**; a revoked token is
refused **within 5 s** (the slowest revocation, on the other server). The cold check, the
unknown token and ``cross-process <= CACHE_TTL`` are shown for information.

Results go to ``bench/results/api_auth-<UTC timestamp>.json`` (and
``bench/results/api_auth-latest.json``): the machine, the parameters, every run's figures and
the medians. The benchmark is run by hand, never as a test:

    .venv/bin/python bench/api_auth.py                  # 3 runs, SQLite and PostgreSQL
    .venv/bin/python bench/api_auth.py --runs 1 --duration 3 --databases sqlite

PostgreSQL: ``--postgres-url`` (default ``$OFFLOAD_TEST_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/test``) names any database on a server where the
benchmark may create and drop databases; when that default cannot be reached, the password
``bin/test`` sets for a PostgreSQL it installs (``offload-test``) is tried. The client shares
the machine with the server: on a small machine the requests/s figures are bounded by both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import HTTPException
from rich.console import Console
from rich.table import Table

from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.identity.authenticator import CACHE_TTL, Authenticator
from offload.identity.sessions import Sessions
from provenance import software
from report import RESULTS, medians, percentile, write_results
from scratchdb import connect, database

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support")]
from fleet import Fleet, Process, make_repo, spawn  # noqa: E402

NAME = "api_auth"
DATABASES = ("sqlite", "postgresql")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# The password bin/test gives the PostgreSQL it installs on a fresh machine.
FALLBACK_POSTGRES_URL = "postgresql://postgres:offload-test@127.0.0.1:5432/test"
REPO = "demo"
USER = "bench"
JOB_BODY = {"repo": REPO, "command": ["true"]}
GET_WARMUP = 200
POST_WARMUP = 50
POLL_INTERVAL = 0.01
REVOKE_TIMEOUT = 30.0
CHECK_TARGET_MS = 0.3
REVOKE_TARGET_S = 5.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Params:
    """What one invocation measures."""

    runs: int
    databases: tuple[str, ...]
    get_requests: int
    post_requests: int
    concurrency: int
    duration: float
    warm_checks: int
    cold_checks: int
    revocations: int
    postgres_url: str


# -- measuring helpers --------------------------------------------------------------------


def spread(samples: list[float]) -> dict[str, float]:
    """p50, p99, mean and max of `samples`."""
    return {
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "mean": statistics.fmean(samples),
        "max": max(samples),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (its own threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), counted after the command name's closing parenthesis.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


class ServerError(RuntimeError):
    """The server answered a measured request with an unexpected status."""


# -- the system under test ------------------------------------------------------------------


async def _reachable(url: str) -> str | None:
    """None if PostgreSQL at `url` accepts a connection, else why not."""
    parsed = DatabaseURL.parse(url, source="--postgres-url")
    try:
        conn = await connect(parsed, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return str(exc) or type(exc).__name__
    await conn.close()
    return None


def postgres_admin_url(url: str, explicit: bool) -> str:
    """The PostgreSQL URL to create scratch databases from; RuntimeError if none answers."""
    why = asyncio.run(_reachable(url))
    if why is None:
        return url
    if not explicit:
        fallback = asyncio.run(_reachable(FALLBACK_POSTGRES_URL))
        if fallback is None:
            return FALLBACK_POSTGRES_URL
    raise RuntimeError(
        f"PostgreSQL at {DatabaseURL.parse(url).redacted()} is not reachable ({why}); "
        "start one, pass --postgres-url or set OFFLOAD_TEST_POSTGRES_URL, "
        "or run with --databases sqlite"
    )


def auth(token: str) -> dict[str, str]:
    """The Authorization header of `token`."""
    return {"Authorization": f"token {token}"}


def expect(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    """The JSON body of `response` (empty for 204); ServerError unless it has `status`."""
    if response.status_code != status:
        raise ServerError(f"{what}: {response.status_code} {response.text[:500]}")
    return dict(response.json()) if response.content else {}


def new_token(admin: httpx.Client, note: str) -> tuple[str, int]:
    """A new token of the plain user, made by the admin: its value and its id."""
    made = expect(admin.post(f"/api/users/{USER}/tokens", json={"note": note}), 201, "create token")
    return str(made["token"]), int(made["id"])


def start_second_server(fleet: Fleet) -> tuple[Process, str]:
    """Another `offload server` process on the fleet's database: the process and its URL."""
    env = {**fleet.env}
    env.pop("OFFLOAD_TOKEN", None)
    second = spawn("server-2", ["server", "--port", "0"], env)
    found = second.wait_for(r"offload server listening on http://127\.0\.0\.1:(\d+)")
    return second, f"http://127.0.0.1:{found.group(1)}"


def server_problems(processes: list[Process]) -> list[str]:
    """The lines the servers printed that look like trouble (tracebacks, errors, warnings)."""
    pattern = re.compile(r"\b(ERROR|CRITICAL|WARNING)\b|Traceback|\" 5\d\d ")
    lines = []
    for process in processes:
        lines.extend(f"{process.name}: {line.rstrip()}" for line in process.lines)
    return [line for line in lines if pattern.search(line)][:200]


# -- HTTP ---------------------------------------------------------------------------------


Send = Callable[[httpx.Client], httpx.Response]
SendAsync = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def sequential(
    client: httpx.Client, send: Send, status: int, warmup: int, count: int
) -> list[float]:
    """Latencies (ms) of `count` requests one after another, after `warmup` discarded ones."""
    times = []
    for n in range(warmup + count):
        start = time.perf_counter()
        response = send(client)
        elapsed = (time.perf_counter() - start) * 1000
        expect(response, status, f"{response.request.method} {response.request.url.path}")
        if n >= warmup:
            times.append(elapsed)
    return times


async def concurrent(
    base: str, token: str, send: SendAsync, status: int, tasks: int, duration: float, pid: int
) -> dict[str, Any]:
    """`tasks` clients sending requests for `duration` seconds: rate, latencies, server CPU."""
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    async with httpx.AsyncClient(
        base_url=base, headers=auth(token), timeout=60, limits=limits
    ) as client:
        # One request per connection first, so that every connection is open when timing starts.
        for response in await asyncio.gather(*(send(client) for _ in range(tasks))):
            expect(response, status, "warm-up")
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        samples: list[str] = []

        async def one_client(deadline: float) -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await send(client)
                latencies.append((time.perf_counter() - start) * 1000)
                statuses[response.status_code] += 1
                if response.status_code != status and len(samples) < 5:
                    samples.append(f"{response.status_code} {response.text[:300]}")

        cpu_before, own_before = cpu_seconds(pid), time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(one_client(start + duration) for _ in range(tasks)))
        elapsed = time.perf_counter() - start
        cpu_after, own_after = cpu_seconds(pid), time.process_time()
    ok = statuses[status]
    return {
        "requests_per_s": ok / elapsed,
        "seconds": elapsed,
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected": samples,
        "latency_ms": spread(latencies),
        "server_cpu_ms_per_request": (cpu_after - cpu_before) * 1000 / max(ok, 1),
        "server_cpu_share": (cpu_after - cpu_before) / elapsed,
        "client_cpu_share": (own_after - own_before) / elapsed,
    }


# -- the token check in-process -------------------------------------------------------------


async def check_costs(url: DatabaseURL, token: str, params: Params) -> dict[str, list[float]]:
    """Latencies (ms) of the in-process token check: warm, cold and an unknown token."""
    db = await open_database(DatabaseURL.parse(url.raw))
    try:
        checker = Authenticator(db, Sessions(db))
        for _ in range(100):
            await checker.check_token(token)
        warm = []
        for _ in range(params.warm_checks):
            start = time.perf_counter_ns()
            await checker.check_token(token)
            warm.append((time.perf_counter_ns() - start) / 1e6)
        for _ in range(20):
            checker.forget(USER)
            await checker.check_token(token)
        cold = []
        for _ in range(params.cold_checks):
            checker.forget(USER)
            start = time.perf_counter_ns()
            await checker.check_token(token)
            cold.append((time.perf_counter_ns() - start) / 1e6)
        unknown_value = "offload_" + "0" * 40
        unknown = []
        for _ in range(params.cold_checks):
            start = time.perf_counter_ns()
            try:
                await checker.check_token(unknown_value)
            except HTTPException as exc:
                if exc.status_code != 401:
                    raise
            else:
                raise ServerError("an unknown token was accepted")
            unknown.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        await db.close()
    return {"warm": warm, "cold": cold, "unknown": unknown}


# -- revocation -----------------------------------------------------------------------------


def refused_after(
    admin: httpx.Client, token_id: int, poll: httpx.Client, token: str, job_id: int
) -> tuple[float, float]:
    """Revoke `token_id` and poll with `token` until `poll`'s server answers 401.

    Returns, in seconds from sending the revocation: when the 401 arrived, and when the last
    request that was still accepted was sent (0 when none was): the server refused the token
    at some moment between the two.
    """
    start = time.perf_counter()
    expect(admin.delete(f"/api/users/{USER}/tokens/{token_id}"), 204, "revoke token")
    last_accepted = 0.0
    deadline = start + REVOKE_TIMEOUT
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        response = poll.get(f"/api/jobs/{job_id}", headers=auth(token))
        if response.status_code == 401:
            return time.perf_counter() - start, last_accepted
        expect(response, 200, "GET /api/jobs/{id} with a token being revoked")
        last_accepted = sent - start
        time.sleep(POLL_INTERVAL)
    return float("inf"), last_accepted


def revocation(
    fleet: Fleet, admin: httpx.Client, job_id: int, count: int
) -> tuple[dict[str, list[float]], list[str]]:
    """Seconds until a revoked token is refused, by the same server and by another one (and
    until the last request it still accepted)."""
    times: dict[str, list[float]] = {
        name: []
        for where in ("same_server", "other_server")
        for name in (where, f"{where}_last_accepted")
    }

    def note(where: str, measured: tuple[float, float]) -> None:
        times[where].append(measured[0])
        times[f"{where}_last_accepted"].append(measured[1])

    with httpx.Client(base_url=fleet.base, timeout=60) as first:
        for n in range(count):
            token, token_id = new_token(admin, f"revoke-same-{n}")
            expect(first.get(f"/api/jobs/{job_id}", headers=auth(token)), 200, "before revoke")
            note("same_server", refused_after(admin, token_id, first, token, job_id))
    second, base = start_second_server(fleet)
    try:
        with (
            httpx.Client(base_url=fleet.base, timeout=60) as first,
            httpx.Client(base_url=base, timeout=60) as other,
        ):
            for n in range(count):
                token, token_id = new_token(admin, f"revoke-other-{n}")
                expect(first.get(f"/api/jobs/{job_id}", headers=auth(token)), 200, "first")
                # The second server has never seen this token: this request caches it now, so
                # its cache holds it for a whole CACHE_TTL after the revocation, the worst case.
                expect(other.get(f"/api/jobs/{job_id}", headers=auth(token)), 200, "second")
                note("other_server", refused_after(admin, token_id, other, token, job_id))
    finally:
        second.stop(timeout=60)
    return times, server_problems([second])


# -- one run --------------------------------------------------------------------------------


def one_database(kind: str, params: Params, console: Console) -> dict[str, Any]:
    """Every measurement on a fresh database of `kind`, through a fresh server."""
    with (
        tempfile.TemporaryDirectory(prefix="offload-bench-auth-") as tmp,
        database(
            None if kind == "sqlite" else params.postgres_url, Path(tmp), source="--postgres-url"
        ) as url,
    ):
        scratch = Path(tmp)
        fleet = Fleet(url, scratch / "data")
        migrated = fleet.offload("migrate", "up")
        if migrated.returncode != 0:
            raise RuntimeError(f"offload migrate up: {migrated.stderr or migrated.stdout}")
        make_repo(scratch / "src" / REPO, {"README.md": "A repository to submit jobs on.\n"})
        try:
            fleet.start_server()
            assert fleet.server is not None
            added = fleet.offload("repos", "add", str(scratch / "src" / REPO), "--name", REPO)
            if added.returncode != 0:
                raise RuntimeError(f"offload repos add: {added.stderr or added.stdout}")
            with httpx.Client(base_url=fleet.base, timeout=60, headers=fleet.headers) as admin:
                expect(admin.post("/api/users", json={"username": USER}), 201, "create user")
                token, _ = new_token(admin, "bench")
                with httpx.Client(base_url=fleet.base, timeout=60, headers=auth(token)) as client:
                    job = expect(client.post("/api/jobs", json=JOB_BODY), 201, "POST /api/jobs")
                    job_id = int(job["id"])
                    path = f"/api/jobs/{job_id}"
                    console.print(f"  {kind}: GET {path}, {params.get_requests} sequential")
                    get_seq = sequential(
                        client, lambda c: c.get(path), 200, GET_WARMUP, params.get_requests
                    )
                    console.print(f"  {kind}: POST /api/jobs, {params.post_requests} sequential")
                    post_seq = sequential(
                        client,
                        lambda c: c.post("/api/jobs", json=JOB_BODY),
                        201,
                        POST_WARMUP,
                        params.post_requests,
                    )
                pid = fleet.server.popen.pid
                console.print(
                    f"  {kind}: {params.concurrency} concurrent clients, "
                    f"{params.duration:g} s each for GET and POST"
                )
                get_load = asyncio.run(
                    concurrent(
                        fleet.base,
                        token,
                        lambda c: c.get(path),
                        200,
                        params.concurrency,
                        params.duration,
                        pid,
                    )
                )
                post_load = asyncio.run(
                    concurrent(
                        fleet.base,
                        token,
                        lambda c: c.post("/api/jobs", json=JOB_BODY),
                        201,
                        params.concurrency,
                        params.duration,
                        pid,
                    )
                )
                console.print(
                    f"  {kind}: token check in-process, {params.warm_checks} warm and "
                    f"{params.cold_checks} cold calls"
                )
                checks = asyncio.run(check_costs(url, token, params))
                console.print(f"  {kind}: revocation, {params.revocations} x 2")
                revoked, second_problems = revocation(fleet, admin, job_id, params.revocations)
        finally:
            fleet.stop_all()
        problems = server_problems([fleet.server] if fleet.server else []) + second_problems
    return summarize(kind, get_seq, post_seq, get_load, post_load, checks, revoked, problems)


def summarize(
    kind: str,
    get_seq: list[float],
    post_seq: list[float],
    get_load: dict[str, Any],
    post_load: dict[str, Any],
    checks: dict[str, list[float]],
    revoked: dict[str, list[float]],
    problems: list[str],
) -> dict[str, Any]:
    """One database's figures, flat (name -> value), with the details beside them."""
    flat: dict[str, float] = {}
    for name, values in (("get", get_seq), ("post", post_seq)):
        stats = spread(values)
        flat[f"{kind}.{name}.p50_ms"] = stats["p50"]
        flat[f"{kind}.{name}.p99_ms"] = stats["p99"]
        flat[f"{kind}.{name}.mean_ms"] = stats["mean"]
    for name, load in (("get", get_load), ("post", post_load)):
        flat[f"{kind}.{name}.requests_per_s"] = load["requests_per_s"]
        flat[f"{kind}.{name}.load_p50_ms"] = load["latency_ms"]["p50"]
        flat[f"{kind}.{name}.load_p99_ms"] = load["latency_ms"]["p99"]
        flat[f"{kind}.{name}.server_cpu_ms_per_request"] = load["server_cpu_ms_per_request"]
    for name, values in checks.items():
        stats = spread(values)
        flat[f"{kind}.check_{name}.p50_ms"] = stats["p50"]
        flat[f"{kind}.check_{name}.p99_ms"] = stats["p99"]
        flat[f"{kind}.check_{name}.mean_ms"] = stats["mean"]
    for name in ("warm", "cold"):
        check = flat[f"{kind}.check_{name}.p50_ms"]
        flat[f"{kind}.check_{name}_over_get.p50"] = check / flat[f"{kind}.get.p50_ms"]
        flat[f"{kind}.check_{name}_over_post.p50"] = check / flat[f"{kind}.post.p50_ms"]
    for name, values in revoked.items():
        flat[f"{kind}.revoke_{name}.max_s"] = max(values)
        flat[f"{kind}.revoke_{name}.median_s"] = statistics.median(values)
    unexpected = sum(
        n for load in (get_load, post_load) for code, n in load["statuses"].items()
        if code not in ("200", "201")
    )  # fmt: skip
    flat[f"{kind}.unexpected_statuses"] = float(unexpected)
    return {
        "figures": flat,
        "load": {"get": get_load, "post": post_load},
        "revocation_s": revoked,
        "server_problems": problems,
    }


def one_run(params: Params, console: Console) -> dict[str, Any]:
    """Every database of `params`, each fresh."""
    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    for kind in params.databases:
        result = one_database(kind, params, console)
        figures |= result.pop("figures")
        details[kind] = result
    return {"figures": figures, "details": details}


def targets(meds: dict[str, float], databases: tuple[str, ...]) -> list[dict[str, Any]]:
    """The targets, read from the medians of the runs."""
    goals = []

    def goal(target: str, limit: float, value: float, unit: str, acceptance: bool) -> None:
        goals.append(
            {
                "target": target,
                "goal": limit,
                "value": value,
                "unit": unit,
                "met": value <= limit,
                "acceptance": acceptance,
            }
        )

    for kind in databases:
        goal(f"{kind}: token check p50 (warm)", CHECK_TARGET_MS,
             meds[f"{kind}.check_warm.p50_ms"], "ms", True)  # fmt: skip
        goal(f"{kind}: token check p50 (cold)", CHECK_TARGET_MS,
             meds[f"{kind}.check_cold.p50_ms"], "ms", False)  # fmt: skip
        goal(f"{kind}: revoked token refused, same server", REVOKE_TARGET_S,
             meds[f"{kind}.revoke_same_server.max_s"], "s", True)  # fmt: skip
        goal(f"{kind}: revoked token refused, another server", REVOKE_TARGET_S,
             meds[f"{kind}.revoke_other_server.max_s"], "s", True)  # fmt: skip
        goal(f"{kind}: another server accepts it, at most CACHE_TTL", CACHE_TTL,
             meds[f"{kind}.revoke_other_server_last_accepted.max_s"], "s", False)  # fmt: skip
    return goals


# -- reporting ------------------------------------------------------------------------------


def postgres_version(url: str) -> str | None:
    """The version PostgreSQL at `url` reports, or None."""

    async def ask() -> str:
        conn = await connect(DatabaseURL.parse(url))
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None


def machine_info(params: Params) -> dict[str, Any]:
    """Where the benchmark ran."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "databases": {
            "sqlite": f"SQLite {sqlite3.sqlite_version}" if "sqlite" in params.databases else None,
            "postgresql": f"PostgreSQL {postgres_version(params.postgres_url)}"
            if "postgresql" in params.databases
            else None,
        },
        **software(("offload", "httpx", "fastapi", "starlette", "uvicorn", "asyncpg")),
    }


def fmt(value: float | None, spec: str = ".2f") -> str:
    """`value` formatted with `spec`, or a dash."""
    return "-" if value is None else format(value, spec)


def print_summary(
    console: Console, params: Params, meds: dict[str, float], goals: list[dict[str, Any]]
) -> None:
    """The medians, the check's share of a request, and the targets."""
    kinds = params.databases
    http = Table(
        title=f"API with a plain user's token: medians of {params.runs} run(s); sequential on "
        f"one kept-alive client, and {params.concurrency} concurrent clients for "
        f"{params.duration:g} s"
    )
    http.add_column("request")
    for column in (
        "p50 ms",
        "p99 ms",
        "req/s",
        "p50 ms, load",
        "p99 ms, load",
        "server CPU ms/req",
    ):
        http.add_column(column, justify="right")
    for kind in kinds:
        for name, label in (("get", "GET /api/jobs/{id}"), ("post", "POST /api/jobs")):
            key = f"{kind}.{name}"
            http.add_row(
                f"{kind}: {label}",
                fmt(meds[f"{key}.p50_ms"]),
                fmt(meds[f"{key}.p99_ms"]),
                fmt(meds[f"{key}.requests_per_s"], ".0f"),
                fmt(meds[f"{key}.load_p50_ms"]),
                fmt(meds[f"{key}.load_p99_ms"]),
                fmt(meds[f"{key}.server_cpu_ms_per_request"]),
            )
    console.print(http)

    check = Table(title="The token check alone, in-process (Authenticator.check_token)")
    check.add_column("check")
    for column in ("p50 ms", "p99 ms", "mean ms", "p50 / GET p50", "p50 / POST p50"):
        check.add_column(column, justify="right")
    for kind in kinds:
        for name, label in (
            ("warm", "warm (cached)"),
            ("cold", "cold (reads the database)"),
            ("unknown", "unknown token, 401 (info)"),
        ):
            key = f"{kind}.check_{name}"
            over_get = meds.get(f"{key}_over_get.p50")
            over_post = meds.get(f"{key}_over_post.p50")
            check.add_row(
                f"{kind}: {label}",
                fmt(meds[f"{key}.p50_ms"], ".4f"),
                fmt(meds[f"{key}.p99_ms"], ".4f"),
                fmt(meds[f"{key}.mean_ms"], ".4f"),
                "-" if over_get is None else f"{over_get:.2%}",
                "-" if over_post is None else f"{over_post:.2%}",
            )
    console.print(check)

    revoke = Table(
        title=f"Revoked token: seconds from the DELETE sent until refused (401 received), and "
        f"until the last request still accepted was sent (CACHE_TTL = {CACHE_TTL:g} s)"
    )
    revoke.add_column("database")
    for column in (
        "same server: refused, median",
        "max",
        "other server: refused, median",
        "max",
        "last accepted, max",
    ):
        revoke.add_column(column, justify="right")
    for kind in kinds:
        revoke.add_row(
            kind,
            fmt(meds[f"{kind}.revoke_same_server.median_s"], ".3f"),
            fmt(meds[f"{kind}.revoke_same_server.max_s"], ".3f"),
            fmt(meds[f"{kind}.revoke_other_server.median_s"], ".3f"),
            fmt(meds[f"{kind}.revoke_other_server.max_s"], ".3f"),
            fmt(meds[f"{kind}.revoke_other_server_last_accepted.max_s"], ".3f"),
        )
    console.print(revoke)

    table = Table(title="Targets (medians of the runs)")
    for column in ("kind", "target", "goal", "measured", "status"):
        table.add_column(column, justify="right" if column in ("goal", "measured") else "left")
    for goal in goals:
        status = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        table.add_row(
            "acceptance" if goal["acceptance"] else "info",
            goal["target"],
            f"<= {goal['goal']:g} {goal['unit']}",
            f"{goal['value']:.4f} {goal['unit']}",
            status,
        )
    console.print(table)
    for kind in kinds:
        p50 = meds[f"{kind}.check_warm.p50_ms"]
        met = "met" if p50 <= CHECK_TARGET_MS else "missed"
        console.print(
            f"token check p50 = {p50:.4f} ms (target <= {CHECK_TARGET_MS:g} ms): {met} [{kind}]",
            markup=False,
        )
        for where in ("same_server", "other_server"):
            worst = meds[f"{kind}.revoke_{where}.max_s"]
            met = "met" if worst <= REVOKE_TARGET_S else "missed"
            console.print(
                f"revoked token refused by the {where.replace('_', ' ')} after {worst:.3f} s "
                f"(target <= {REVOKE_TARGET_S:g} s): {met} [{kind}]",
                markup=False,
            )


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Params:
    """The benchmark's parameters from the command line."""
    env_url = os.environ.get("OFFLOAD_TEST_POSTGRES_URL")
    parser = argparse.ArgumentParser(
        description="The cost of authentication on offload's HTTP API: GET /api/jobs/{id} and\n"
        "POST /api/jobs with a token (latency and requests/s), the token check alone\n"
        "in-process (warm and cold), and how soon a revoked token is refused by the same\n"
        "server and by another server process; on SQLite and PostgreSQL. Run by hand; see\n"
        "the module docstring.",
        epilog="example: .venv/bin/python bench/api_auth.py --runs 3\n"
        "quick check: .venv/bin/python bench/api_auth.py --runs 1 --duration 3 "
        "--databases sqlite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="repetitions; medians are reported (default 3)"
    )
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help=f"comma-separated subset of {','.join(DATABASES)} (default: both)",
    )
    parser.add_argument(
        "--get-requests", type=int, default=2000, help="sequential GETs per run (default 2000)"
    )
    parser.add_argument(
        "--post-requests", type=int, default=500, help="sequential POSTs per run (default 500)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="concurrent clients under load (default 8)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of load for GET and for POST (default 10)",
    )
    parser.add_argument(
        "--warm-checks", type=int, default=100_000, help="cached token checks (default 100000)"
    )
    parser.add_argument(
        "--cold-checks",
        type=int,
        default=2000,
        help="uncached token checks, and unknown-token checks (default 2000)",
    )
    parser.add_argument(
        "--revocations",
        type=int,
        default=3,
        help="revocations per run, on the same server and on another (default 3)",
    )
    parser.add_argument(
        "--postgres-url",
        default=env_url or DEFAULT_POSTGRES_URL,
        metavar="URL",
        help="a database on the PostgreSQL server where scratch databases are created and "
        "dropped (default $OFFLOAD_TEST_POSTGRES_URL or "
        f"{DEFAULT_POSTGRES_URL})",
    )
    args = parser.parse_args(argv)
    databases = tuple(d.strip() for d in args.databases.split(",") if d.strip())
    unknown = set(databases) - set(DATABASES)
    if unknown or not databases:
        parser.error(f"unknown databases {sorted(unknown)}; choose from {','.join(DATABASES)}")
    counts = (args.runs, args.get_requests, args.post_requests, args.concurrency)
    counts += (args.warm_checks, args.cold_checks, args.revocations)
    if min(counts) < 1 or args.duration <= 0:
        parser.error("every count and --duration must be positive")
    postgres_url = args.postgres_url
    if "postgresql" in databases:
        explicit = env_url is not None or any(a.startswith("--postgres-url") for a in argv or [])
        try:
            postgres_url = postgres_admin_url(postgres_url, explicit)
        except RuntimeError as exc:
            parser.error(str(exc))
    return Params(
        runs=args.runs,
        databases=databases,
        get_requests=args.get_requests,
        post_requests=args.post_requests,
        concurrency=args.concurrency,
        duration=args.duration,
        warm_checks=args.warm_checks,
        cold_checks=args.cold_checks,
        revocations=args.revocations,
        postgres_url=postgres_url,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary and write the results."""
    params = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so that the servers started here stop and databases drop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started_at = datetime.now(UTC)
    machine = machine_info(params)
    console.print(
        f"api auth: {', '.join(params.databases)}, {params.runs} run(s), "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, "
        f"offload {machine['packages']['offload']}"
    )
    runs = []
    for n in range(params.runs):
        console.print(f"run {n + 1}/{params.runs}")
        runs.append(one_run(params, console))
    meds = medians(runs)
    goals = targets(meds, params.databases)
    problems = [
        line
        for run in runs
        for kind in params.databases
        for line in run["details"][kind]["server_problems"]
    ]
    document = {
        "benchmark": NAME,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": asdict(params)
        | {
            "postgres_url": DatabaseURL.parse(params.postgres_url).redacted(),
            "get_warmup": GET_WARMUP,
            "post_warmup": POST_WARMUP,
            "revocation_poll_interval_s": POLL_INTERVAL,
            "cache_ttl_s": CACHE_TTL,
        },
        "definitions": {
            "get/post p50_ms, p99_ms": "sequential requests on one kept-alive httpx client",
            "requests_per_s": "answers with the expected status per second, concurrent clients",
            "server_cpu_ms_per_request": "server process CPU time during the load / answers",
            "check_warm": "Authenticator.check_token served by its cache",
            "check_cold": "Authenticator.check_token after forget(): reads the database",
            "check_unknown": "Authenticator.check_token of a token that does not exist (401)",
            "revoke_same_server": "DELETE sent on the server -> the same server answers 401",
            "revoke_other_server": "DELETE sent on the first server -> a second server process "
            "on the same database, which cached the token just before, answers 401",
            "revoke_*_last_accepted": "DELETE sent -> the last request that still answered 200 "
            "was sent (0: none); the server refused the token between it and the 401",
        },
        "runs": runs,
        "medians": meds,
        "targets": goals,
        "server_problems": problems,
    }
    path = write_results(document, NAME, default=str)
    print_summary(console, params, meds, goals)
    unexpected = {k: v for k, v in meds.items() if k.endswith("unexpected_statuses") and v}
    if unexpected:
        console.print(f"[yellow]unexpected statuses under load (medians): {unexpected}[/yellow]")
    if problems:
        console.print(f"[yellow]the servers printed {len(problems)} error lines, e.g.:[/yellow]")
        for line in problems[:5]:
            console.print(line, markup=False)
    console.print(f"results: {path} (and {RESULTS / f'{NAME}-latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
