"""The indexer images deploy/indexers/build makes, run offline in the real sandbox runtime.

For each language: a real git repository made here, the jobs inference gives it, the image
built (or reused from the per-machine cache) and imported into a real executor image store,
each step run through bubblewrap with no network, and the index read back with offload's
SCIP reader: a named symbol's definition at its exact position, and a reference to it from
the other file.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ci import unavailable
from indexers import IndexerBuildFailed, indexer_tarball
from indexfleet import SHAPES

from offload.codeintel.config import IndexJob
from offload.codeintel.inference import select_jobs
from offload.codeintel.scip.model import Document, is_definition
from offload.codeintel.scip.reader import file_chunks, read_index
from offload.codeintel.tree import GitTree
from offload.executor.config import DEFAULT_MEMORY, DEFAULT_PIDS, DEFAULT_TMP
from offload.executor.images import ImageStore
from offload.executor.process import StepProcess
from offload.executor.runtimes.base import Limits, Step
from offload.executor.runtimes.sandbox import SandboxRuntime

pytestmark = pytest.mark.slow

# What an executor gives a step by default: no network, its memory, pids and /tmp limits.
LIMITS = Limits(memory_bytes=DEFAULT_MEMORY, pids=DEFAULT_PIDS, tmp_bytes=DEFAULT_TMP)
STEP_TIMEOUT = 300.0


@dataclass(frozen=True)
class Project:
    """A tiny project of one language, and where its named symbol is defined and used."""

    indexer: str
    files: dict[str, str]
    symbol: str  # the end of the SCIP symbol, e.g. `square().`
    defined: tuple[str, int, int]  # path, 0-based line and character
    used_in: str  # the other file, which refers to it


PYTHON = Project(
    "scip-python",
    SHAPES,
    symbol="square().",
    defined=("shapes/area.py", 0, 4),
    used_in="shapes/report.py",
)
TYPESCRIPT = Project(
    "scip-typescript",
    {
        "tsconfig.json": '{"compilerOptions": {"target": "es2020", "module": "commonjs", '
        '"strict": true}, "include": ["src"]}\n',
        "src/math.ts": "export function double(n: number): number {\n  return n * 2;\n}\n",
        "src/main.ts": 'import { double } from "./math";\n\nconsole.log(double(21));\n',
    },
    symbol="double().",
    defined=("src/math.ts", 0, 16),
    used_in="src/main.ts",
)
GO = Project(
    "scip-go",
    {
        "go.mod": "module example.com/shapes\n\ngo 1.22\n",
        "area/area.go": (
            "package area\n\n// Square is the area of a square.\n"
            "func Square(side int) int {\n\treturn side * side\n}\n"
        ),
        "report/report.go": (
            'package report\n\nimport "example.com/shapes/area"\n\n'
            "// Describe is the area of a square of this side.\n"
            "func Describe(side int) int {\n\treturn area.Square(side)\n}\n"
        ),
    },
    symbol="Square().",
    defined=("area/area.go", 3, 5),
    used_in="report/report.go",
)


def require(*commands: str) -> None:
    """Skip (fail on CI) unless every command is installed."""
    for command in commands:
        if shutil.which(command) is None:
            unavailable(f"{command} is not installed (apt-get install bubblewrap umoci skopeo)")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageStore]:
    """A real executor image store of its own."""
    require("umoci", "skopeo", "bwrap", "prlimit")
    yield ImageStore(tmp_path_factory.mktemp("executor") / "images", pull=False)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity; its output."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_repository(path: Path, files: dict[str, str]) -> str:
    """A git repository holding `files` in one commit; the commit's id."""
    path.mkdir()
    git(path, "init", "-q")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "project")
    return git(path, "rev-parse", "HEAD")


async def run_step(
    runtime: SandboxRuntime, workspace: Path, key: str, image: str, lines: list[str]
) -> str:
    """Run a shell script of `lines` in `image` in the sandbox; its output (asserts exit 0)."""
    script = f".offload-{key}.sh"
    (workspace / script).write_text("set -e\n" + "\n".join(lines) + "\n")
    shell = await runtime.shell(image)
    step = Step(key, script, image=image, shell=shell.path)
    output: list[str] = []

    async def sink(stream: str, line: str) -> None:
        output.append(line)

    argv = runtime.command(step, workspace, LIMITS, f"test-{key}")
    code = await StepProcess.for_runtime(runtime, f"test-{key}", argv, sink).run(
        timeout=STEP_TIMEOUT
    )
    text = "\n".join(output)
    assert code == 0, f"step {key} in {image} exited {code}:\n{text}"
    return text


async def run_job(runtime: SandboxRuntime, workspace: Path, job: IndexJob) -> None:
    """The job's pre-index steps, then its local steps and the indexer, as the payload says."""
    for number, step in enumerate(job.steps):
        lines = [f"cd {shlex.quote(step.root or '.')}", *step.commands]
        await run_step(runtime, workspace, f"pre-{number}", step.image, lines)
    lines = [f"cd {shlex.quote(job.root or '.')}", *job.local_steps, shlex.join(job.indexer_args)]
    await run_step(runtime, workspace, "index", job.indexer, lines)


async def read_documents(index: Path) -> dict[str, Document]:
    """The index's documents by path, read with offload's SCIP reader."""
    return {
        part.path: part
        async for part in read_index(file_chunks(index))
        if isinstance(part, Document)
    }


@pytest.mark.parametrize(
    "project",
    [
        pytest.param(PYTHON, id="scip-python"),
        pytest.param(TYPESCRIPT, id="scip-typescript"),
        pytest.param(GO, id="scip-go"),
    ],
)
async def test_an_indexer_image_indexes_a_project_offline_in_the_sandbox(
    project: Project, store: ImageStore, tmp_path: Path
) -> None:
    started = time.monotonic()
    try:
        tarball, image = await asyncio.to_thread(indexer_tarball, project.indexer)
    except IndexerBuildFailed as exc:
        unavailable(str(exc))
    built = time.monotonic()
    await store.import_image(image, tarball)
    await store.ensure(image)
    runtime = SandboxRuntime(store)
    await runtime.check()
    imported = time.monotonic()

    repository = tmp_path / "repository"
    commit = make_repository(repository, project.files)
    selection = await select_jobs(None, GitTree(repository, commit))
    assert selection.source == "inference"
    assert [job.indexer for job in selection.jobs] == [image]
    (job,) = selection.jobs
    workspace = tmp_path / "workspace"
    git(tmp_path, "clone", "-q", str(repository), str(workspace))

    await run_job(runtime, workspace, job)
    ran = time.monotonic()

    index = workspace / job.root / job.outfile
    assert index.is_file(), f"{project.indexer} wrote no {job.outfile}"
    documents = await read_documents(index)
    path, line, character = project.defined
    assert {path, project.used_in} <= set(documents), sorted(documents)
    definitions = [
        o
        for o in documents[path].occurrences
        if is_definition(o.roles) and o.symbol.endswith(project.symbol)
    ]
    assert [(o.start_line, o.start_char) for o in definitions] == [(line, character)], (
        f"definitions of {project.symbol} in {path}: {definitions}"
    )
    symbol = definitions[0].symbol
    references = [
        o
        for o in documents[project.used_in].occurrences
        if o.symbol == symbol and not is_definition(o.roles)
    ]
    assert references, f"{project.used_in} has no reference to {symbol}"
    print(
        f"{project.indexer}: image {built - started:.1f} s, import {imported - built:.1f} s, "
        f"index in the sandbox {ran - imported:.1f} s"
    )
