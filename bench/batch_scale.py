"""Batch changes at scale: one simple batch spec over N workspaces, end to end, on one machine.

Everything runs as it does in production, as separate processes on this machine, on a fresh
database per run (a temporary SQLite file, or a fresh PostgreSQL database with ``--postgres``):
``offload server``, ``offload worker --job batches.resolver --job batches.reconciler --job
batches.syncer`` and ``--executors`` (2) ``offload executor`` processes on the ``batches`` queue
with the sandbox runtime and ``--slots`` (4) slots each.

The workspaces: ``ceil(N / --per-repo)`` monorepos ``bench-mono-NN`` (made with ``git
fast-import`` and registered in-process with ``Syncer.add``, as tests/e2e does), each holding
up to ``--per-repo`` (1,000) directories ``services/sNNNNN`` with a marker ``service.yaml`` and
a ``README.md`` that says "colour". The spec (``SPEC`` below) selects the repositories with
``repo:^bench-mono-``, makes each marker's directory a workspace fetched sparsely
(``onlyFetchWorkspace``), runs ``sed -i 's/colour/color/g' README.md`` in a busybox image
(tests/support/busybox.py, imported into each executor's store with ``offload executor images
import``) and templates one changeset per workspace.

What is measured, per run (``--runs``; medians of the runs are reported):

1. **Floors**, measured in the same run on the started but idle fleet, ``--samples`` times each
   after one discarded sample, medians:

   * ``sandbox``: the sandbox runtime's own argv (``SandboxRuntime.command()`` for the step's
     image: ``env -i``, cgroup join, ``prlimit``, ``bwrap`` on the busybox root) running
     ``/bin/true`` instead of the step's script;
   * ``sparse checkout``: the executor's own git commands for a sparse workspace
     (``workspace.git_commands()``: init, ``fetch --depth=1 --filter=blob:none`` of the commit,
     ``sparse-checkout set --no-cone 'services/sNNNNN/*'``, checkout) straight against
     ``file://`` of the server's mirror of the first monorepo;

   The **floor** of one workspace is ``sandbox + sparse checkout``; the floor-limited
   throughput is ``executors x slots / floor``; the **ratio** is the achieved workspaces/s
   over that floor-limited rate (1.0 would mean every slot did nothing but start runtimes and
   check out workspaces). Per-workspace wall time (``wall / N``) is shown beside it.

2. **End to end**: ``offload batch preview -f SPEC --json`` is started as a process, signed in
   as the user ``bench`` (the user's command: it submits the spec, polls the server every 0.5 s
   until every workspace finished, and prints the N operations); **wall time** runs from
   starting that process to its exit, and **workspaces/s** = N / wall. The run fails unless all
   N workspaces completed and N operations came back. While it runs, ``GET /api/queues`` is read
   every ``--progress`` seconds to print workspaces done / N, and the ``GET
   /api/batches/specs/{id}`` that the CLI repeats every 0.5 s (progress only, while not done) is
   timed once per progress line, for information. After it, the database's own timestamps split
   the wall time: submit to resolution done, resolution, first workspace start to last workspace
   end (the execution span, with its own rate), and each workspace job's duration. For
   information, the jobs' log entries (p50 and mean of each: git commands, image check, host
   helper ``pre``, the sandboxed step, helper ``post``) show where a job's time goes, and CPU
   seconds per workspace are split by component from /proc (each process's own and its reaped
   children's: the server's ``git upload-pack``, the executors' git and sandboxes; with
   ``--postgres``, the backends serving the run's database). The machine's busy time beyond them
   is shown as "unaccounted": other processes on the machine (and any process of this run that
   none of these reaped); time stolen by the hypervisor (``steal`` in /proc/stat: a virtual CPU
   ready to run while the host ran something else) is shown apart. On a shared machine, read the
   figures with both.

3. **Preview shown**: the unchanged spec again, as a fresh ``offload batch preview -f SPEC``
   process (no ``--json``: it renders the N-row table, written to a file). The step cache
   answers every workspace, so this times what a user waits for to see the N-row preview
   of an executed spec: CLI start, submit, resolution (the monorepos' trees listed, N cache
   lookups, N changeset specs), polling (0.5 s granularity), planning, the N-row table. The
   run fails unless it reports N cached workspaces. Its spec's resolution (creation to
   resolution done, from the database) is shown beside it. For information, the bare ``GET
   /api/batches/specs/{id}`` of the executed spec (progress + plan + N operations as JSON,
   ``--samples`` times, median) is timed too.

4. **Resources**: peak RSS (``VmHWM`` in /proc/PID/status) of the server and the worker
   processes (and of the executor processes, for information; their children are separate
   processes), read at the end of the run, so including the preview of step 3; also read
   right after step 2. **Database size**: the SQLite file plus its ``-wal`` (or
   ``pg_database_size``) right after step 2, and at the end for information.

Targets (for the default N = 45,000): >= 50 workspaces/s, server peak RSS <= 500 MB, preview
shown <= 5 s. They are marked met or missed for whatever N was run. Results go to
``bench/results/batch_scale-<UTC timestamp>.json``. Run by hand, as root (the sandbox runtime's
cgroups), with bubblewrap, umoci, git and busybox-static installed:

    .venv/bin/python bench/batch_scale.py                   # 45,000 workspaces: 85-160 min
    .venv/bin/python bench/batch_scale.py --workspaces 300     # a quick check

It imports the test helpers ``tests/support/fleet.py`` (server and executor processes) and
``tests/support/busybox.py`` (the busybox image).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
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

from offload.db.base import Database
from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.db.values import parse_time
from offload.executor import workspace
from offload.executor.images import ImageStore
from offload.executor.runtimes.base import Limits, Step
from offload.executor.runtimes.sandbox import SandboxRuntime
from offload.protocol.wire import Job
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer
from provenance import software, tool_version
from report import medians, percentile, write_results
from scratchdb import database

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support")]
from busybox import build_rootfs, build_tarball  # noqa: E402
from fleet import Fleet, Process, spawn  # noqa: E402

NAME = "batch_scale"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
IMAGE = "offload-bench/busybox:latest"
REPO_PREFIX = "bench-mono-"
MARKER = "service.yaml"
USER = "bench"
SPEC = f"""\
name: scale-colour
description: American spelling in every service's README.
on:
  - repositoriesMatchingQuery: repo:^{REPO_PREFIX}
workspaces:
  - rootAtLocationOf: {MARKER}
    in: "{REPO_PREFIX}*"
    onlyFetchWorkspace: true
steps:
  - run: sed -i 's/colour/color/g' README.md
    container: {IMAGE}
changesetTemplate:
  title: Use color in ${{{{ steps.path }}}}
  body: American spelling.
  branch: batch/scale-colour-${{{{ replace steps.path "/" "-" }}}}
  commit:
    message: Use color in ${{{{ steps.path }}}}
  published: false
"""
WORKER_JOBS = ("batches.resolver", "batches.reconciler", "batches.syncer")
FINISHED = ("completed", "failed", "canceled")
TARGETS = {"workspaces_per_s": 50.0, "server_peak_rss_mb": 500.0, "preview_shown_s": 5.0}
MB = 1024 * 1024


@dataclass(frozen=True)
class Params:
    """What one invocation measures."""

    workspaces: int
    executors: int
    slots: int
    runs: int
    per_repo: int
    samples: int
    progress: float
    stall_timeout: float
    postgres_url: str | None
    keep: bool


# -- measuring helpers --------------------------------------------------------------------


def ms(seconds: float) -> float:
    """Seconds as milliseconds."""
    return seconds * 1000.0


def proc_status(pid: int, key: str) -> int | None:
    """A /proc/PID/status memory field (VmHWM, VmRSS) in bytes; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def rss_mb(process: Process | None, key: str = "VmHWM") -> float | None:
    """`key` of a running child process, in MB."""
    if process is None:
        return None
    value = proc_status(process.popen.pid, key)
    return None if value is None else value / MB


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """CPU seconds (user + system) of a process itself, and of its children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(v) / tick for v in fields[11:15])
    return utime + stime, cutime + cstime


def machine_seconds() -> tuple[float, float]:
    """CPU seconds all CPUs have spent busy, and stolen by the hypervisor, since boot.

    Busy is user, nice, system, irq and softirq time. Steal is time a virtual CPU wanted to
    run and the host ran something else: on a shared host it slows everything down.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


async def timed_process(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Milliseconds to run `argv` to its end; RuntimeError if it fails."""
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
            f"floor command {argv[:4]}... exited {proc.returncode}: "
            f"{(err or out).decode(errors='replace').strip()[-400:]}"
        )
    return elapsed


# -- the system under test ----------------------------------------------------------------


def layout(workspaces: int, per_repo: int) -> dict[str, list[str]]:
    """Each monorepo's workspace directories: N in all, at most `per_repo` per repository."""
    repos = math.ceil(workspaces / per_repo)
    out: dict[str, list[str]] = {}
    for n in range(workspaces):
        out.setdefault(f"{REPO_PREFIX}{n % repos:02d}", []).append(f"services/s{n:05d}")
    return out


def make_monorepo(path: Path, dirs: list[str]) -> None:
    """A bare repository with one commit: a marker and a README in each of `dirs`."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    marker = b"kind: service\n"
    chunks = [b"blob\nmark :1\n", b"data %d\n%s\n" % (len(marker), marker)]
    mark = 1
    files = []
    for d in dirs:
        readme = f"# {d}\n\nThe colour of {d}.\n".encode()
        mark += 1
        chunks += [b"blob\nmark :%d\n" % mark, b"data %d\n%s\n" % (len(readme), readme)]
        files += [f"M 100644 :1 {d}/{MARKER}\n", f"M 100644 :{mark} {d}/README.md\n"]
    message = b"services\n"
    chunks += [
        b"commit refs/heads/main\n",
        b"committer Bench <bench@example.com> 1700000000 +0000\n",
        b"data %d\n%s\n" % (len(message), message),
        "".join(files).encode(),
        b"\n",
    ]
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        cwd=path,
        input=b"".join(chunks),
        check=True,
        capture_output=True,
    )


async def register(url: DatabaseURL, data_dir: Path, sources: dict[str, Path]) -> None:
    """Add every repository in-process (faster than `offload repos add` per repository)."""
    db = await open_database(url)
    try:
        syncer = Syncer(RepoRegistry(db), Mirrors.in_data_dir(data_dir))
        for name, source in sources.items():
            await syncer.add(str(source), name=name)
    finally:
        await db.close()


def import_image(fleet: Fleet, tarball: Path, data_dir: Path) -> None:
    """`offload executor images import` of the busybox tarball into one store."""
    done = subprocess.run(
        [sys.executable, "-m", "offload", "executor", "images", "import", IMAGE, str(tarball)],
        env={**os.environ, **fleet.env, "EXECUTOR_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"offload executor images import: {done.stderr.strip()}")


def stop_processes(processes: list[Process]) -> None:
    """SIGTERM all of `processes` at once, then wait for each (they stop in parallel)."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            code = process.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            code = process.popen.wait()
        if process.popen.stdout is not None:
            process.popen.stdout.close()
        if code not in (0, -signal.SIGTERM):
            print(f"warning: {process.name} exited {code}: {''.join(process.lines[-5:])}")


async def database_size(url: DatabaseURL) -> int:
    """Bytes the database takes: the SQLite file and its WAL, or pg_database_size."""
    if url.dialect == "sqlite":
        assert url.path is not None
        return sum(p.stat().st_size for p in (url.path, Path(f"{url.path}-wal")) if p.exists())
    db = await open_database(url, pool_size=1)
    try:
        rows = await db.fetch("SELECT pg_database_size(current_database()) AS n")
        return int(rows[0]["n"])
    finally:
        await db.close()


# -- floors -------------------------------------------------------------------------------


async def floor_sample(
    images: ImageStore, scratch: Path, mirror: Path, commit: str, path: str
) -> dict[str, float]:
    """One sample of each floor, in ms."""
    out: dict[str, float] = {}
    ws = scratch / f"floor-{uuid.uuid4().hex[:8]}"
    (ws / ".offload").mkdir(parents=True)
    (ws / ".offload" / "true.sh").write_text("true\n")
    sandbox = SandboxRuntime(images)
    run_id = f"floor-{uuid.uuid4().hex[:8]}"
    # Timed from the argv's making: command() creates the run's cgroups, as for every step.
    start = time.perf_counter()
    argv = sandbox.command(Step("floor", ".offload/true.sh", image=IMAGE), ws, Limits(), run_id)
    # The step's "/bin/sh SCRIPT" becomes plain `true`: what is left is the runtime.
    try:
        await timed_process([*argv[:-2], "/bin/true"])
        out["sandbox"] = ms(time.perf_counter() - start)
    finally:
        await sandbox.stop(run_id)

    repo_dir = ws / "repository"
    repo_dir.mkdir()
    job = Job(
        id=1,
        repository_name=f"{REPO_PREFIX}00",
        commit=commit,
        shallow_clone=True,
        sparse_checkout=[f"{path}/*"],
    )
    start = time.perf_counter()
    for _, git_argv in workspace.git_commands(job, repo_dir, f"file://{mirror}"):
        await timed_process(git_argv, env=workspace.git_env())
    out["sparse_checkout"] = ms(time.perf_counter() - start)
    if not (repo_dir / path / "README.md").is_file():
        raise RuntimeError(f"the sparse checkout floor has no {path}/README.md")

    shutil.rmtree(ws, ignore_errors=True)
    return out


def measure_floors(
    params: Params, tarball: Path, scratch: Path, mirror: Path, path: str
) -> dict[str, list[float]]:
    """Every floor, `params.samples` times (after one discarded sample), in ms."""
    commit = subprocess.run(
        ["git", "rev-parse", "refs/heads/main"],
        cwd=mirror,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    async def sample_all() -> dict[str, list[float]]:
        images = ImageStore(scratch / "floor-images")
        await images.import_image(IMAGE, tarball)
        await images.ensure(IMAGE)
        await floor_sample(images, scratch, mirror, commit, path)  # page cache, first starts
        floors: dict[str, list[float]] = {}
        for _ in range(params.samples):
            for key, value in (await floor_sample(images, scratch, mirror, commit, path)).items():
                floors.setdefault(key, []).append(value)
        return floors

    return asyncio.run(sample_all())


# -- end to end ---------------------------------------------------------------------------


class Run:
    """One run's fleet: server, worker and executors on a fresh database."""

    def __init__(self, params: Params, scratch: Path, url: DatabaseURL) -> None:
        self.params = params
        self.scratch = scratch
        self.url = url
        self.fleet = Fleet(url, scratch / "data", job_queues="default")
        self.worker: Process | None = None
        self.spec_file = scratch / "spec.yaml"
        self.spec_file.write_text(SPEC)
        # The user the spec is submitted as (its namespace and fair share).
        self.token = ""

    @property
    def headers(self) -> dict[str, str]:
        """The bench user's Authorization header."""
        return {"Authorization": f"token {self.token}"}

    def offload(self, *args: str) -> None:
        """Run an offload command; RuntimeError when it fails."""
        done = self.fleet.offload(*args, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"offload {' '.join(args)}: {done.stderr or done.stdout}")

    def start(self, executors: list[str]) -> None:
        """Server, worker and executors, each waited for until it says it is ready."""
        self.fleet.start_server()
        self.token = self.fleet.user(USER)
        args = ["worker"]
        for job in WORKER_JOBS:
            args += ["--job", job]
        self.worker = spawn("worker", args, self.fleet.env)
        self.worker.wait_for("offload worker listening", timeout=60)
        for name in executors:
            self.fleet.start_executor(
                name,
                slots=self.params.slots,
                EXECUTOR_QUEUE_NAME="batches",
                EXECUTOR_DATA_DIR=str(self.executor_dir(name)),
            )

    def executor_dir(self, name: str) -> Path:
        """An executor's data directory (its image store and workspaces)."""
        return self.fleet.data_dir / f"executor-{name}"

    def processes(self) -> list[Process]:
        """Every long-running process, executors first (the order to stop them in)."""
        server = [self.fleet.server] if self.fleet.server else []
        worker = [self.worker] if self.worker else []
        return [*self.fleet.executors, *worker, *server]

    def stop(self) -> None:
        """Stop executors, then the worker, then the server."""
        stop_processes(list(self.fleet.executors))
        stop_processes([p for p in (self.worker, self.fleet.server) if p is not None])

    def preview_process(self, out: Path, *, as_json: bool) -> subprocess.Popen[bytes]:
        """`offload batch preview -f SPEC` as the user runs it, its stdout and stderr to files."""
        argv = [sys.executable, "-m", "offload", "batch", "preview", "-f", str(self.spec_file)]
        argv += ["--json"] if as_json else []
        with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
            return subprocess.Popen(
                argv,
                env={**os.environ, **self.fleet.env, "OFFLOAD_TOKEN": self.token},
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )

    def resources(self) -> dict[str, float | None]:
        """Peak and current RSS of the server, the worker and each executor, in MB."""
        out: dict[str, float | None] = {
            "server_peak_rss_mb": rss_mb(self.fleet.server),
            "worker_peak_rss_mb": rss_mb(self.worker),
            "server_rss_mb": rss_mb(self.fleet.server, "VmRSS"),
            "worker_rss_mb": rss_mb(self.worker, "VmRSS"),
        }
        for process in self.fleet.executors:
            out[f"executor_peak_rss_mb.{process.name}"] = rss_mb(process)
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: each component's own and its reaped children's, and the machine's.

        The server's children are the `git upload-pack` processes behind the executors'
        fetches; an executor's are its git commands, host helpers and sandboxes.
        """
        busy, steal = machine_seconds()
        out = {"machine": busy, "steal": steal}
        groups = {
            "server": [self.fleet.server] if self.fleet.server else [],
            "worker": [self.worker] if self.worker else [],
            "executors": list(self.fleet.executors),
        }
        for group, processes in groups.items():
            for process in processes:
                times = cpu_seconds(process.popen.pid)
                if times is None:
                    continue
                out[f"{group}.own"] = out.get(f"{group}.own", 0.0) + times[0]
                out[f"{group}.children"] = out.get(f"{group}.children", 0.0) + times[1]
        if self.url.dialect == "postgresql":
            # PostgreSQL's backends are not our children: count those serving this database.
            for pid in asyncio.run(backend_pids(self.url)):
                times = cpu_seconds(pid)
                if times is not None:
                    out["database.own"] = out.get("database.own", 0.0) + times[0]
        # This process: the progress polling, and the `offload batch preview` it started.
        mine = os.times()
        out["bench.own"] = mine.user + mine.system
        out["bench.children"] = mine.children_user + mine.children_system
        return out

    def alive(self) -> None:
        """RuntimeError naming the first long-running process that has exited."""
        for process in self.processes():
            if process.popen.poll() is not None:
                raise RuntimeError(
                    f"{process.name} exited {process.popen.returncode}:\n"
                    + "".join(process.lines[-30:])
                )

    def execute(self, console: Console) -> dict[str, Any]:
        """The batch preview of N workspaces, to the end, with progress; its figures."""
        n = self.params.workspaces
        out = self.scratch / "preview.json"
        client = httpx.Client(base_url=self.fleet.base, timeout=120, headers=self.headers)
        load_before = os.getloadavg()[0]
        cpu_before = self.cpu()
        start = time.perf_counter()
        cli = self.preview_process(out, as_json=True)
        last_change, last_done, last_t = start, -1, start
        progress: list[dict[str, Any]] = []
        spec_id: str | None = None
        try:
            while cli.poll() is None:
                time.sleep(min(self.params.progress, 0.5))
                now = time.perf_counter()
                if now - last_t < self.params.progress and cli.poll() is None:
                    continue
                self.alive()
                counts = self.queue_counts(client)
                done = sum(counts.get("batches", {}).get(s, 0) for s in FINISHED)
                total = sum(counts.get("batches", {}).values())
                resolving = sum(counts.get("batch_resolutions", {}).get(s, 0) for s in FINISHED)
                usage = self.resources()
                rate = (done - max(last_done, 0)) / (now - last_t)
                if spec_id is None and total:
                    spec_id = asyncio.run(latest_spec(self.url))
                # The call the CLI makes every 0.5 s while it waits (progress only: not done).
                poll = self.time_get(client, spec_id) if spec_id and cli.poll() is None else None
                progress.append(
                    {"t_s": now - start, "done": done, "queued": total, "progress_get_ms": poll}
                    | {k: v for k, v in usage.items() if "." not in k}
                )
                phase = "executing" if resolving else "resolving"
                console.print(
                    f"  [{now - start:7.1f}s] {phase}: {done}/{n} done of {total} jobs; "
                    f"{done / (now - start):.1f} ws/s, lately {rate:.1f}; RSS server "
                    f"{usage['server_rss_mb'] or 0:.0f} MB, worker "
                    f"{usage['worker_rss_mb'] or 0:.0f} MB; GET spec {fmt(poll, '.0f')} ms",
                    highlight=False,
                    soft_wrap=True,
                )
                if done != last_done:
                    last_change, last_done = now, done
                elif now - last_change > self.params.stall_timeout:
                    raise RuntimeError(
                        f"no workspace finished for {self.params.stall_timeout:g}s "
                        f"({done}/{n} done); server log tail:\n"
                        + "".join(self.fleet.server.lines[-20:] if self.fleet.server else [])
                    )
                last_t = now
            wall = time.perf_counter() - start
            cpu_after = self.cpu()
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
            client.close()
        if cli.returncode != 0:
            raise RuntimeError(
                f"offload batch preview exited {cli.returncode}: "
                f"{out.with_suffix('.err').read_text()[-2000:]}"
            )
        view = json.loads(out.read_text())
        states, operations = view["states"], view["operations"] or []
        if states != {"completed": n} or len(operations) != n:
            raise RuntimeError(
                f"the preview shows states {states} and {len(operations)} operations, "
                f"not {n} completed workspaces and {n} operations"
            )
        cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
        # The machine is shared: what no process of this run used went to other processes.
        ours = sum(v for k, v in cpu.items() if k not in ("machine", "steal"))
        cpu["others"] = cpu["machine"] - ours
        return {
            "wall_s": wall,
            "spec_id": view["id"],
            "states": states,
            "progress": progress,
            "cpu_s": cpu,
            "load_1min": {"before": load_before, "after": os.getloadavg()[0]},
        }

    def time_get(self, client: httpx.Client, spec_id: str) -> float:
        """Milliseconds of one GET /api/batches/specs/{id}."""
        start = time.perf_counter()
        client.get(f"/api/batches/specs/{spec_id}").raise_for_status()
        return ms(time.perf_counter() - start)

    def queue_counts(self, client: httpx.Client) -> dict[str, dict[str, int]]:
        """GET /api/queues: each record queue's counts by state."""
        response = client.get("/api/queues")
        response.raise_for_status()
        return {q["queue"]: q["counts"] for q in response.json()}

    def preview_shown(self) -> dict[str, Any]:
        """A fresh `offload batch preview -f SPEC` of the executed spec, to its N-row table."""
        n = self.params.workspaces
        out = self.scratch / "preview-cached.txt"
        start = time.perf_counter()
        cli = self.preview_process(out, as_json=False)
        try:
            code = cli.wait(timeout=3600)
        finally:
            if cli.poll() is None:
                cli.kill()
        seconds = time.perf_counter() - start
        text = out.read_text()
        if code != 0:
            raise RuntimeError(
                f"offload batch preview (cached) exited {code}: "
                f"{out.with_suffix('.err').read_text()[-2000:]}"
            )
        summary = f"{n} workspaces ({n} cached); {n} changesets"
        if summary not in text:
            tail = "\n".join(text.splitlines()[-3:])
            raise RuntimeError(f"the cached preview does not say {summary!r}:\n{tail}")
        return {"seconds": seconds, "rows": len(text.splitlines()) - 3}

    def get_preview(self, spec_id: str) -> list[float]:
        """Seconds of each GET /api/batches/specs/{id} of the executed spec."""
        times = []
        with httpx.Client(base_url=self.fleet.base, timeout=600, headers=self.headers) as client:
            for _ in range(self.params.samples):
                start = time.perf_counter()
                response = client.get(f"/api/batches/specs/{spec_id}")
                times.append(time.perf_counter() - start)
                response.raise_for_status()
                if len(response.json()["operations"]) != self.params.workspaces:
                    raise RuntimeError(f"GET /api/batches/specs/{spec_id}: not N operations")
        return times


async def backend_pids(url: DatabaseURL) -> list[int]:
    """The pids of the PostgreSQL backends connected to `url`'s database, but our own."""
    db = await open_database(url, pool_size=1)
    try:
        rows = await db.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await db.close()
    return [int(row["pid"]) for row in rows]


async def latest_spec(url: DatabaseURL) -> str | None:
    """The id users see of the newest batch spec (the database is this run's alone)."""
    db = await open_database(url, pool_size=1)
    try:
        rows = await db.fetch("SELECT rand_id FROM batch_specs ORDER BY id DESC LIMIT 1")
    finally:
        await db.close()
    return str(rows[0]["rand_id"]) if rows else None


async def resolution_of(db: Database, rand_id: str) -> tuple[int, dict[str, float]]:
    """A spec's row id, and its submit-to-resolution-start and resolution times in seconds."""
    spec = (
        await db.fetch("SELECT id, created_at FROM batch_specs WHERE rand_id = :r", {"r": rand_id})
    )[0]
    job = (
        await db.fetch(
            "SELECT started_at, finished_at FROM batch_resolution_jobs WHERE batch_spec_id = :s",
            {"s": spec["id"]},
        )
    )[0]
    created = parse_time(spec["created_at"])
    start, end = parse_time(job["started_at"]), parse_time(job["finished_at"])
    assert created and start and end
    return int(spec["id"]), {
        "submit_to_resolution_start_s": (start - created).total_seconds(),
        "resolution_s": (end - start).total_seconds(),
        "resolved_at": end.timestamp(),
    }


async def cached_resolution(url: DatabaseURL) -> dict[str, float]:
    """The resolution times of the newest spec (the cached preview's)."""
    db = await open_database(url, pool_size=1)
    try:
        rand_id = (await db.fetch("SELECT rand_id FROM batch_specs ORDER BY id DESC LIMIT 1"))[0]
        _, times = await resolution_of(db, str(rand_id["rand_id"]))
    finally:
        await db.close()
    del times["resolved_at"]
    return times


async def timeline(url: DatabaseURL, spec_id: str) -> dict[str, Any]:
    """The executed spec's phases from the database's own timestamps."""
    db = await open_database(url, pool_size=1)
    try:
        row_id, resolution = await resolution_of(db, spec_id)
        jobs = await db.fetch(
            "SELECT queued_at, started_at, finished_at, worker_hostname "
            "FROM batch_workspace_jobs WHERE batch_spec_id = :s",
            {"s": row_id},
        )
        entries = await db.fetch(
            "SELECT l.key, l.duration_ms FROM execution_logs l "
            "JOIN batch_workspace_jobs j ON j.id = l.record_id "
            "WHERE l.queue = 'batches' AND j.batch_spec_id = :s",
            {"s": row_id},
        )
    finally:
        await db.close()
    started = [parse_time(j["started_at"]) for j in jobs]
    finished = [parse_time(j["finished_at"]) for j in jobs]
    durations = [
        ms((f - s).total_seconds()) for s, f in zip(started, finished, strict=True) if s and f
    ]
    first = min(s for s in started if s)
    last = max(f for f in finished if f)
    span = (last - first).total_seconds()
    resolved = datetime.fromtimestamp(resolution.pop("resolved_at"), UTC)
    by_executor: dict[str, int] = {}
    for j in jobs:
        by_executor[str(j["worker_hostname"])] = by_executor.get(str(j["worker_hostname"]), 0) + 1
    keyed: dict[str, list[float]] = {}
    for entry in entries:
        # One name per kind of entry: step.sandbox.run.0 and step.host.pre.0 keep theirs.
        keyed.setdefault(str(entry["key"]), []).append(float(entry["duration_ms"] or 0))
    return {
        "entries": {
            key: {"p50_ms": percentile(values, 50), "mean_ms": statistics.fmean(values)}
            for key, values in keyed.items()
        },
        **resolution,
        "resolution_to_first_start_s": (first - resolved).total_seconds(),
        "execution_span_s": span,
        "execution_span_ws_per_s": len(jobs) / span if span > 0 else None,
        "job_p50_ms": percentile(durations, 50),
        "job_p95_ms": percentile(durations, 95),
        "job_max_ms": max(durations),
        "by_executor": by_executor,
    }


def log_problems(run: Run) -> dict[str, list[str]]:
    """Lines of the long-running processes' output that report errors or warnings."""
    words = ("Traceback", "ERROR", "Error", "WARNING", "warning", "timed out", "Timeout")
    out: dict[str, list[str]] = {}
    for process in run.processes():
        found = [line.rstrip() for line in process.lines if any(w in line for w in words)]
        if found:
            out[process.name] = found[:20] + ([f"... {len(found) - 20} more"] * (len(found) > 20))
    return out


def one_run(params: Params, console: Console) -> dict[str, Any]:
    """Floors, the end-to-end preview, the cached preview and resources, on a fresh database."""
    scratch = Path(tempfile.mkdtemp(prefix="offload-bench-scale-"))
    # Steps of a root executor run as an unprivileged uid, which must pass through.
    scratch.chmod(0o711)
    try:
        with database(params.postgres_url, scratch, source="--postgres", keep=params.keep) as url:
            return measure_run(params, console, scratch, url)
    finally:
        if params.keep:
            console.print(f"  kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def measure_run(
    params: Params, console: Console, scratch: Path, url: DatabaseURL
) -> dict[str, Any]:
    """One run on `url`, in `scratch`."""
    run = Run(params, scratch, url)
    setup: dict[str, float] = {}
    start = time.perf_counter()
    run.offload("migrate", "up")
    dirs = layout(params.workspaces, params.per_repo)
    sources = {name: scratch / "src" / f"{name}.git" for name in dirs}
    for name, path in sources.items():
        make_monorepo(path, dirs[name])
    setup["repositories_s"] = time.perf_counter() - start
    start = time.perf_counter()
    asyncio.run(register(url, run.fleet.data_dir, sources))
    setup["register_s"] = time.perf_counter() - start
    start = time.perf_counter()
    tarball = build_tarball(build_rootfs(scratch / "busybox-rootfs"), scratch / "busybox.tar")
    executors = [f"exec-{n}" for n in range(params.executors)]
    for name in executors:
        import_image(run.fleet, tarball, run.executor_dir(name))
    setup["images_s"] = time.perf_counter() - start
    console.print(
        f"  setup: {len(sources)} monorepo(s) made in {setup['repositories_s']:.1f}s, "
        f"registered in {setup['register_s']:.1f}s; image imported into {len(executors)} "
        f"executor(s) in {setup['images_s']:.1f}s",
        highlight=False,
    )
    try:
        run.start(executors)
        console.print(f"  floors: {params.samples} samples each")
        first = next(iter(dirs))
        mirror = Mirrors.in_data_dir(run.fleet.data_dir).path(first)
        floors = measure_floors(params, tarball, scratch, mirror, dirs[first][0])
        console.print(f"  end to end: offload batch preview over {params.workspaces} workspaces")
        executed = run.execute(console)
        after = run.resources()
        size = asyncio.run(database_size(url))
        phases = asyncio.run(timeline(url, executed["spec_id"]))
        console.print(
            f"  executed in {executed['wall_s']:.1f}s; preview of the executed spec again "
            "(step cache)"
        )
        shown = run.preview_shown() | asyncio.run(cached_resolution(url))
        gets = run.get_preview(executed["spec_id"])
        run.alive()
        end = run.resources()
        size_end = asyncio.run(database_size(url))
        problems = log_problems(run)
    finally:
        run.stop()
    return summarize_run(
        params, floors, executed, phases, shown, gets, after, end, size, size_end
    ) | {
        "setup": setup,
        "log_problems": problems,
        "progress": executed["progress"],
    }


def summarize_run(
    params: Params,
    floors: dict[str, list[float]],
    executed: dict[str, Any],
    phases: dict[str, Any],
    shown: dict[str, Any],
    gets: list[float],
    after: dict[str, float | None],
    end: dict[str, float | None],
    size: int,
    size_end: int,
) -> dict[str, Any]:
    """One run's figures, flat (name -> value), with the raw samples beside them."""
    n = params.workspaces
    slots = params.executors * params.slots
    wall = float(executed["wall_s"])
    flat: dict[str, float] = {
        "wall_s": wall,
        "workspaces_per_s": n / wall,
        "per_workspace_wall_ms": ms(wall / n),
    }
    for name, values in floors.items():
        flat[f"floor.{name}.p50_ms"] = statistics.median(values)
    floor = flat["floor.sandbox.p50_ms"] + flat["floor.sparse_checkout.p50_ms"]
    flat["floor_ms"] = floor
    flat["floor_limited_ws_per_s"] = slots / (floor / 1000)
    flat["ratio_to_floor"] = flat["workspaces_per_s"] / flat["floor_limited_ws_per_s"]
    for key, value in phases.items():
        if isinstance(value, (int, float)) and value is not None:
            flat[f"timeline.{key}"] = float(value)
    flat["preview_shown_s"] = float(shown["seconds"])
    flat["preview_shown.resolution_s"] = shown["resolution_s"]
    flat["preview_shown.submit_to_resolved_s"] = (
        shown["submit_to_resolution_start_s"] + shown["resolution_s"]
    )
    flat["preview_get_s"] = statistics.median(gets)
    polls = [p["progress_get_ms"] for p in executed["progress"] if p["progress_get_ms"]]
    if polls:
        flat["progress_get_p50_ms"] = statistics.median(polls)
    for key, value in end.items():
        if value is not None:
            flat[key] = value
    for key, value in after.items():
        if value is not None and "peak" in key:
            flat[f"after_execution.{key}"] = value
    cpu = executed["cpu_s"]
    for key, value in cpu.items():
        flat[f"cpu_per_workspace_ms.{key}"] = ms(value / n)
    flat["cpu_utilisation"] = cpu["machine"] / (wall * (os.cpu_count() or 1))
    flat["cpu_steal_share"] = cpu["steal"] / (wall * (os.cpu_count() or 1))
    flat["cpu_share_others"] = cpu["others"] / cpu["machine"] if cpu["machine"] else 0.0
    flat["load_1min_before"] = executed["load_1min"]["before"]
    for key, entry in phases["entries"].items():
        flat[f"entry.{key}.p50_ms"] = entry["p50_ms"]
        flat[f"entry.{key}.mean_ms"] = entry["mean_ms"]
    flat["db_size_mb"] = size / MB
    flat["db_size_end_mb"] = size_end / MB
    return {
        "figures": flat,
        "by_executor": phases["by_executor"],
        "floor_samples": floors,
        "preview_get_samples_s": gets,
        "preview_rows": shown["rows"],
    }


def targets(meds: dict[str, float], n: int) -> list[dict[str, Any]]:
    """The acceptance targets, met or missed (they are set for N = 45,000)."""
    return [
        {
            "target": "workspaces/s",
            "goal": f">= {TARGETS['workspaces_per_s']:g}",
            "value": meds["workspaces_per_s"],
            "met": meds["workspaces_per_s"] >= TARGETS["workspaces_per_s"],
        },
        {
            "target": "server peak RSS (MB)",
            "goal": f"<= {TARGETS['server_peak_rss_mb']:g}",
            "value": meds["server_peak_rss_mb"],
            "met": meds["server_peak_rss_mb"] <= TARGETS["server_peak_rss_mb"],
        },
        {
            "target": f"preview of {n} rows shown (s)",
            "goal": f"<= {TARGETS['preview_shown_s']:g}",
            "value": meds["preview_shown_s"],
            "met": meds["preview_shown_s"] <= TARGETS["preview_shown_s"],
        },
    ]


# -- reporting ----------------------------------------------------------------------------


def machine_info(postgres_url: str | None) -> dict[str, Any]:
    """Where the benchmark ran."""
    postgres = None
    if postgres_url:
        postgres = tool_version("psql", postgres_url, "-Atc", "SHOW server_version")
    return {
        "cpu_count": os.cpu_count(),
        "memory_mb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MB,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "tools": {
            "bwrap": tool_version("bwrap", "--version"),
            "git": tool_version("git", "--version"),
            "umoci": tool_version("umoci", "--version"),
            "postgresql": postgres,
        },
        **software(("offload", "httpx", "uvicorn")),
    }


def fmt(value: float | None, spec: str = ".1f") -> str:
    """`value` formatted with `spec`, or a dash."""
    return "-" if value is None else format(value, spec)


GIT = ("init", "fetch", "sparse-checkout-set", "checkout")
ENTRY_ORDER = (
    *(f"setup.git.{command}" for command in GIT),
    "setup.files",
    "setup.images",
    "step.host.pre.0",
    "step.sandbox.run.0",
    "step.host.post.0",
)


def entry_order(key: str) -> tuple[int, str]:
    """Log entries in the order a job runs them; unknown ones last, by name."""
    return (ENTRY_ORDER.index(key) if key in ENTRY_ORDER else len(ENTRY_ORDER), key)


def print_summary(
    console: Console, params: Params, meds: dict[str, float], goals: list[dict[str, Any]]
) -> None:
    """The medians, floors, ratio and targets as tables."""
    n, slots = params.workspaces, params.executors * params.slots
    db = "PostgreSQL" if params.postgres_url else "SQLite"
    figures = Table(
        title=f"Batch preview of {n} workspaces, {params.executors} executors x {params.slots} "
        f"slots (sandbox), {db}: medians of {params.runs} run(s)"
    )
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    figures.add_column("what")
    rows = [
        ("wall time", fmt(meds["wall_s"]) + " s", "`offload batch preview --json` start to exit"),
        ("workspaces/s", fmt(meds["workspaces_per_s"], ".2f"), "N / wall time"),
        ("per-workspace wall", fmt(meds["per_workspace_wall_ms"]) + " ms", "wall time / N"),
        (
            "  submit to resolved",
            fmt(
                meds["timeline.submit_to_resolution_start_s"] + meds["timeline.resolution_s"], ".2f"
            )
            + " s",
            f"spec created to resolution done (resolution {meds['timeline.resolution_s']:.2f} s)",
        ),
        (
            "  execution span",
            fmt(meds["timeline.execution_span_s"]) + " s",
            f"first workspace start to last end "
            f"({fmt(meds.get('timeline.execution_span_ws_per_s'), '.2f')} ws/s)",
        ),
        (
            "  workspace job",
            f"{meds['timeline.job_p50_ms']:.0f} / {meds['timeline.job_p95_ms']:.0f} ms",
            f"started to finished, p50 / p95, {slots} running at once",
        ),
        (
            "preview shown",
            fmt(meds["preview_shown_s"], ".2f") + " s",
            f"fresh `offload batch preview` of the executed spec: {n} cached, {n}-row table",
        ),
        (
            "  resolved",
            fmt(meds["preview_shown.submit_to_resolved_s"], ".2f") + " s",
            f"its spec created to resolution done (resolution "
            f"{meds['preview_shown.resolution_s']:.2f} s: N cache lookups, N changeset specs)",
        ),
        (
            "  GET preview",
            fmt(meds["preview_get_s"], ".2f") + " s",
            f"GET /api/batches/specs/ID of the executed spec, {n} operations (info)",
        ),
        (
            "  GET while executing",
            fmt(meds.get("progress_get_p50_ms"), ".0f") + " ms",
            "the same GET before the spec is done (progress only), as the CLI polls it "
            "every 0.5 s; median (info)",
        ),
        ("server peak RSS", fmt(meds["server_peak_rss_mb"]) + " MB", "VmHWM at the end"),
        ("worker peak RSS", fmt(meds["worker_peak_rss_mb"]) + " MB", "VmHWM at the end"),
        ("database size", fmt(meds["db_size_mb"]) + " MB", f"after execution ({db})"),
        ("  at the end", fmt(meds["db_size_end_mb"]) + " MB", "after the cached preview (info)"),
    ]
    for row in rows:
        figures.add_row(*row)
    for key in sorted(k for k in meds if k.startswith("executor_peak_rss_mb.")):
        figures.add_row(f"  {key.split('.', 1)[1]} peak RSS", fmt(meds[key]) + " MB", "(info)")
    console.print(figures)

    floors = Table(title="Per-workspace floor, measured in the same run(s) (ms, median)")
    floors.add_column("floor")
    floors.add_column("ms", justify="right")
    floors.add_column("what")
    floors.add_row(
        "sandbox",
        fmt(meds["floor.sandbox.p50_ms"]),
        "SandboxRuntime.command() on the image, `true`",
    )
    floors.add_row(
        "sparse checkout",
        fmt(meds["floor.sparse_checkout.p50_ms"]),
        "the executor's git commands, sparse, against file://<mirror>",
    )
    floors.add_row("floor", fmt(meds["floor_ms"]), "sandbox + sparse checkout")
    console.print(floors)

    ratio = Table(title="Achieved against the floor")
    for column in ("", "ws/s", "achieved / this", "this / achieved"):
        ratio.add_column(column, justify="right" if column else "left")
    ratio.add_row("achieved", fmt(meds["workspaces_per_s"], ".2f"), "", "")
    ratio.add_row(
        f"floor-limited ({slots} slots / floor)",
        fmt(meds["floor_limited_ws_per_s"], ".2f"),
        f"{meds['ratio_to_floor']:.3f}",
        f"{1 / meds['ratio_to_floor']:.1f}x",
    )
    console.print(ratio)

    entries = Table(title="Where a workspace job's time goes: its log entries (ms, info)")
    for column in ("entry", "p50", "mean"):
        entries.add_column(column, justify="right" if column != "entry" else "left")
    keys = sorted({k[len("entry.") : -len(".p50_ms")] for k in meds if k.endswith(".p50_ms")
                   and k.startswith("entry.")}, key=entry_order)  # fmt: skip
    for key in keys:
        entries.add_row(
            key, fmt(meds[f"entry.{key}.p50_ms"], ".0f"), fmt(meds[f"entry.{key}.mean_ms"], ".0f")
        )
    entries.add_row(
        "whole job", fmt(meds["timeline.job_p50_ms"], ".0f"), "started to finished, p50"
    )
    console.print(entries)

    cpu = Table(
        title=f"CPU per workspace during execution (ms, info): the {os.cpu_count()} CPUs were "
        f"{meds['cpu_utilisation']:.0%} busy ({meds['cpu_share_others']:.0%} of it unaccounted: "
        f"other processes) and {meds['cpu_steal_share']:.0%} stolen by the hypervisor"
    )
    for column in ("component", "own", "reaped children"):
        cpu.add_column(column, justify="right" if column != "component" else "left")
    for group in ("server", "worker", "executors", "database", "bench"):
        if f"cpu_per_workspace_ms.{group}.own" not in meds:
            continue
        cpu.add_row(
            group,
            fmt(meds.get(f"cpu_per_workspace_ms.{group}.own"), ".0f"),
            fmt(meds.get(f"cpu_per_workspace_ms.{group}.children"), ".0f"),
        )
    cpu.add_row(
        "unaccounted", fmt(meds.get("cpu_per_workspace_ms.others"), ".0f"), "machine - the above"
    )
    cpu.add_row("machine, all", fmt(meds.get("cpu_per_workspace_ms.machine"), ".0f"), "busy")
    cpu.add_row("stolen", fmt(meds.get("cpu_per_workspace_ms.steal"), ".0f"), "by the hypervisor")
    console.print(cpu)

    table = Table(title=f"Targets (set for N = 45,000; this is N = {n})")
    for column in ("target", "goal", "measured", "status"):
        table.add_column(column, justify="right" if column in ("goal", "measured") else "left")
    for goal in goals:
        status = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        table.add_row(goal["target"], goal["goal"], f"{goal['value']:.2f}", status)
    console.print(table)


# -- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Params:
    """The benchmark's parameters from the command line."""
    parser = argparse.ArgumentParser(
        description="A simple batch change over N workspaces (sparse monorepo directories), end\n"
        "to end through a real server, worker and sandbox executors: wall time, workspaces/s,\n"
        "peak RSS, database size, the time to show the N-row preview, and the per-workspace\n"
        "floor (runtime start + sparse checkout) measured in the same run. See the docstring.",
        epilog="example: .venv/bin/python bench/batch_scale.py\n"
        "quick check: .venv/bin/python bench/batch_scale.py --workspaces 300",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workspaces", type=int, default=45000, help="workspaces N (default 45000)"
    )
    parser.add_argument("--executors", type=int, default=2, help="executors (default 2)")
    parser.add_argument("--slots", type=int, default=4, help="slots per executor (default 4)")
    parser.add_argument(
        "--runs", type=int, default=1, help="repetitions; medians are reported (default 1)"
    )
    parser.add_argument(
        "--per-repo",
        type=int,
        default=1000,
        help="workspace directories per monorepo (default 1000)",
    )
    parser.add_argument(
        "--samples", type=int, default=10, help="samples of each floor and of GET (default 10)"
    )
    parser.add_argument(
        "--progress", type=float, default=5.0, help="seconds between progress lines (default 5)"
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=900.0,
        help="give up when no workspace finishes for this long, in seconds (default 900)",
    )
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=os.environ.get("OFFLOAD_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        default=None,
        metavar="URL",
        help="run on a fresh PostgreSQL database per run, created and dropped on the server "
        f"of URL (default $OFFLOAD_BENCH_POSTGRES_URL or {DEFAULT_POSTGRES_URL}); without "
        "it, a temporary SQLite file",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each run's scratch directory (data, repositories, SQLite file, outputs) "
        "and PostgreSQL database instead of removing them",
    )
    args = parser.parse_args(argv)
    positive = (args.workspaces, args.executors, args.slots, args.runs, args.per_repo)
    if min(*positive, args.samples) < 1 or args.progress <= 0:
        parser.error(
            "--workspaces, --executors, --slots, --runs, --per-repo, --samples and "
            "--progress must be positive"
        )
    return Params(
        workspaces=args.workspaces,
        executors=args.executors,
        slots=args.slots,
        runs=args.runs,
        per_repo=args.per_repo,
        samples=args.samples,
        progress=args.progress,
        stall_timeout=args.stall_timeout,
        postgres_url=args.postgres,
        keep=args.keep,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary and write the results."""
    params = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that every process started here stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started_at = datetime.now(UTC)
    machine = machine_info(params.postgres_url)
    console.print(
        f"batch scale: {params.workspaces} workspaces, {params.executors} executors x "
        f"{params.slots} slots (sandbox), {params.runs} run(s), "
        f"{'PostgreSQL' if params.postgres_url else 'SQLite'}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}",
        highlight=False,
    )
    runs, failures = [], []
    for n in range(params.runs):
        console.print(f"run {n + 1}/{params.runs}")
        try:
            runs.append(one_run(params, console))
        except RuntimeError as exc:
            # Kept in the results: what broke at this scale is a finding too.
            console.print(f"[red]run {n + 1} failed:[/red] {exc}", highlight=False)
            failures.append({"run": n + 1, "error": str(exc)})
    meds = medians(runs, in_all=True) if runs else {}
    goals = targets(meds, params.workspaces) if runs else []
    document = {
        "benchmark": NAME,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": asdict(params) | {"spec": SPEC, "worker_jobs": list(WORKER_JOBS)},
        "definitions": {
            "wall_s": "`offload batch preview -f SPEC --json` process start to exit",
            "workspaces_per_s": "N / wall_s",
            "floor_ms": "sandbox runtime start (`true`) + sparse checkout of one workspace, "
            "medians measured in the same run",
            "floor_limited_ws_per_s": "executors x slots / floor",
            "ratio_to_floor": "workspaces_per_s / floor_limited_ws_per_s",
            "preview_shown_s": "a fresh `offload batch preview -f SPEC` of the executed, "
            "unchanged spec (every workspace from the step cache), process start to exit, "
            "rendering the N-row table",
            "preview_get_s": "GET /api/batches/specs/{id} of the executed spec (median)",
            "server_peak_rss_mb": "VmHWM of the server process at the end of the run",
            "db_size_mb": "SQLite file + WAL, or pg_database_size, after execution",
        },
        "runs": runs,
        "failures": failures,
        "medians": meds,
        "targets": goals,
    }
    path = write_results(document, NAME, latest=False)
    if runs:
        print_summary(console, params, meds, goals)
    console.print(f"results: {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
