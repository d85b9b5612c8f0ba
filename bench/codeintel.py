"""Auto-indexing: indexing end to end through an executor, upload processing and navigation.

Three parts, each run `--runs` times (medians are reported):

1. **End to end vs direct** (on the first of `--databases`): two real projects committed into
   git repositories made here. Python: the sources of a package installed from PyPI into this
   environment (`--python-package`, default `rich`, ~38k lines of pure Python with no
   generated code), with a `pyproject.toml` naming it, so inference gives one scip-python job.
   TypeScript: the `src/` of an npm tarball that ships its `.ts` sources (`--npm-package`,
   default `rxjs@7.8.1`, 251 files, ~21k lines) fetched with `npm pack`, with a
   `tsconfig.json` of our own (its tsconfig files are removed), so inference gives one
   scip-typescript job and no `npm install` step. *Direct*: the job inference gives, run in
   the sandbox runtime over a fresh clone (clone + steps, as
   tests/integration/test_indexer_images.py runs it). *End to end*: `offload codeintel index
   REPO` against a real `offload server`, a sandbox `offload executor` on the `codeintel`
   queue with the same image imported and `offload worker --job codeintel.uploads`, timed
   until the upload of that index job is completed. Target: end to end <= 1.2x direct.
2. **Upload processing**, on each database: UploadProcessor.handle (and the completion) of
   the real indexes of step 1, and of a synthetic index of about 2 MB (target <= 1 s): MB/s,
   occurrences/s, and stored bytes per occurrence (the rows' bytes: document payloads, encoded
   ranges with their paths, symbol names, over the occurrences).
3. **Navigation**, on each database: a synthetic upload of >= `--occurrences` (1,000,000)
   occurrences in a repository of as many files, shaped like scip-python's output (each file
   defines functions, refers to others' with a skew towards a few popular ones, and has local
   variables); definitions and references at `--positions` (1,000) random positions that hold
   an occurrence, through Navigator in this process, and `--http-positions` (200) through
   `GET /api/codeintel/{repo}/definitions|references` of a real server. Targets: p50 <= 5 ms,
   p99 <= 20 ms.

Run by hand as root with bubblewrap, umoci, skopeo, git and npm installed:

    .venv/bin/python bench/codeintel.py                 # the full benchmark
    .venv/bin/python bench/codeintel.py --quick         # a quick check

Results go to bench/results/codeintel-<UTC timestamp>.json (and codeintel-latest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from offload.codeintel.config import IndexJob
from offload.codeintel.inference import select_jobs
from offload.codeintel.navigation import Navigator
from offload.codeintel.scip import scip_pb2
from offload.codeintel.store import CodeintelStore
from offload.codeintel.tree import GitTree
from offload.codeintel.uploads.processor import CompletingStore, UploadProcessor
from offload.codeintel.uploads.queue import SPEC
from offload.db.base import Database
from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.executor.config import DEFAULT_MEMORY, DEFAULT_PIDS, DEFAULT_TMP
from offload.executor.images import ImageStore
from offload.executor.process import StepProcess
from offload.executor.runtimes.base import Limits, Step
from offload.executor.runtimes.sandbox import SandboxRuntime
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer
from provenance import software
from report import RESULTS, medians, percentile, write_results
from scratchdb import database

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support")]
from fleet import Fleet, git, make_repo  # noqa: E402
from indexers import indexer_tarball  # noqa: E402

NAME = "codeintel"
DATABASES = ("sqlite", "postgresql")
DEFAULT_POSTGRES_URL = "postgresql://postgres:offload-test@127.0.0.1:5432/test"
OVERHEAD_TARGET = 1.2
SMALL_INDEX_BYTES = 2_000_000
SMALL_INDEX_TARGET_S = 1.0
P50_TARGET_MS = 5.0
P99_TARGET_MS = 20.0
# What an executor gives a step by default: no network, its memory, pids and /tmp limits.
LIMITS = Limits(memory_bytes=DEFAULT_MEMORY, pids=DEFAULT_PIDS, tmp_bytes=DEFAULT_TMP)
STEP_TIMEOUT = 1800.0
INDEX_TIMEOUT = 1800.0
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "offload-bench"
# Synthetic documents: occurrences per file, and per line (each 8 characters wide, 12 apart).
SYNTH_PER_FILE = 500
SYNTH_PER_LINE = 4
SYNTH_DEFS = 20
SYNTH_LOCALS = 30


@dataclass(frozen=True)
class Params:
    """What one invocation measures."""

    runs: int
    databases: tuple[str, ...]
    python_package: str
    npm_package: str
    occurrences: int
    positions: int
    http_positions: int
    skip_end_to_end: bool
    postgres_url: str


@dataclass(frozen=True)
class Project:
    """A real project committed into a repository made here."""

    name: str  # the repository's name
    indexer: str  # deploy/indexers/build's name
    path: Path
    commit: str
    description: str


# -- the projects -------------------------------------------------------------------------


def python_project(scratch: Path, package: str) -> Project:
    """The installed sources of PyPI package `package`, with a pyproject.toml naming it."""
    dist = importlib.metadata.distribution(package)
    top = Path(str(dist.locate_file(package)))
    if not top.is_dir():
        raise SystemExit(f"{package} is not an installed package directory ({top}); pick another")
    files = {
        "pyproject.toml": f'[project]\nname = "{package}"\nversion = "{dist.version}"\n',
    }
    lines = 0
    for source in sorted(top.rglob("*.py")):
        if "__pycache__" in source.parts:
            continue
        text = source.read_text(errors="replace")
        lines += text.count("\n")
        files[f"{package}/{source.relative_to(top)}"] = text
    name = f"py-{package}"
    commit = make_repo(scratch / "sources" / name, files)
    desc = f"{package} {dist.version} from PyPI: {len(files) - 1} files, {lines} lines"
    return Project(name, "scip-python", scratch / "sources" / name, commit, desc)


def typescript_project(scratch: Path, spec: str) -> Project:
    """The `.ts` sources of npm package `spec` (`npm pack`, cached), with our tsconfig.json."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarballs = sorted(CACHE.glob(spec.replace("@", "-").lstrip("-") + ".tgz"))
    if not tarballs:
        done = subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(CACHE)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise SystemExit(f"npm pack {spec} failed: {done.stderr.strip()}")
        tarballs = [CACHE / done.stdout.strip().splitlines()[-1]]
    files = {
        "tsconfig.json": json.dumps(
            {
                "compilerOptions": {
                    "target": "es2020",
                    "module": "commonjs",
                    "strict": True,
                    "lib": ["es2020", "dom"],
                },
                "include": ["src"],
            }
        )
        + "\n"
    }
    lines = 0
    with tarfile.open(tarballs[0]) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/")
            if member.isfile() and name.startswith("src/") and name.endswith(".ts"):
                extracted = archive.extractfile(member)
                assert extracted is not None
                text = extracted.read().decode()
                lines += text.count("\n")
                files[name] = text
    name = "ts-" + spec.split("@")[0].replace("/", "-")
    commit = make_repo(scratch / "sources" / name, files)
    desc = f"{spec} from npm: src/, {len(files) - 1} .ts files, {lines} lines"
    return Project(name, "scip-typescript", scratch / "sources" / name, commit, desc)


# -- 1. direct and end to end ---------------------------------------------------------------


async def inferred_job(project: Project) -> IndexJob:
    """The one job inference gives the project."""
    selection = await select_jobs(None, GitTree(project.path, project.commit))
    if len(selection.jobs) != 1:
        raise RuntimeError(f"{project.name}: inference gave {selection.jobs}, not one job")
    return selection.jobs[0]


async def run_step(
    runtime: SandboxRuntime, workspace: Path, key: str, image: str, lines: list[str]
) -> None:
    """A shell script of `lines` in `image` in the sandbox, as the executor runs a step."""
    script = f".offload-{key}.sh"
    (workspace / script).write_text("set -e\n" + "\n".join(lines) + "\n")
    shell = await runtime.shell(image)
    step = Step(key, script, image=image, shell=shell.path)
    output: list[str] = []

    async def sink(stream: str, line: str) -> None:
        output.append(line)

    argv = runtime.command(step, workspace, LIMITS, f"bench-{key}")
    code = await StepProcess.for_runtime(runtime, f"bench-{key}", argv, sink).run(
        timeout=STEP_TIMEOUT
    )
    if code != 0:
        tail = "\n".join(output[-30:])
        raise RuntimeError(f"step {key} in {image} exited {code}:\n{tail}")


async def index_directly(
    runtime: SandboxRuntime, project: Project, job: IndexJob, workspace: Path
) -> tuple[float, Path]:
    """Seconds to clone the project and run its job in the sandbox; the index written."""
    started = time.perf_counter()
    git("clone", "-q", str(project.path), str(workspace), cwd=workspace.parent)
    for number, step in enumerate(job.steps):
        lines = [f"cd {shlex.quote(step.root or '.')}", *step.commands]
        await run_step(runtime, workspace, f"pre-{number}", step.image, lines)
    lines = [f"cd {shlex.quote(job.root or '.')}", *job.local_steps, shlex.join(job.indexer_args)]
    await run_step(runtime, workspace, "index", job.indexer, lines)
    elapsed = time.perf_counter() - started
    index = workspace / job.root / job.outfile
    if not index.is_file():
        raise RuntimeError(f"{project.name}: the indexer wrote no {job.outfile}")
    return elapsed, index


async def job_and_upload(url: DatabaseURL, job_id: int) -> tuple[str, str, Any]:
    """Index job `job_id`'s state and failure message, and its upload (or None)."""
    db = await open_database(url)
    try:
        rows = await db.fetch(
            "SELECT state, failure_message FROM codeintel_index_jobs WHERE id = :id",
            {"id": job_id},
        )
        found = [u for u in await CodeintelStore(db).uploads(limit=500) if u.index_job_id == job_id]
        return str(rows[0]["state"]), str(rows[0]["failure_message"]), found[0] if found else None
    finally:
        await db.close()


async def phases(url: DatabaseURL, job_id: int, upload_id: int) -> dict[str, float]:
    """Where the end-to-end time went, from the stored timestamps (seconds): the job waiting
    for the executor, the executor running it (clone, steps, upload), the upload waiting for
    the worker, and processing."""
    db = await open_database(url)
    try:
        job = (
            await db.fetch(
                "SELECT queued_at, started_at, finished_at FROM codeintel_index_jobs "
                "WHERE id = :id",
                {"id": job_id},
            )
        )[0]
        upload = (
            await db.fetch(
                "SELECT queued_at, started_at, finished_at FROM codeintel_uploads WHERE id = :id",
                {"id": upload_id},
            )
        )[0]
    finally:
        await db.close()

    def span(a: Any, b: Any) -> float:
        if a is None or b is None:
            return -1.0
        # SQLite answers raw SQL with ISO text, PostgreSQL with datetimes.
        a, b = (datetime.fromisoformat(t) if isinstance(t, str) else t for t in (a, b))
        return float((b - a).total_seconds())

    return {
        "job_wait_s": span(job["queued_at"], job["started_at"]),
        "executor_s": span(job["started_at"], job["finished_at"]),
        "upload_wait_s": span(upload["queued_at"], upload["started_at"]),
        "processing_s": span(upload["started_at"], upload["finished_at"]),
    }


def index_end_to_end(fleet: Fleet, project: Project) -> dict[str, Any]:
    """Seconds from `offload codeintel index` to the upload of that job being completed."""
    started = time.perf_counter()
    queued = fleet.offload("codeintel", "index", project.name, "--json")
    if queued.returncode != 0:
        raise RuntimeError(f"offload codeintel index {project.name}: {queued.stderr}")
    (job,) = json.loads(queued.stdout)["jobs"]
    deadline = time.monotonic() + INDEX_TIMEOUT
    while time.monotonic() < deadline:
        state, message, upload = asyncio.run(job_and_upload(fleet.url, int(job["id"])))
        if state in ("errored", "failed"):
            raise RuntimeError(f"index job {job['id']} of {project.name} {state}: {message}")
        if upload is not None and upload.state in ("completed", "failed", "errored"):
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"index job {job['id']} of {project.name} did not finish")
    elapsed = time.perf_counter() - started
    if upload.state != "completed":
        raise RuntimeError(f"upload {upload.id}: {upload.state}: {upload.failure_message}")
    return {
        "seconds": elapsed,
        **asyncio.run(phases(fleet.url, int(job["id"]), upload.id)),
        "upload_id": upload.id,
        "index_bytes": upload.size,
        "occurrences": upload.num_occurrences,
        "documents": upload.num_documents,
    }


def end_to_end_part(
    params: Params, projects: list[Project], scratch: Path, console: Console
) -> tuple[dict[str, float], dict[str, Path]]:
    """Direct and end-to-end times of each project (one of each, per run); the indexes."""
    figures: dict[str, float] = {}
    indexes: dict[str, Path] = {}
    images = {p.indexer: indexer_tarball(p.indexer) for p in projects}
    kind = params.databases[0]
    url = params.postgres_url if kind == "postgresql" else None
    scratch.mkdir(parents=True, exist_ok=True)
    with database(url, scratch, source="--postgres-url") as db_url:
        fleet = Fleet(
            db_url, scratch / "data", settings={"OFFLOAD_CODEINTEL_UPLOAD_LIMIT": str(1 << 30)}
        )
        try:
            migrated = fleet.offload("migrate", "up")
            if migrated.returncode != 0:
                raise RuntimeError(f"offload migrate up: {migrated.stderr or migrated.stdout}")
            fleet.start_server()
            executor_dir = fleet.data_dir / "executor-indexer"
            for tarball, image in images.values():
                imported = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "offload",
                        "executor",
                        "images",
                        "import",
                        image,
                        str(tarball),
                    ],
                    env={**os.environ, **fleet.env, "EXECUTOR_DATA_DIR": str(executor_dir)},
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if imported.returncode != 0:
                    raise RuntimeError(f"importing {image}: {imported.stderr}")
            fleet.start_executor("indexer", slots=1, EXECUTOR_QUEUE_NAME="codeintel")
            fleet.start_worker("codeintel.uploads")
            # The direct runs use the executor's own image store: the same unpacked image.
            store = ImageStore(executor_dir / "images", pull=False)
            for _, image in images.values():
                asyncio.run(store.ensure(image))
            runtime = SandboxRuntime(store)
            asyncio.run(runtime.check())
            for project in projects:
                added = fleet.offload("repos", "add", str(project.path))
                if added.returncode != 0:
                    raise RuntimeError(f"offload repos add: {added.stderr}")
                job = asyncio.run(inferred_job(project))
                work = scratch / "direct" / project.name
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                direct, index = asyncio.run(
                    index_directly(runtime, project, job, work / "workspace")
                )
                indexes[project.name] = index
                e2e = index_end_to_end(fleet, project)
                key = project.indexer
                figures[f"{key}.direct_s"] = direct
                figures[f"{key}.end_to_end_s"] = e2e["seconds"]
                figures[f"{key}.overhead_x"] = e2e["seconds"] / direct
                figures[f"{key}.index_bytes"] = float(e2e["index_bytes"])
                figures[f"{key}.occurrences"] = float(e2e["occurrences"] or 0)
                for phase in ("job_wait_s", "executor_s", "upload_wait_s", "processing_s"):
                    figures[f"{key}.{phase}"] = e2e[phase]
                console.print(
                    f"  {project.name}: direct {direct:.1f} s, end to end {e2e['seconds']:.1f} s "
                    f"({e2e['seconds'] / direct:.2f}x), index {e2e['index_bytes'] / 1e6:.2f} MB, "
                    f"{e2e['occurrences']} occurrences; job wait "
                    f"{e2e['job_wait_s']:.1f} s, executor "
                    f"{e2e['executor_s']:.1f} s, upload wait {e2e['upload_wait_s']:.1f} s, "
                    f"processing {e2e['processing_s']:.1f} s"
                )
        finally:
            fleet.stop_all()
    return figures, indexes


# -- synthetic indexes ----------------------------------------------------------------------


def synth_symbol(package: str, file: int, name: int) -> str:
    """A scip-python-shaped global symbol of a function of module `file`."""
    return f"scip-python python {package} 1.0.0 {package}/m{file:05d}/f{name:03d}()."


def synth_position(slot: int) -> tuple[int, int]:
    """Line and character of the `slot`th occurrence of a synthetic document."""
    return slot // SYNTH_PER_LINE, 4 + 12 * (slot % SYNTH_PER_LINE)


def synth_repository(scratch: Path, name: str, files: int) -> tuple[Path, str]:
    """A repository of `files` small modules (the paths the synthetic index covers)."""
    path = scratch / "sources" / name
    lines = SYNTH_PER_FILE // SYNTH_PER_LINE + 1
    body = "\n".join("    " + "xxxxxxxx    " * SYNTH_PER_LINE for _ in range(lines)) + "\n"
    return path, make_repo(path, {f"{name}/m{n:05d}.py": body for n in range(files)})


def synth_index(name: str, files: int, seed: int = 15) -> bytes:
    """A SCIP index of `files` documents of SYNTH_PER_FILE occurrences each: SYNTH_DEFS
    definitions with documentation, SYNTH_LOCALS local occurrences, the rest references to
    other modules' functions, skewed towards low-numbered (popular) modules."""
    rng = random.Random(seed)
    index = scip_pb2.Index()
    index.metadata.tool_info.name = "scip-python"
    index.metadata.tool_info.version = "0.6.6"
    for n in range(files):
        document = index.documents.add()
        document.relative_path = f"{name}/m{n:05d}.py"
        document.language = "python"
        for slot in range(SYNTH_PER_FILE):
            line, character = synth_position(slot)
            occurrence = document.occurrences.add()
            occurrence.range.extend([line, character, character + 8])
            if slot < SYNTH_DEFS:
                occurrence.symbol = synth_symbol(name, n, slot)
                occurrence.symbol_roles = 1
                info = document.symbols.add()
                info.symbol = occurrence.symbol
                info.documentation.append(f"```python\ndef f{slot:03d}(x: int) -> int\n```")
            elif slot < SYNTH_DEFS + SYNTH_LOCALS:
                local = slot - SYNTH_DEFS
                occurrence.symbol = f"local {local % 7}"
                occurrence.symbol_roles = 1 if local < 7 else 0
            else:
                target = min(int(rng.paretovariate(0.8)) - 1, files - 1)
                target = target if rng.random() < 0.5 else rng.randrange(files)
                occurrence.symbol = synth_symbol(name, target, rng.randrange(SYNTH_DEFS))
    return index.SerializeToString()


def synth_files_for(size: int) -> int:
    """How many synthetic documents make an index of about `size` bytes."""
    per_file = len(synth_index("sizing", 4)) / 4
    return max(1, round(size / per_file))


# -- 2. upload processing -------------------------------------------------------------------


async def process_upload(
    db: Database,
    mirrors: Mirrors,
    directory: Path,
    repo: str,
    commit: str,
    data: bytes,
    indexer: str,
) -> dict[str, float]:
    """UploadProcessor.handle of `data` and its completion, timed; what it stored."""
    queue = SqlQueueStore(db, SPEC)
    name = f"{hashlib.sha256(data).hexdigest()[:16]}-{random.random():.8f}.scip"
    (directory / name).write_bytes(data)
    upload_id = await queue.enqueue(
        {
            "repo_name": repo,
            "commit_sha": commit,
            "root": "",
            "indexer": indexer,
            "file_name": name,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    )
    (record,) = await queue.dequeue("bench", limit=1)
    assert record.id == upload_id
    processor = UploadProcessor(db, mirrors, directory)
    started = time.perf_counter()
    await processor.handle(record)
    await CompletingStore(queue, processor).mark_complete(record.lease)
    elapsed = time.perf_counter() - started
    upload = await CodeintelStore(db).upload(upload_id)
    assert upload is not None and upload.state == "completed", upload
    occurrences = float(upload.num_occurrences or 0)
    return {
        "seconds": elapsed,
        "mb_per_s": len(data) / 1e6 / elapsed,
        "occurrences_per_s": occurrences / elapsed,
        "occurrences": occurrences,
        "upload_id": float(upload_id),
    }


async def stored_bytes(db: Database, upload_ids: list[int]) -> float:
    """The bytes of the rows these uploads stored: document payloads, their paths, encoded
    ranges with their paths, and the symbol names they use (ids and row headers left out)."""
    ids = ", ".join(str(i) for i in upload_ids)
    documents = await db.fetch(
        "SELECT COALESCE(SUM(LENGTH(d.payload)), 0) AS n FROM codeintel_documents d WHERE d.id IN "
        f"(SELECT document_id FROM codeintel_upload_documents WHERE upload_id IN ({ids}))"
    )
    paths = await db.fetch(
        "SELECT COALESCE(SUM(LENGTH(path)), 0) AS n FROM codeintel_upload_documents "
        f"WHERE upload_id IN ({ids})"
    )
    ranges = await db.fetch(
        "SELECT COALESCE(SUM(COALESCE(LENGTH(definitions), 0) + COALESCE(LENGTH(refs), 0) + "
        f"LENGTH(path)), 0) AS n FROM codeintel_symbol_ranges WHERE upload_id IN ({ids})"
    )
    symbols = await db.fetch(
        "SELECT COALESCE(SUM(LENGTH(name)), 0) AS n FROM codeintel_symbols WHERE id IN "
        f"(SELECT symbol_id FROM codeintel_symbol_ranges WHERE upload_id IN ({ids}))"
    )
    range_bytes = int(ranges[0]["n"])
    return float(int(documents[0]["n"]) + int(paths[0]["n"]) + range_bytes + int(symbols[0]["n"]))


# -- 3. navigation --------------------------------------------------------------------------


async def navigate_in_process(
    db: Database, mirrors: Mirrors, repo: str, commit: str, files: int, count: int, seed: int
) -> dict[str, float]:
    """p50/p99 ms of Navigator definitions and references at `count` random positions."""
    rng = random.Random(seed)
    navigator = Navigator(db, mirrors)
    out: dict[str, float] = {}
    for kind in ("definitions", "references"):
        samples: list[float] = []
        empty = 0
        call = getattr(navigator, kind)
        for n in range(count + 20):
            file = rng.randrange(files)
            line, character = synth_position(rng.randrange(SYNTH_PER_FILE))
            path = f"{repo}/m{file:05d}.py"
            started = time.perf_counter()
            answer = await call(repo, commit, path, line, character + 2)
            elapsed = (time.perf_counter() - started) * 1000
            if n < 20:
                continue  # warm-up
            samples.append(elapsed)
            empty += not answer.locations
        out[f"{kind}.p50_ms"] = percentile(samples, 50)
        out[f"{kind}.p99_ms"] = percentile(samples, 99)
        out[f"{kind}.mean_ms"] = statistics.fmean(samples)
        out[f"{kind}.empty_answers"] = float(empty)
    return out


def navigate_http(
    fleet: Fleet, repo: str, commit: str, files: int, count: int, seed: int
) -> dict[str, float]:
    """p50/p99 ms of the navigation routes at `count` random positions, one kept-alive client."""
    rng = random.Random(seed)
    out: dict[str, float] = {}
    with httpx.Client(base_url=fleet.base, headers=fleet.headers, timeout=60) as client:
        for kind in ("definitions", "references"):
            samples: list[float] = []
            empty = 0
            for n in range(count + 10):
                file = rng.randrange(files)
                line, character = synth_position(rng.randrange(SYNTH_PER_FILE))
                query: dict[str, str | int] = {
                    "path": f"{repo}/m{file:05d}.py",
                    "line": line,
                    "character": character + 2,
                    "commit": commit,
                }
                started = time.perf_counter()
                response = client.get(f"/api/codeintel/{repo}/{kind}", params=query)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"GET {kind}: {response.status_code} {response.text}")
                if n < 10:
                    continue
                samples.append(elapsed)
                empty += not response.json()["locations"]
            out[f"http.{kind}.p50_ms"] = percentile(samples, 50)
            out[f"http.{kind}.p99_ms"] = percentile(samples, 99)
            out[f"http.{kind}.empty_answers"] = float(empty)
    return out


# -- per database ---------------------------------------------------------------------------


async def seed_and_measure(
    url: DatabaseURL,
    data_dir: Path,
    params: Params,
    projects: list[Project],
    indexes: dict[str, Path],
    synth: dict[str, tuple[Path, str, int, bytes]],
    seed: int,
    console: Console,
) -> dict[str, float]:
    """Parts 2 and 3 in this process, on the database at `url`."""
    figures: dict[str, float] = {}
    db = await open_database(url)
    try:
        mirrors = Mirrors.in_data_dir(data_dir)
        syncer = Syncer(RepoRegistry(db), mirrors)
        directory = data_dir / "uploads"
        directory.mkdir(parents=True, exist_ok=True)
        for project in projects:
            if project.name in indexes:
                await syncer.add(str(project.path), name=project.name)
        for name, (path, _, _, _) in synth.items():
            await syncer.add(str(path), name=name)
        for project in projects:
            if project.name not in indexes:
                continue
            data = indexes[project.name].read_bytes()
            done = await process_upload(
                db, mirrors, directory, project.name, project.commit, data, project.indexer
            )
            per = await stored_bytes(db, [int(done["upload_id"])]) / max(done["occurrences"], 1)
            key = f"process.{project.indexer}"
            figures |= {
                f"{key}.seconds": done["seconds"],
                f"{key}.mb_per_s": done["mb_per_s"],
                f"{key}.occurrences_per_s": done["occurrences_per_s"],
                f"{key}.bytes_per_occurrence": per,
            }
        for name, (_, commit, _, data) in synth.items():
            done = await process_upload(db, mirrors, directory, name, commit, data, "scip-python")
            per = await stored_bytes(db, [int(done["upload_id"])]) / max(done["occurrences"], 1)
            key = f"process.{name}"
            figures |= {
                f"{key}.seconds": done["seconds"],
                f"{key}.mb_per_s": done["mb_per_s"],
                f"{key}.occurrences_per_s": done["occurrences_per_s"],
                f"{key}.bytes_per_occurrence": per,
                f"{key}.occurrences": done["occurrences"],
                f"{key}.index_bytes": float(len(data)),
            }
            console.print(
                f"    processed {name}: {len(data) / 1e6:.1f} MB, {done['occurrences']:.0f} "
                f"occurrences in {done['seconds']:.2f} s"
            )
        big = "synth-big"
        _, commit, files, _ = synth[big]
        nav = await navigate_in_process(db, mirrors, big, commit, files, params.positions, seed)
        figures |= {f"navigate.{k}": v for k, v in nav.items()}
    finally:
        await db.close()
    return figures


def one_database(
    kind: str,
    params: Params,
    projects: list[Project],
    indexes: dict[str, Path],
    synth: dict[str, tuple[Path, str, int, bytes]],
    run: int,
    console: Console,
) -> dict[str, float]:
    """Parts 2 and 3 on a fresh database of `kind`, then the HTTP sample on a real server."""
    scratch = Path(tempfile.mkdtemp(prefix=f"codeintel-{kind}-"))
    url = params.postgres_url if kind == "postgresql" else None
    try:
        with database(url, scratch, source="--postgres-url") as db_url:
            fleet = Fleet(db_url, scratch / "data")
            try:
                migrated = fleet.offload("migrate", "up")
                if migrated.returncode != 0:
                    raise RuntimeError(f"offload migrate up: {migrated.stderr}")
                figures = asyncio.run(
                    seed_and_measure(
                        db_url, scratch / "data", params, projects, indexes, synth, run, console
                    )
                )
                fleet.start_server()
                _, commit, files, _ = synth["synth-big"]
                figures |= navigate_http(
                    fleet, "synth-big", commit, files, params.http_positions, run
                )
            finally:
                fleet.stop_all()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return figures


def one_run(
    params: Params,
    projects: list[Project],
    synth: dict[str, tuple[Path, str, int, bytes]],
    scratch: Path,
    run: int,
    console: Console,
) -> dict[str, Any]:
    """Every part once."""
    figures: dict[str, float] = {}
    indexes: dict[str, Path] = {}
    if not params.skip_end_to_end:
        part, indexes = end_to_end_part(params, projects, scratch / f"run-{run}", console)
        figures |= {f"e2e.{k}": v for k, v in part.items()}
    for kind in params.databases:
        console.print(f"  {kind}: processing and navigation")
        part = one_database(kind, params, projects, indexes, synth, run, console)
        figures |= {f"{kind}.{k}": v for k, v in part.items()}
    return {"figures": figures}


# -- the report -----------------------------------------------------------------------------


def targets(meds: dict[str, float], params: Params) -> list[dict[str, Any]]:
    """Each target with the figure measured, its ratio and whether it is met."""
    goals: list[dict[str, Any]] = []

    def goal(name: str, limit: float, key: str, unit: str) -> None:
        if key in meds:
            value = meds[key]
            goals.append(
                {
                    "target": f"{name} <= {limit:g} {unit}",
                    "figure": key,
                    "value": value,
                    "ratio": value / limit,
                    "met": value <= limit,
                }
            )

    for indexer in ("scip-python", "scip-typescript"):
        goal(f"{indexer} end to end / direct", OVERHEAD_TARGET, f"e2e.{indexer}.overhead_x", "x")
    for kind in params.databases:
        goal(
            f"{kind}: ~2 MB index processed",
            SMALL_INDEX_TARGET_S,
            f"{kind}.process.synth-2mb.seconds",
            "s",
        )
        for nav in ("definitions", "references"):
            goal(f"{kind}: {nav} p50", P50_TARGET_MS, f"{kind}.navigate.{nav}.p50_ms", "ms")
            goal(f"{kind}: {nav} p99", P99_TARGET_MS, f"{kind}.navigate.{nav}.p99_ms", "ms")
            goal(f"{kind}: HTTP {nav} p50 (info)", P50_TARGET_MS, f"{kind}.http.{nav}.p50_ms", "ms")
            goal(f"{kind}: HTTP {nav} p99 (info)", P99_TARGET_MS, f"{kind}.http.{nav}.p99_ms", "ms")
    return goals


def print_summary(console: Console, meds: dict[str, float], goals: list[dict[str, Any]]) -> None:
    """Every median, then the targets."""
    figures = Table(title="medians of the runs")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for key, value in meds.items():
        figures.add_row(key, f"{value:,.3f}" if value < 1000 else f"{value:,.0f}")
    console.print(figures)
    table = Table(title="targets")
    for column in ("target", "value", "ratio", "met"):
        table.add_column(column)
    for g in goals:
        table.add_row(
            g["target"], f"{g['value']:.3f}", f"{g['ratio']:.2f}", "met" if g["met"] else "MISSED"
        )
    console.print(table)


def postgres_version(url: str) -> str | None:
    """The server's version, or None when it cannot be reached."""
    import asyncpg

    async def ask() -> str:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except (OSError, asyncpg.PostgresError):
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
        **software(("offload", "protobuf", "httpx", "fastapi", "asyncpg", params.python_package)),
    }


def parse_args(argv: list[str] | None = None) -> Params:
    """The benchmark's parameters from the command line."""
    env_url = os.environ.get("OFFLOAD_TEST_POSTGRES_URL")
    parser = argparse.ArgumentParser(
        description="Auto-indexing: a real Python and TypeScript project indexed end to end\n"
        "through an executor against the same indexer run directly, upload processing rates,\n"
        "and navigation latency over >= 1,000,000 stored occurrences, on SQLite and\n"
        "PostgreSQL. Run by hand; see the module docstring.",
        epilog="example: .venv/bin/python bench/codeintel.py --runs 3\n"
        "quick check: .venv/bin/python bench/codeintel.py --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--databases", default=",".join(DATABASES), help="subset of sqlite,postgresql"
    )
    parser.add_argument("--python-package", default="rich", help="installed PyPI package")
    parser.add_argument("--npm-package", default="rxjs@7.8.1", help="npm package with .ts src/")
    parser.add_argument("--occurrences", type=int, default=1_000_000, help="stored, part 3")
    parser.add_argument("--positions", type=int, default=1000, help="Navigator positions")
    parser.add_argument("--http-positions", type=int, default=200, help="HTTP positions")
    parser.add_argument(
        "--skip-end-to-end", action="store_true", help="parts 2 and 3 only (synthetic indexes)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 run, httpx and immer@10.1.1, 100,000 occurrences, 300 positions, 50 over HTTP",
    )
    parser.add_argument(
        "--postgres-url",
        default=env_url or DEFAULT_POSTGRES_URL,
        metavar="URL",
        help="a database on a PostgreSQL server where scratch databases may be created",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.python_package, args.npm_package = 1, "httpx", "immer@10.1.1"
        args.occurrences, args.positions, args.http_positions = 100_000, 300, 50
    databases = tuple(d for d in args.databases.split(",") if d)
    if not databases or set(databases) - set(DATABASES):
        parser.error(f"--databases: a subset of {','.join(DATABASES)}")
    return Params(
        runs=args.runs,
        databases=databases,
        python_package=args.python_package,
        npm_package=args.npm_package,
        occurrences=args.occurrences,
        positions=args.positions,
        http_positions=args.http_positions,
        skip_end_to_end=args.skip_end_to_end,
        postgres_url=args.postgres_url,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary and write the results."""
    params = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so that the processes started here stop and databases drop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started_at = datetime.now(UTC)
    machine = machine_info(params)
    console.print(
        f"codeintel: {', '.join(params.databases)}, {params.runs} run(s), "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="codeintel-bench-"))
    # Sandboxed steps run as another user, who must pass through to the workspaces.
    scratch.chmod(0o755)
    try:
        projects = []
        if not params.skip_end_to_end:
            projects = [
                python_project(scratch, params.python_package),
                typescript_project(scratch, params.npm_package),
            ]
            for project in projects:
                console.print(f"  {project.name}: {project.description}")
        synth: dict[str, tuple[Path, str, int, bytes]] = {}
        made = time.perf_counter()
        for name, files in (
            ("synth-2mb", synth_files_for(SMALL_INDEX_BYTES)),
            ("synth-big", -(-params.occurrences // SYNTH_PER_FILE)),
        ):
            path, commit = synth_repository(scratch, name, files)
            synth[name] = (path, commit, files, synth_index(name, files))
        console.print(
            "  synthetic indexes: "
            + ", ".join(f"{n} {len(s[3]) / 1e6:.1f} MB ({s[2]} files)" for n, s in synth.items())
            + f", made in {time.perf_counter() - made:.0f} s"
        )
        runs = []
        for n in range(params.runs):
            console.print(f"run {n + 1}/{params.runs}")
            runs.append(one_run(params, projects, synth, scratch, n, console))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meds = medians(runs, in_all=True)
    goals = targets(meds, params)
    document = {
        "benchmark": NAME,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "parameters": asdict(params)
        | {
            "postgres_url": DatabaseURL.parse(params.postgres_url).redacted(),
            "projects": [p.description for p in projects],
            "synthetic": {
                "occurrences_per_file": SYNTH_PER_FILE,
                "definitions_per_file": SYNTH_DEFS,
                "local_occurrences_per_file": SYNTH_LOCALS,
            },
        },
        "definitions": {
            "e2e.*.direct_s": "git clone + the inferred job's steps in the sandbox runtime",
            "e2e.*.end_to_end_s": "`offload codeintel index` -> the job's upload is completed",
            "*.process.*.seconds": "UploadProcessor.handle + the completion, in this process",
            "*.bytes_per_occurrence": "document payloads + paths + encoded ranges + symbol "
            "names of the upload, over its occurrences",
            "*.navigate.*": "Navigator in this process, random positions holding an occurrence",
            "*.http.*": "GET /api/codeintel/{repo}/definitions|references, one kept-alive client",
        },
        "runs": runs,
        "medians": meds,
        "targets": goals,
    }
    path = write_results(document, NAME, default=str)
    print_summary(console, meds, goals)
    console.print(f"results: {path} (and {RESULTS / f'{NAME}-latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
