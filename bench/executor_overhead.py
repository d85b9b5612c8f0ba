"""What an executor adds to a trivial job: a one-step `true` job, end to end, phase by phase.

Everything runs as it does in production, as separate processes on this machine: an
``offload server`` on a fresh database (a temporary SQLite file, or a fresh PostgreSQL database
with ``--postgres``), a small git repository made here and added with ``offload repos add``,
and ``offload executor`` processes (``EXECUTOR_HEARTBEAT_INTERVAL=1s``, the default long-poll
``EXECUTOR_QUEUE_POLL_WAIT``). Jobs go in through ``POST /api/jobs`` with the command ``true``.

For each run (``--runs``, fresh server and database each time):

1. **Floors**, measured first in the same run, each ``--samples`` times:

   * ``http``: one HTTP round trip to the server (``GET /healthz`` on a kept-alive connection);
     the same request on a new connection each time (``http-new-connection``) for information;
   * ``clone``: ``git clone --depth 1 file://<the server's mirror>`` of the same repository;
   * ``sandbox``: the sandbox runtime's own argv (``SandboxRuntime.command()``: ``env -i``,
     cgroup join, ``prlimit``, ``bwrap`` with the same flags) with the step's script replaced
     by ``true``; ``bwrap`` alone (the same bubblewrap flags, without the wrappers) for
     information;
   * ``docker``: the docker runtime's ``docker run --rm ...`` argv (``DockerRuntime.command()``,
     same flags and workspace mount) running ``true`` in the busybox image, against the same
     engine the executor uses; the bare ``docker run --rm --network none IMAGE true`` for
     information;
   * ``git-sequence``: the executor's git commands (``workspace.git_commands``: three) run
     directly against ``file://`` (no proxy, no server), for information.

2. **Latency**, per runtime (``--runtimes``): one executor with one slot, idle; ``--samples``
   jobs submitted one at a time (after 3 discarded warm-up jobs), each awaited before the next.
   The end-to-end figure is ``finishedAt - queuedAt`` as the job's record stores them. Its
   phases are derived from the record's timestamps and the job's log entries (each entry has
   ``startTime`` and ``durationMs``, taken by the executor; the executor writes entries in the
   background, so an entry's duration is its command's, without the HTTP calls):

   * ``dequeue`` = ``startedAt - queuedAt`` (the long poll wakes and leases the job);
   * ``workspace`` = the sum of the ``setup.git.*`` (and ``setup.files``) entries' durations;
   * ``images`` = the ``setup.images`` entry (the runtime checks the step's image);
   * ``step`` = the ``step.<runtime>.run`` entry: runtime start plus the step itself. It is
     split as ``runtime start`` = that runtime's floor (above) and ``step rest`` = the entry
     minus the floor (``/bin/sh`` running the script, output pumping, the runtime's stop);
   * ``bookkeeping`` = the time between ``startedAt`` and the end of the last entry that no
     entry covers: handing the leased job over, creating the workspace, starting the git proxy,
     and each entry's closing log update;
   * ``completion`` = ``finishedAt`` - the end of the last entry: the step's closing log update,
     removing the workspace, and the call that marks the job complete.

   The six add up to the end-to-end figure (to a millisecond per entry: ``durationMs`` is whole
   milliseconds). The latency the submitting client sees (``POST`` sent to the completed state
   seen by polling ``GET /api/jobs/{id}`` every ``--poll-interval``) is reported beside it.

3. **Throughput**, per runtime: two executors with four slots each; ``--jobs`` jobs submitted
   at once (8 concurrent ``POST`` calls); jobs/s from the first ``queuedAt`` to the last
   ``finishedAt``.

The end-to-end floor of a runtime is what a job cannot do without: two HTTP round trips
(dequeue and complete) + a shallow clone + the runtime's start. The ratio of the p50 end to end
to that floor is reported, and also the floor counting every HTTP call the executor makes for
a job (dequeue, complete, and two per log entry) for information.

Medians of the runs are reported against the targets: sandbox p50 end to end <= 150 ms and
<= 3x its floor (the docker runtime's figures are shown against the same goals for
information). Results go to ``bench/results/executor_overhead-<UTC timestamp>.json`` and
``bench/results/executor_overhead-latest.json``. The benchmark is run by hand, as root (for
the private dockerd), never as a test:

    .venv/bin/python bench/executor_overhead.py --runs 3

It imports the test helpers ``tests/support/fleet.py`` (server and executor processes),
``tests/support/dockerd.py`` (a private dockerd on its own socket) and
``tests/support/busybox.py`` (the busybox image), and needs bubblewrap, umoci, git,
busybox-static and docker.io.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from offload.executor import workspace
from offload.executor.images import ImageStore
from offload.executor.runtimes.base import Limits, Step
from offload.executor.runtimes.docker import DockerRuntime
from offload.executor.runtimes.sandbox import SandboxRuntime
from offload.protocol.wire import Job
from offload.repos.mirror import Mirrors
from provenance import software, tool_version
from report import RESULTS, medians, percentile, write_results
from scratchdb import database

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support")]
from busybox import BusyboxMissing, build_rootfs, build_tarball  # noqa: E402
from dockerd import Dockerd, EngineUnavailable  # noqa: E402
from fleet import Fleet, Process, make_repo  # noqa: E402

NAME = "executor_overhead"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RUNTIMES = ("sandbox", "docker")
DOCKER_IMAGE = "offload-bench/busybox:latest"
REPO = "bench-small"
REPO_FILES = {
    "README.md": "A small repository for the executor overhead benchmark.\n",
    "main.go": 'package main\n\nfunc main() { println("hello") }\n',
    "Makefile": "all:\n\ttrue\n",
    "GUIDE.md": "# Guide\n\n" + "Some words. " * 40 + "\n",
}
WARMUP_JOBS = 3  # latency jobs run first and discarded (imports, caches, first connections)
HTTP_WARMUP = 20
SUBMITTERS = 8  # concurrent POST /api/jobs calls in the throughput step
TERMINAL = {"completed", "failed", "errored", "canceled"}
JOB_TIMEOUT = 120.0
PHASES = ("dequeue", "workspace", "images", "step", "bookkeeping", "completion")


@dataclass(frozen=True)
class Params:
    """What one invocation measures."""

    runs: int
    jobs: int
    samples: int
    runtimes: tuple[str, ...]
    executors: int
    slots: int
    poll_interval: float
    postgres_url: str | None


# -- measuring helpers --------------------------------------------------------------------


def spread(samples: list[float]) -> dict[str, float]:
    """p50, p95 and max of `samples`."""
    return {
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "max": max(samples),
    }


def stamp(text: str) -> datetime:
    """An ISO timestamp from the API (naive ones are UTC)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ms(seconds: float) -> float:
    """Seconds as milliseconds."""
    return seconds * 1000.0


def phases_of(job: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, float]:
    """The job's phases in ms, from its record's timestamps and its log entries."""
    queued, started, finished = (stamp(job[k]) for k in ("queuedAt", "startedAt", "finishedAt"))
    spans = [(e["key"], stamp(e["startTime"]), float(e["durationMs"] or 0)) for e in entries]
    spans.sort(key=lambda span: span[1])

    def total(*prefixes: str) -> float:
        return sum(d for key, _, d in spans if key.startswith(prefixes))

    last_end = max(
        (start.timestamp() * 1000 + duration for _, start, duration in spans),
        default=started.timestamp() * 1000,
    )
    covered = sum(d for _, _, d in spans)
    # Each entry on its own too (the step's key names the runtime: one name for both).
    durations = {
        f"entry:{'step' if key.startswith('step.') else key}": float(duration)
        for key, _, duration in spans
    }
    return durations | {
        "total": ms((finished - queued).total_seconds()),
        "dequeue": ms((started - queued).total_seconds()),
        "workspace": total("setup.git.", "setup.files"),
        "images": total("setup.images"),
        "step": total("step."),
        "bookkeeping": last_end - started.timestamp() * 1000 - covered,
        "completion": finished.timestamp() * 1000 - last_end,
        "handoff": ms((spans[0][1] - started).total_seconds()) if spans else 0.0,
        "entries": float(len(spans)),
    }


async def timed_process(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Milliseconds to run `argv` to its end, piped as the executor runs steps."""
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    elapsed = ms(time.perf_counter() - start)
    if proc.returncode != 0:
        raise RuntimeError(
            f"floor command {argv[:3]}... exited {proc.returncode}: "
            f"{(err or out).decode(errors='replace').strip()[-400:]}"
        )
    return elapsed


# -- the system under test ------------------------------------------------------------------


class Engine:
    """A private dockerd with the busybox image imported, for the docker runtime."""

    def __init__(self, scratch: Path) -> None:
        self.dockerd = Dockerd()
        self.scratch = scratch

    def start(self) -> None:
        """Start dockerd and import the busybox image; EngineUnavailable/BusyboxMissing."""
        rootfs = build_rootfs(self.scratch / "busybox-rootfs")
        tarball = build_tarball(rootfs, self.scratch / "busybox.tar")
        self.dockerd.start()
        imported = self.dockerd.docker("import", str(tarball), DOCKER_IMAGE)
        if imported.returncode != 0:
            raise EngineUnavailable(f"docker import failed: {imported.stderr.decode().strip()}")

    @property
    def host(self) -> str:
        """The engine's DOCKER_HOST."""
        return str(self.dockerd.host)

    def stop(self) -> None:
        """Stop dockerd and remove its directory."""
        self.dockerd.stop()


def executor_env(runtime: str, engine: Engine | None) -> dict[str, str]:
    """Extra environment of an executor using `runtime`."""
    if runtime != "docker":
        return {}
    assert engine is not None
    # The executor's config has no setting for the engine's address (RuntimeSettings'
    # docker_host is never filled from EXECUTOR_*): the docker CLI reads DOCKER_HOST itself.
    return {"DOCKER_HOST": engine.host}


def job_body(runtime: str) -> dict[str, Any]:
    """The POST /api/jobs body of a one-step `true` job on `runtime`."""
    body: dict[str, Any] = {"repo": REPO, "command": ["true"]}
    if runtime == "docker":
        body["image"] = DOCKER_IMAGE
    return body


def stop_processes(fleet: Fleet, processes: list[Process]) -> None:
    """SIGTERM all of `processes` at once, then wait for each (they stop in parallel)."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in processes:
        # Not process.stop(): a second SIGTERM can land after the executor has put back the
        # default handler on its way out, and kill it.
        code = process.popen.wait(timeout=60)
        if process.popen.stdout is not None:
            process.popen.stdout.close()
        if code != 0:
            print(f"warning: {process.name} exited {code}: {''.join(process.lines[-5:])}")
        if process in fleet.executors:
            fleet.executors.remove(process)


# -- floors -------------------------------------------------------------------------------


def http_floor(client: httpx.Client, samples: int) -> list[float]:
    """Round trips of GET /healthz through `client`, in ms."""
    times = []
    for n in range(HTTP_WARMUP + samples):
        start = time.perf_counter()
        response = client.get("/healthz")
        elapsed = ms(time.perf_counter() - start)
        response.raise_for_status()
        if n >= HTTP_WARMUP:
            times.append(elapsed)
    return times


async def process_floors(
    runtimes: tuple[str, ...], engine: Engine | None, scratch: Path, mirror: Path, commit: str
) -> dict[str, list[float]]:
    """One sample of each process floor, in ms (called once per sample, order fixed)."""
    out: dict[str, list[float]] = {}
    target = scratch / f"clone-{uuid.uuid4().hex[:8]}"
    clone = ["git", "clone", "--quiet", "--depth", "1", "--no-tags", f"file://{mirror}"]
    out["clone"] = [await timed_process([*clone, str(target)], env=workspace.git_env())]
    shutil.rmtree(target, ignore_errors=True)
    repo_dir = scratch / f"sequence-{uuid.uuid4().hex[:8]}"
    repo_dir.mkdir()
    job = Job(id=1, repository_name=REPO, commit=commit, shallow_clone=True)
    start = time.perf_counter()
    for _, argv in workspace.git_commands(job, repo_dir, f"file://{mirror}"):
        await timed_process(argv, env=workspace.git_env())
    out["git-sequence"] = [ms(time.perf_counter() - start)]
    shutil.rmtree(repo_dir, ignore_errors=True)

    ws = scratch / "floor-workspace"
    (ws / ".offload").mkdir(parents=True, exist_ok=True)
    (ws / ".offload" / "true.sh").write_text("true\n")
    if "sandbox" in runtimes:
        sandbox = SandboxRuntime(ImageStore(scratch / "images"))
        run_id = f"floor-{uuid.uuid4().hex[:8]}"
        start = time.perf_counter()
        argv = sandbox.command(Step("floor", ".offload/true.sh"), ws, Limits(), run_id)
        # The step's "/bin/sh SCRIPT" becomes plain `true`: what is left is the runtime.
        argv = [*argv[:-2], "/bin/true"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        out["sandbox"] = [ms(time.perf_counter() - start)]
        await sandbox.stop(run_id)
        if proc.returncode != 0:
            raise RuntimeError(f"sandbox floor failed: {err.decode(errors='replace').strip()}")
        bwrap = argv[argv.index(shutil.which("bwrap") or "bwrap") :]
        out["bwrap"] = [await timed_process(bwrap)]
    if "docker" in runtimes and engine is not None:
        docker = DockerRuntime(host=engine.host, default_image=DOCKER_IMAGE, pull=False)
        run_id = f"floor-{uuid.uuid4().hex[:8]}"
        step = Step("floor", ".offload/true.sh", image=DOCKER_IMAGE)
        argv = docker.command(step, ws, Limits(), run_id)
        argv = [*argv[: argv.index("--entrypoint")], DOCKER_IMAGE, "true"]
        out["docker"] = [await timed_process(argv)]
        bare = [*argv[:3], "run", "--rm", "--network", "none", DOCKER_IMAGE, "true"]
        out["docker-bare"] = [await timed_process(bare)]
    return out


def measure_floors(
    client: httpx.Client,
    params: Params,
    engine: Engine | None,
    scratch: Path,
    mirror: Path,
    commit: str,
) -> dict[str, list[float]]:
    """Every floor, `params.samples` times each, in ms."""
    count = max(params.samples, 100)
    # The floor is a round trip on a kept-alive connection, as the executor's calls are (the
    # server sets TCP_NODELAY on the connections it accepts, so no response waits for a
    # delayed ACK); a new connection per request is shown beside it for information.
    floors: dict[str, list[float]] = {"http": http_floor(client, count)}
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(
        base_url=client.base_url, timeout=60, limits=fresh, headers=client.headers
    ) as once:
        floors["http-new-connection"] = http_floor(once, count)

    async def sample_all() -> None:
        # One discarded round first: the page cache, bwrap's and docker's first start.
        await process_floors(params.runtimes, engine, scratch, mirror, commit)
        for _ in range(params.samples):
            one = await process_floors(params.runtimes, engine, scratch, mirror, commit)
            for key, values in one.items():
                floors.setdefault(key, []).extend(values)

    asyncio.run(sample_all())
    return floors


# -- latency and throughput -----------------------------------------------------------------


def submit(client: httpx.Client, runtime: str) -> int:
    """Enqueue one `true` job through the API; its id."""
    response = client.post("/api/jobs", json=job_body(runtime))
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/jobs: {response.status_code} {response.text}")
    return int(response.json()["id"])


def await_job(client: httpx.Client, job_id: int, interval: float) -> dict[str, Any]:
    """Poll the job until it has finished; the job."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job = dict(client.get(f"/api/jobs/{job_id}").json())
        if job["state"] in TERMINAL:
            return job
        time.sleep(interval)
    raise RuntimeError(f"job {job_id} did not finish within {JOB_TIMEOUT:g}s")


def finished_job(client: httpx.Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The log entries of a finished job; RuntimeError unless it completed with exit code 0."""
    entries = list(client.get(f"/api/jobs/{job['id']}/logs").json())
    if job["state"] != "completed" or job["exitCode"] != 0:
        tail = entries[-1]["out"] if entries else ""
        raise RuntimeError(
            f"job {job['id']} is {job['state']} (exit {job['exitCode']}): "
            f"{job['failureMessage']} {tail}"
        )
    return entries


def latency(
    fleet: Fleet, client: httpx.Client, runtime: str, params: Params, engine: Engine | None
) -> list[dict[str, float]]:
    """Phases (ms) of `params.samples` jobs run one at a time by one idle 1-slot executor."""
    executor = fleet.start_executor(
        f"latency-{runtime}", slots=1, backend=runtime, **executor_env(runtime, engine)
    )
    samples = []
    try:
        for n in range(WARMUP_JOBS + params.samples):
            start = time.perf_counter()
            job_id = submit(client, runtime)
            posted = time.perf_counter()
            job = await_job(client, job_id, params.poll_interval)
            seen = time.perf_counter()
            entries = finished_job(client, job)
            if n < WARMUP_JOBS:
                continue
            phases = phases_of(job, entries)
            phases["post"] = ms(posted - start)
            phases["seen"] = ms(seen - start)
            samples.append(phases)
            # Let the executor go back to its long poll, idle, before the next job.
            time.sleep(0.02)
    finally:
        stop_processes(fleet, [executor])
    return samples


def queue_done(client: httpx.Client) -> int:
    """Jobs of the default queue in a final state."""
    for queue in client.get("/api/queues").json():
        if queue["queue"] == "default":
            return sum(n for state, n in queue["counts"].items() if state in TERMINAL)
    return 0


def throughput(
    fleet: Fleet, client: httpx.Client, runtime: str, params: Params, engine: Engine | None
) -> dict[str, Any]:
    """Jobs/s of `params.executors` executors x `params.slots` slots draining `params.jobs`."""
    executors = [
        fleet.start_executor(
            f"throughput-{runtime}-{n}",
            slots=params.slots,
            backend=runtime,
            **executor_env(runtime, engine),
        )
        for n in range(params.executors)
    ]
    try:
        before = queue_done(client)
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(SUBMITTERS) as pool:
            ids = list(pool.map(lambda _: submit(client, runtime), range(params.jobs)))
        submitted = time.perf_counter()
        deadline = time.monotonic() + JOB_TIMEOUT + params.jobs
        while queue_done(client) < before + params.jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{params.jobs} jobs did not finish in time")
            time.sleep(0.1)
        seen = time.perf_counter()
    finally:
        stop_processes(fleet, executors)
    jobs = [dict(client.get(f"/api/jobs/{job_id}").json()) for job_id in ids]
    failed = [j for j in jobs if j["state"] != "completed" or j["exitCode"] != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} throughput jobs failed, e.g. {failed[0]}")
    first = min(stamp(j["queuedAt"]) for j in jobs)
    last = max(stamp(j["finishedAt"]) for j in jobs)
    drain = (last - first).total_seconds()
    totals = [ms((stamp(j["finishedAt"]) - stamp(j["queuedAt"])).total_seconds()) for j in jobs]
    return {
        "jobs_per_s": len(jobs) / drain,
        "drain_s": drain,
        "submit_s": submitted - start,
        "seen_s": seen - start,
        "by_executor": {
            name: sum(1 for j in jobs if j["executor"] == name)
            for name in sorted({str(j["executor"]) for j in jobs})
        },
        "job_total_ms": spread(totals),
    }


# -- one run --------------------------------------------------------------------------------


def restart_server(fleet: Fleet) -> None:
    """Restart the server on its port: no long poll of an executor stopped earlier outlives it.

    A stopped executor's pending long poll stays open on the server and can lease the next job
    to an executor that is gone (the job then waits for the resetter, 25 s later): a fresh
    server for each step keeps the steps independent.
    """
    assert fleet.server is not None
    fleet.server.stop(timeout=60)
    fleet.start_server()


def one_run(params: Params, engine: Engine | None, console: Console) -> dict[str, Any]:
    """Floors, latency and throughput on a fresh server and database."""
    with (
        tempfile.TemporaryDirectory(prefix="offload-bench-") as tmp,
        database(params.postgres_url, Path(tmp), source="--postgres") as url,
    ):
        scratch = Path(tmp)
        # Steps of a root executor run as an unprivileged uid, which must pass through.
        scratch.chmod(0o711)
        fleet = Fleet(url, scratch / "data")
        commit = make_repo(scratch / "src" / REPO, REPO_FILES)
        add = ("repos", "add", str(scratch / "src" / REPO), "--name", REPO)

        def offload(*args: str) -> None:
            done = fleet.offload(*args)
            if done.returncode != 0:
                raise RuntimeError(f"offload {' '.join(args)}: {done.stderr or done.stdout}")

        offload("migrate", "up")
        mirror = Mirrors.in_data_dir(fleet.data_dir).path(REPO)
        jobs: dict[str, list[dict[str, float]]] = {}
        rates: dict[str, dict[str, Any]] = {}
        steps = [("latency", r) for r in params.runtimes] + [
            ("throughput", r) for r in params.runtimes
        ]
        try:
            fleet.start_server()
            offload(*add)  # through the server's API, as its site admin
            with httpx.Client(base_url=fleet.base, timeout=60, headers=fleet.headers) as client:
                console.print("  floors")
                floors = measure_floors(client, params, engine, scratch, mirror, commit)
            for n, (step, runtime) in enumerate(steps):
                if n > 0:
                    restart_server(fleet)
                with httpx.Client(base_url=fleet.base, timeout=60, headers=fleet.headers) as client:
                    if step == "latency":
                        console.print(f"  latency, {runtime}: {params.samples} sequential jobs")
                        jobs[runtime] = latency(fleet, client, runtime, params, engine)
                    else:
                        console.print(
                            f"  throughput, {runtime}: {params.jobs} jobs, "
                            f"{params.executors} executors x {params.slots} slots"
                        )
                        rates[runtime] = throughput(fleet, client, runtime, params, engine)
        finally:
            fleet.stop_all()
    return summarize_run(floors, jobs, rates)


def summarize_run(
    floors: dict[str, list[float]],
    jobs: dict[str, list[dict[str, float]]],
    rates: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One run's figures, flat (name -> value), with its raw samples beside them."""
    flat: dict[str, float] = {}
    for name, values in floors.items():
        for key, value in spread(values).items():
            flat[f"floor.{name}.{key}_ms"] = value
    for runtime, samples in jobs.items():
        for phase in ("total", *PHASES, "handoff", "post", "seen"):
            values = [s[phase] for s in samples]
            flat[f"{runtime}.{phase}.p50_ms"] = percentile(values, 50)
            flat[f"{runtime}.{phase}.p95_ms"] = percentile(values, 95)
        flat[f"{runtime}.entries"] = statistics.median(s["entries"] for s in samples)
        for key in sorted({k for s in samples for k in s if k.startswith("entry:")}):
            values = [s[key] for s in samples if key in s]
            flat[f"{runtime}.{key}.p50_ms"] = percentile(values, 50)
        start = flat[f"floor.{runtime}.p50_ms"]
        flat[f"{runtime}.runtime_start.p50_ms"] = start
        flat[f"{runtime}.step_rest.p50_ms"] = flat[f"{runtime}.step.p50_ms"] - start
        http, clone = flat["floor.http.p50_ms"], flat["floor.clone.p50_ms"]
        floor = 2 * http + clone + start
        calls = 2 + 2 * flat[f"{runtime}.entries"]
        flat[f"{runtime}.floor_ms"] = floor
        flat[f"{runtime}.floor_all_calls_ms"] = calls * http + clone + start
        flat[f"{runtime}.http_calls"] = calls
        flat[f"{runtime}.ratio_p50"] = flat[f"{runtime}.total.p50_ms"] / floor
        flat[f"{runtime}.ratio_p50_all_calls"] = (
            flat[f"{runtime}.total.p50_ms"] / flat[f"{runtime}.floor_all_calls_ms"]
        )
    for runtime, rate in rates.items():
        flat[f"{runtime}.throughput_jobs_per_s"] = rate["jobs_per_s"]
        flat[f"{runtime}.throughput_job_total.p50_ms"] = rate["job_total_ms"]["p50"]
        flat[f"{runtime}.throughput_job_total.p95_ms"] = rate["job_total_ms"]["p95"]
    return {"figures": flat, "throughput": rates, "samples": jobs, "floor_samples": floors}


def targets(meds: dict[str, float]) -> list[dict[str, Any]]:
    """The acceptance targets (sandbox) and the same goals read for docker, for information."""
    goals = []
    for runtime in ("sandbox", "docker"):
        if f"{runtime}.total.p50_ms" not in meds:
            continue
        acceptance = runtime == "sandbox"
        p50 = meds[f"{runtime}.total.p50_ms"]
        ratio = meds[f"{runtime}.ratio_p50"]
        goals.append(
            {
                "target": f"{runtime} p50 end to end",
                "goal": 150.0,
                "value": p50,
                "unit": "ms",
                "met": p50 <= 150.0,
                "acceptance": acceptance,
            }
        )
        goals.append(
            {
                "target": f"{runtime} p50 / floor",
                "goal": 3.0,
                "value": ratio,
                "unit": "x",
                "met": ratio <= 3.0,
                "acceptance": acceptance,
            }
        )
    return goals


# -- reporting ------------------------------------------------------------------------------


def machine_info(engine: Engine | None) -> dict[str, Any]:
    """Where the benchmark ran."""
    docker = shutil.which("docker") or "docker"
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "tools": {
            "bwrap": tool_version("bwrap", "--version"),
            "git": tool_version("git", "--version"),
            "docker_cli": f"{docker}: {tool_version(docker, '--version')}",
            "dockerd": tool_version("dockerd", "--version") if engine else None,
        },
        **software(("offload", "httpx", "uvicorn")),
    }


def fmt(value: float | None, spec: str = ".1f") -> str:
    """`value` formatted with `spec`, or a dash."""
    return "-" if value is None else format(value, spec)


ENTRY_ORDER = tuple(
    f"entry:{key}"
    for key in (
        *(f"setup.git.{git}" for git in ("init", "add-remote", "disable-gc", "fetch")),
        *(f"setup.git.{git}" for git in ("checkout", "set-remote")),
        "setup.files",
        "setup.images",
        "step",
    )
)
PHASE_NOTES = {
    "total": "finishedAt - queuedAt (the record's timestamps)",
    "dequeue": "startedAt - queuedAt",
    "workspace": "sum of setup.git.* (+ setup.files) entries",
    "images": "setup.images entry",
    "step": "step.<runtime>.run entry",
    "  runtime start": "that runtime's floor, running `true`",
    "  step rest": "step entry - runtime start",
    "bookkeeping": "startedAt..end of last entry, outside entries",
    "  handoff": "startedAt - first entry's startTime (part of bookkeeping)",
    "completion": "finishedAt - end of last entry",
    "seen by client": "POST sent -> completed seen by polling (info)",
    "POST /api/jobs": "the submit call itself (info)",
}
PHASE_KEYS = {
    "total": "total",
    "  runtime start": "runtime_start",
    "  step rest": "step_rest",
    "  handoff": "handoff",
    "seen by client": "seen",
    "POST /api/jobs": "post",
}


def print_summary(
    console: Console, params: Params, meds: dict[str, float], goals: list[dict[str, Any]]
) -> None:
    """The medians, floors, ratios and targets as tables."""
    runtimes = [r for r in params.runtimes if f"{r}.total.p50_ms" in meds]
    phases = Table(
        title=f"One-step `true` job, end to end and by phase: medians of {params.runs} run(s), "
        f"{params.samples} sequential jobs per runtime (ms)"
    )
    phases.add_column("phase")
    for runtime in runtimes:
        phases.add_column(f"{runtime} p50", justify="right")
        phases.add_column(f"{runtime} p95", justify="right")
    phases.add_column("derived as")
    for label, note in PHASE_NOTES.items():
        key = PHASE_KEYS.get(label, label)
        cells = []
        for runtime in runtimes:
            cells.append(fmt(meds.get(f"{runtime}.{key}.p50_ms")))
            cells.append(fmt(meds.get(f"{runtime}.{key}.p95_ms")))
        phases.add_row(label, *cells, note)
    console.print(phases)

    found = {k.split(".", 1)[1].removesuffix(".p50_ms") for k in meds if ".entry:" in k}
    keys = sorted(found, key=lambda k: ENTRY_ORDER.index(k) if k in ENTRY_ORDER else 99)
    entries = Table(title="Log entries, p50 (ms; the command only, log writes are background)")
    entries.add_column("entry")
    for runtime in runtimes:
        entries.add_column(runtime, justify="right")
    for key in keys:
        cells = [fmt(meds.get(f"{runtime}.{key}.p50_ms")) for runtime in runtimes]
        entries.add_row(key.removeprefix("entry:"), *cells)
    console.print(entries)

    floors = Table(title="Floors, measured in the same runs (ms)")
    floors.add_column("floor")
    floors.add_column("p50", justify="right")
    floors.add_column("p95", justify="right")
    floors.add_column("what")
    notes = {
        "http": "GET /healthz, kept-alive connection",
        "http-new-connection": "GET /healthz, a new connection each (info)",
        "clone": "git clone --depth 1 file://<mirror>",
        "git-sequence": "the executor's 3 git commands against file:// (info)",
        "sandbox": "SandboxRuntime.command() argv running `true`",
        "bwrap": "bwrap alone, same flags, running `true` (info)",
        "docker": "DockerRuntime.command() argv running `true`",
        "docker-bare": "docker run --rm --network none IMAGE true (info)",
    }
    for name, note in notes.items():
        if f"floor.{name}.p50_ms" in meds:
            floors.add_row(
                name, fmt(meds[f"floor.{name}.p50_ms"], ".2f"),
                fmt(meds[f"floor.{name}.p95_ms"], ".2f"), note,
            )  # fmt: skip
    console.print(floors)

    ratios = Table(title="End to end against the floor, and throughput")
    ratios.add_column("runtime")
    for column in (
        "p50 ms",
        "floor ms",
        "ratio",
        "floor, all calls",
        "ratio",
        "jobs/s (2x4)",
        "job p50 under load",
    ):
        ratios.add_column(column, justify="right")
    for runtime in runtimes:
        calls = meds[f"{runtime}.http_calls"]
        ratios.add_row(
            runtime,
            fmt(meds[f"{runtime}.total.p50_ms"]),
            fmt(meds[f"{runtime}.floor_ms"]),
            f"{meds[f'{runtime}.ratio_p50']:.2f}x",
            f"{fmt(meds[f'{runtime}.floor_all_calls_ms'])} ({calls:.0f} calls)",
            f"{meds[f'{runtime}.ratio_p50_all_calls']:.2f}x",
            fmt(meds.get(f"{runtime}.throughput_jobs_per_s"), ".1f"),
            fmt(meds.get(f"{runtime}.throughput_job_total.p50_ms")),
        )
    console.print(ratios)
    console.print(
        "floor = 2 HTTP round trips (dequeue, complete) + shallow clone + runtime start; "
        "'all calls' counts every HTTP call of a job: dequeue, complete, 2 per log entry"
    )

    table = Table(title="Targets")
    table.add_column("kind")
    table.add_column("target")
    table.add_column("goal", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("status")
    for goal in goals:
        unit = "x" if goal["unit"] == "x" else " ms"
        status = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        kind = "acceptance" if goal["acceptance"] else "info"
        table.add_row(
            kind,
            goal["target"],
            f"<= {goal['goal']:g}{unit}",
            f"{goal['value']:.2f}{unit}",
            status,
        )
    console.print(table)


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Params:
    """The benchmark's parameters from the command line."""
    parser = argparse.ArgumentParser(
        description="End-to-end latency of a one-step `true` job through a real server and\n"
        "executors, by phase, for the sandbox and docker runtimes; throughput with 2\n"
        "executors x 4 slots; floors (HTTP round trip, shallow clone, bare runtime start)\n"
        "measured in the same run. Run by hand as root; see the module docstring.",
        epilog="example: .venv/bin/python bench/executor_overhead.py --runs 3\n"
        "quick check: .venv/bin/python bench/executor_overhead.py --runs 1 --samples 10 "
        "--jobs 20 --runtimes sandbox",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="repetitions; medians are reported (default 3)"
    )
    parser.add_argument(
        "--jobs", type=int, default=100, help="jobs per throughput step (default 100)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=30,
        help="sequential latency jobs per runtime, and samples of each floor (default 30)",
    )
    parser.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help=f"comma-separated subset of {','.join(RUNTIMES)} (default: both)",
    )
    parser.add_argument(
        "--executors", type=int, default=2, help="executors in the throughput step (default 2)"
    )
    parser.add_argument(
        "--slots", type=int, default=4, help="slots per executor in the throughput step (default 4)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between GET /api/jobs/{id} while awaiting a latency job (default 0.01; "
        "the phases come from stored timestamps and do not depend on it)",
    )
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=os.environ.get("OFFLOAD_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        default=None,
        metavar="URL",
        help="run the server on a fresh PostgreSQL database per run, created and dropped on "
        "the server of URL (default $OFFLOAD_BENCH_POSTGRES_URL or "
        f"{DEFAULT_POSTGRES_URL}); without it, a temporary SQLite file",
    )
    args = parser.parse_args(argv)
    runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown or not runtimes:
        parser.error(f"unknown runtimes {sorted(unknown)}; choose from {','.join(RUNTIMES)}")
    if min(args.runs, args.jobs, args.samples, args.executors, args.slots) < 1:
        parser.error("--runs, --jobs, --samples, --executors and --slots must be positive")
    return Params(
        runs=args.runs,
        jobs=args.jobs,
        samples=args.samples,
        runtimes=runtimes,
        executors=args.executors,
        slots=args.slots,
        poll_interval=args.poll_interval,
        postgres_url=args.postgres,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary and write the results."""
    params = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that every process and the dockerd started here stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started_at = datetime.now(UTC)
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="offload-bench-engine-") as tmp:
        engine: Engine | None = None
        if "docker" in params.runtimes:
            engine = Engine(Path(tmp))
            try:
                engine.start()
            except (EngineUnavailable, BusyboxMissing, OSError) as exc:
                engine.stop()
                engine = None
                skipped["docker"] = str(exc)
                console.print(f"[yellow]docker runtime skipped: {exc}[/yellow]")
                kept = tuple(r for r in params.runtimes if r != "docker")
                params = dataclasses.replace(params, runtimes=kept)
                if not params.runtimes:
                    return 1
        try:
            machine = machine_info(engine)
            console.print(
                f"executor overhead: runtimes {','.join(params.runtimes)}, {params.runs} run(s), "
                f"{params.samples} samples, {params.jobs} throughput jobs, "
                f"{'PostgreSQL' if params.postgres_url else 'SQLite'}, "
                f"{machine['cpu_count']} CPUs, Python {machine['python']}"
            )
            runs = []
            for n in range(params.runs):
                console.print(f"run {n + 1}/{params.runs}")
                runs.append(one_run(params, engine, console))
        finally:
            if engine is not None:
                engine.stop()
    meds = medians(runs)
    goals = targets(meds)
    document = {
        "benchmark": NAME,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": asdict(params) | {"warmup_jobs": WARMUP_JOBS, "submitters": SUBMITTERS},
        "skipped": skipped,
        "phases": {k.strip(): v for k, v in PHASE_NOTES.items()},
        "floor": "2 x http + clone + runtime start (sandbox or docker floor)",
        "runs": runs,
        "medians": meds,
        "targets": goals,
    }
    path = write_results(document, NAME)
    print_summary(console, params, meds, goals)
    console.print(f"results: {path} (and {RESULTS / f'{NAME}-latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
