"""Chaos on PostgreSQL: jobs run exactly once while executors, the server, the worker and the
database connections keep dying.

Each job's step appends one line `<tag> <attempt> <executor pid> <workspace>` to a file on
the host: the side effect of the job, as its handler sees it. A job may run twice only when
the executor that ran it first died after the step ended and before its markComplete
landed; its later run then carries a higher attempt number, in the file and in its logs.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fleet import Fleet, Process, make_repo

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.slow

JOBS = 500
EXECUTORS = 3
SLOTS = 3
# The chaos goes on until this many executors were killed and every restart was done (the
# jobs take longer to run), but no longer than CHAOS_SECONDS.
KILLS = 20
CHAOS_SECONDS = 120.0
# The queue's stalled_after (25 s) and a resetter pass bring back the last killed executor's
# jobs; then they run again.
SETTLE_SECONDS = 150.0
WORKER_ENV = {"OFFLOAD_RESETTER_INTERVAL": "1s"}
# The executor whose workspace a step ran in: <data>/executor-<name>/...
_EXECUTOR = re.compile(r"/executor-([\w.-]+)/")


@dataclass
class Chaos:
    """What the test did to the fleet: every executor process it started, and which died."""

    executors: dict[int, Process] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)
    server_restarts: int = 0
    worker_restarts: int = 0
    pool_resets: int = 0
    # When each thing happened and how long it took, for the report.
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        """Remember `text`, stamped with the seconds since the chaos began."""
        self.notes.append(f"  {time.monotonic() - self.started:6.1f}s {text}")

    @property
    def alive(self) -> set[int]:
        """The executor processes that were never killed."""
        return set(self.executors) - self.killed

    def summary(self) -> str:
        """The counts, as the report line has them."""
        return (
            f"executor kills {len(self.killed)}, server restarts {self.server_restarts}, "
            f"worker restarts {self.worker_restarts}, pool resets {self.pool_resets}"
        )


@dataclass(frozen=True)
class Run:
    """One line of the side-effect file: one run of a job's step."""

    attempt: int
    pid: int  # of the executor process that ran the step
    executor: str


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    """A server and a worker on a fresh database, with one repository."""
    # A root executor's steps run as an unprivileged uid: the executors' data and the file the
    # steps append to must be within its reach, which pytest's own directories are not.
    shared = Path(tempfile.mkdtemp(prefix="offload-chaos-"))
    shared.chmod(0o755)
    fleet = Fleet(db_url, shared / "data", job_queues="default")
    make_repo(tmp_path / "src" / "demo", {"README": "demo\n"})
    fleet.start_server()
    added = fleet.offload("repos", "add", str(tmp_path / "src" / "demo"), "--name", "demo")
    assert added.returncode == 0, added.stderr
    fleet.start_worker("queues.resetter", env=WORKER_ENV)
    try:
        yield fleet
    finally:
        fleet.stop_all()
        unmount_under(shared)
        shutil.rmtree(shared, ignore_errors=True)


def mounts_under(path: Path) -> list[str]:
    """Filesystems mounted below `path` (executors' workspace disks), deepest first."""
    lines = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    return sorted((p for p in points if p.startswith(f"{path}/")), key=len, reverse=True)


def unmount_under(path: Path) -> None:
    """Unmount what executors killed with SIGKILL left mounted below `path`."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def submit_all(fleet: Fleet, effects: Path) -> dict[str, int]:
    """Submit JOBS jobs, a few requests at a time; each job's id by its tag."""

    async def main() -> dict[str, int]:
        limit = asyncio.Semaphore(8)

        async def one(client: httpx.AsyncClient, tag: str) -> tuple[str, int]:
            # The step's shell is the executor's child, and this one's parent.
            line = (
                "read -r _ _ _ executor _ < /proc/$PPID/stat && "
                f'echo "{tag} $OFFLOAD_JOB_ATTEMPT $executor $HOME" >> {effects}'
            )
            body = {"repo": "demo", "command": ["sh", "-c", line]}
            async with limit:
                response = await client.post("/api/jobs", json=body)
            assert response.status_code == 201, response.text
            return tag, int(response.json()["id"])

        async with httpx.AsyncClient(base_url=fleet.base, headers=fleet.headers, timeout=60) as c:
            pairs = await asyncio.gather(*(one(c, f"tag-{n}") for n in range(JOBS)))
        return dict(pairs)

    return asyncio.run(main())


def counts(fleet: Fleet) -> dict[str, int]:
    """How many jobs are in each state, by the queue's counts; empty if the server could not
    say just now (it is restarting, or its database connections were cut)."""
    try:
        response = fleet.api("GET", "/api/queues")
    except httpx.TransportError:
        return {}
    if response.status_code != 200:
        return {}
    return dict(next(q["counts"] for q in response.json() if q["queue"] == "default"))


def unfinished(fleet: Fleet) -> int | None:
    """How many jobs are waiting or running; None if the server could not say just now."""
    now = counts(fleet)
    return now["queued"] + now["processing"] + now["errored"] if now else None


def states(fleet: Fleet) -> dict[int, dict[str, Any]]:
    """Every job as the API lists it, by id."""
    response = fleet.api("GET", "/api/jobs", params={"limit": JOBS})
    assert response.status_code == 200, response.text
    return {int(job["id"]): job for job in response.json()}


def reset_pool(url: DatabaseURL) -> int:
    """Terminate every other connection to the fleet's database; how many there were."""

    async def terminate() -> int:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.user or None,
            password=url.password or None,
            database=url.database,
            timeout=10,
        )
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return len(rows)

    return asyncio.run(terminate())


def wait_reconnected(fleet: Fleet, live: list[Process], since: datetime) -> None:
    """Wait until every live executor has heartbeated to the server since `since`."""
    names = {p.name for p in live}
    deadline = time.monotonic() + 30
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            listed = fleet.api("GET", "/api/executors").json()
        except httpx.TransportError:
            listed = []
        seen = {
            e["hostname"]
            for e in listed
            if datetime.fromisoformat(e["lastSeenAt"]) > since and e["hostname"] in names
        }
        if seen == names:
            return
        time.sleep(0.2)
    raise AssertionError(f"executors {sorted(names - seen)} did not come back to the server")


def run_chaos(fleet: Fleet, token: str, *, rng: random.Random) -> Chaos:
    """Kill executors and restart the rest until KILLS kills and every restart were done, or
    every job has finished.

    A killed executor's replacement takes its name, so that it clears up what the killed one
    left (as an executor restarted by its supervisor would).
    """
    chaos = Chaos()

    def start(name: str) -> Process:
        process = fleet.spawn_executor(name, token=token, slots=SLOTS, backend="shell")
        chaos.executors[process.popen.pid] = process
        return process

    live = [start(f"chaos-{n}") for n in range(EXECUTORS)]
    for process in live:
        process.wait_for("connected to")
    chaos.started = time.monotonic()
    chaos.note(f"{EXECUTORS} executors connected; {unfinished(fleet)} jobs unfinished")
    # Each restart once early, and once more later (with the other signal).
    plan = [
        (6.0, "server", signal.SIGKILL),
        (12.0, "pool", signal.SIGKILL),
        (18.0, "worker", signal.SIGKILL),
        (26.0, "server", signal.SIGTERM),
        (32.0, "pool", signal.SIGKILL),
        (38.0, "worker", signal.SIGTERM),
    ]
    next_kill = time.monotonic() + rng.uniform(1.0, 2.0)
    next_look = time.monotonic()
    while (plan or len(chaos.killed) < KILLS) and time.monotonic() - chaos.started < CHAOS_SECONDS:
        if plan and time.monotonic() - chaos.started >= plan[0][0]:
            _, what, signum = plan.pop(0)
            begun = time.monotonic()
            if what == "server":
                fleet.restart_server(signum)
                back = time.monotonic()
                wait_reconnected(fleet, live, datetime.now(UTC))
                chaos.server_restarts += 1
                chaos.note(
                    f"server restarted ({signum.name}) in {back - begun:.1f}s; "
                    f"{len(live)} executors back {time.monotonic() - back:.1f}s later"
                )
            elif what == "worker":
                assert fleet.worker is not None
                fleet.worker.stop(signum)
                fleet.start_worker("queues.resetter", env=WORKER_ENV, wait=False)
                chaos.worker_restarts += 1
                chaos.note(f"worker stopped ({signum.name}) in {time.monotonic() - begun:.1f}s")
            else:
                cut = reset_pool(fleet.url)
                assert cut > 0, "nothing held a connection to the database"
                chaos.pool_resets += 1
                chaos.note(f"{cut} database connections terminated")
        if time.monotonic() >= next_kill:
            victim = rng.choice(live)
            victim.stop(signal.SIGKILL)
            chaos.killed.add(victim.popen.pid)
            live.remove(victim)
            live.append(start(victim.name))
            next_kill = time.monotonic() + rng.uniform(1.0, 2.0)
        if time.monotonic() >= next_look:
            if unfinished(fleet) == 0:
                break
            next_look = time.monotonic() + 0.5
        time.sleep(0.1)
    assert not plan and len(chaos.killed) >= KILLS, (
        f"the jobs ended before the chaos did: {chaos.summary()}; {plan} never happened"
    )
    assert fleet.worker is not None
    fleet.worker.wait_for(r"offload worker listening on")
    for process in live:
        process.wait_for("connected to")
    chaos.note(f"chaos over; {unfinished(fleet)} jobs unfinished")
    return chaos


def runs_of(effects: Path) -> dict[str, list[Run]]:
    """Each job's runs, in the order they wrote their line."""
    runs: dict[str, list[Run]] = {}
    for line in effects.read_text().splitlines():
        tag, attempt, pid, home = line.split(" ", 3)
        found = _EXECUTOR.search(home)
        assert found, f"a step ran outside an executor's workspaces: {line!r}"
        runs.setdefault(tag, []).append(Run(int(attempt), int(pid), found.group(1)))
    return runs


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_every_job_completes_once_while_executors_server_worker_and_database_die(
    fleet: Fleet,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    effects = fleet.data_dir.parent / "effects.txt"
    effects.touch()
    effects.chmod(0o666)  # steps run as another uid
    token = fleet.token()
    began = time.monotonic()
    jobs = submit_all(fleet, effects)
    chaos = run_chaos(fleet, token, rng=random.Random(12))

    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and unfinished(fleet) != 0:
        time.sleep(0.5)
    chaos.note(f"settled; {time.monotonic() - began:.0f}s since the first submission")
    # Every executor that was not killed still runs: none died by itself.
    for pid in chaos.alive:
        process = chaos.executors[pid]
        assert process.popen.poll() is None, f"{process.name} exited:\n" + "".join(
            process.lines[-20:]
        )
    final = states(fleet)
    by_state: dict[str, list[int]] = {}
    for job_id, job in final.items():
        by_state.setdefault(str(job["state"]), []).append(job_id)
    runs = runs_of(effects)
    # A step whose executor was killed under it has another parent by now.
    orphans = {r.pid for rs in runs.values() for r in rs} - set(chaos.executors)
    lost = sorted(tag for tag in jobs if tag not in runs)
    again = {tag: r for tag, r in runs.items() if len(r) > 1}
    # Each run but the last wrote its line, so its step had ended when its executor was killed.
    after_finish = {
        tag: r for tag, r in again.items() if all(x.pid not in chaos.alive for x in r[:-1])
    }
    otherwise = {tag: r for tag, r in again.items() if tag not in after_finish}
    completed = len(by_state.get("completed", []))
    report = (
        f"chaos: {len(jobs)} jobs, completed {completed}, lost {len(lost)}, "
        f"re-run after finish {len(after_finish)}, {chaos.summary()}; "
        f"re-run otherwise {len(otherwise)}, "
        f"run again before their step ended {sum(r[0].attempt > 1 for r in runs.values())}, "
        f"orphaned steps {len(orphans)}"
    )
    with capsys.disabled():
        print(f"\n{report}\n" + "\n".join(chaos.notes))
    record_property("chaos", report)

    failed = [i for state, ids in by_state.items() if state != "completed" for i in ids]
    assert set(final) == set(jobs.values()) and completed == JOBS, (
        f"{report}\nnot completed: "
        + "; ".join(
            f"{job_id} {final[job_id]['state']}: {final[job_id]['failureMessage']}\n"
            + "\n".join(f"  [{e['key']}] {e['out']}" for e in fleet.logs(job_id))
            for job_id in failed[:5]
        )
    )
    assert lost == [], f"{report}\njobs whose step never ran: {lost[:20]}"
    assert otherwise == {}, (
        f"{report}\njobs run again although the executor of their first run lived: "
        f"{dict(list(otherwise.items())[:10])}"
    )
    for tag, job_id in jobs.items():
        last, job = runs[tag][-1], final[job_id]
        # The run that completed the job is the last one that ran its step, and the attempt
        # its step saw is the one the queue counted.
        assert last.executor == job["executor"], (tag, runs[tag], job)
        assert last.pid in chaos.executors, (tag, runs[tag], job)
        assert last.attempt == 1 + int(job["numResets"]) + int(job["numFailures"]), (tag, job)
    for tag, job_runs in after_finish.items():
        attempts = [r.attempt for r in job_runs]
        assert attempts == sorted(set(attempts)), (tag, job_runs)
        logs = fleet.logs(jobs[tag])
        assert attempts[-1] in {entry["attempt"] for entry in logs}, (tag, logs)
        header = f"attempt {attempts[-1]}, on executor {job_runs[-1].executor}"
        assert any(header in str(entry["out"]) for entry in logs), (tag, header, logs)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_jobs_that_run_through_a_server_outage_complete(fleet: Fleet) -> None:
    # Shorter than a queue's stalled_after (25 s) with the start, longer than the 15 s for
    # which executors used to retry a log write before they failed the job.
    down = 16.0
    token = fleet.token()
    executors = [
        fleet.spawn_executor(f"outage-{n}", token=token, slots=3, backend="shell")
        for n in range(EXECUTORS)
    ]
    for process in executors:
        process.wait_for("connected to")
    ids = [fleet.submit("demo", ["sh", "-c", "sleep 3; echo done"]) for _ in range(18)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and counts(fleet).get("processing", 0) < EXECUTORS:
        time.sleep(0.1)
    assert counts(fleet)["processing"] >= EXECUTORS, counts(fleet)
    assert fleet.server is not None
    fleet.server.stop(signal.SIGKILL)
    time.sleep(down)
    fleet.start_server()

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and unfinished(fleet) != 0:
        time.sleep(0.5)
    final = states(fleet)
    failed = {
        i: (j["state"], j["failureMessage"]) for i, j in final.items() if j["state"] != "completed"
    }
    assert not failed and set(final) == set(ids), failed
    # The first job's step ended while the server was down: its log was written once it was back.
    steps = [e for e in fleet.logs(ids[0]) if str(e["key"]).startswith("step.")]
    assert steps and all("done" in str(entry["out"]) for entry in steps), steps
