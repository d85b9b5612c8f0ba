"""Auto-indexing end to end: repositories on the built-in host, the scheduler queueing their
inferred index jobs, a sandbox executor running the real indexers with no network and
uploading each index, the worker processing the uploads, and code navigation answering exact
positions. Then the ways it goes wrong: an indexer that fails, and corrupt, truncated and
oversized uploads, while the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fleet import Fleet
from indexfleet import IndexFleet, require_sandbox, tarballs

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.slow

PYTHON = "sourcegraph/scip-python"
TYPESCRIPT = "sourcegraph/scip-typescript"
GO = "sourcegraph/scip-go"

SHAPES = {
    "pyproject.toml": '[project]\nname = "shapes"\nversion = "0.1.0"\n',
    "shapes/__init__.py": "",
    "shapes/area.py": "def square(side):\n    return side * side\n",
    "shapes/report.py": (
        "from shapes.area import square\n\n\n"
        "def describe(side):\n    return f'area {square(side)}'\n"
    ),
}
CALC = {
    "tsconfig.json": '{"compilerOptions": {"target": "es2020", "module": "commonjs", '
    '"strict": true}, "include": ["src"]}\n',
    "src/math.ts": "export function double(n: number): number {\n  return n * 2;\n}\n",
    "src/main.ts": 'import { double } from "./math";\n\nconsole.log(double(21));\n',
}
GEO = {
    "go.mod": "module example.com/geo\n\ngo 1.22\n",
    "area/area.go": (
        "package area\n\n// Square is the area of a square.\n"
        "func Square(side int) int {\n\treturn side * side\n}\n"
    ),
    "report/report.go": (
        'package report\n\nimport "example.com/geo/area"\n\n'
        "// Describe is the area of a square of this side.\n"
        "func Describe(side int) int {\n\treturn area.Square(side)\n}\n"
    ),
}
MONO = {
    "py/alpha/pyproject.toml": '[project]\nname = "alpha"\nversion = "1.0.0"\n',
    "py/alpha/alpha/__init__.py": "",
    "py/alpha/alpha/greet.py": "def hello(name):\n    return 'hello ' + name\n",
    "py/alpha/alpha/cli.py": "from alpha.greet import hello\n\nprint(hello('world'))\n",
    "py/beta/pyproject.toml": '[project]\nname = "beta"\nversion = "2.0.0"\n',
    "py/beta/beta/__init__.py": "",
    "py/beta/beta/count.py": "def total(items):\n    return len(items)\n",
    "py/beta/beta/main.py": "from beta.count import total\n\nprint(total([1, 2]))\n",
    "web/tsconfig.json": '{"compilerOptions": {"strict": true}, "include": ["src"]}\n',
    "web/src/label.ts": "export const label = (n: number): string => `#${n}`;\n",
    "web/src/page.ts": 'import { label } from "./label";\n\nexport const title = label(1);\n',
}


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    require_sandbox()
    fleet = Fleet(db_url, tmp_path / "data", settings={"OFFLOAD_CODEINTEL_UPLOAD_LIMIT": "65536"})
    fleet.start_server()
    yield fleet
    fleet.stop_all()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_scheduler_indexes_four_repositories_and_navigation_answers(
    fleet: Fleet, tmp_path: Path
) -> None:
    started = time.monotonic()
    images = tarballs(["scip-python", "scip-typescript", "scip-go"])
    index = IndexFleet(fleet, tmp_path)
    for name, files in {"shapes": SHAPES, "calc": CALC, "geo": GEO, "mono": MONO}.items():
        index.add_repo(name, files)
    index.start_executor("indexer", images)
    index.start_worker()

    jobs = index.wait_jobs(6, timeout=600)
    queued = sorted((j["repo"], j["root"], j["indexer"], j["source"]) for j in jobs)
    assert queued == [
        ("calc", "", TYPESCRIPT.removeprefix("sourcegraph/"), "inferred"),
        ("geo", "", GO.removeprefix("sourcegraph/"), "inferred"),
        ("mono", "py/alpha", "scip-python", "inferred"),
        ("mono", "py/beta", "scip-python", "inferred"),
        ("mono", "web", "scip-typescript", "inferred"),
        ("shapes", "", "scip-python", "inferred"),
    ], jobs
    assert {j["requestedBy"] for j in jobs} == {"scheduler"}
    assert all(j["commit"] == index.commits[j["repo"]] for j in jobs)
    failed = [
        (j["repo"], j["root"], j["failureMessage"]) for j in jobs if j["state"] != "completed"
    ]
    assert not failed, failed

    uploads = index.wait_uploads(6, timeout=120)
    assert [(u.state, u.failure_message) for u in uploads] == [("completed", None)] * 6
    assert {u.index_job_id for u in uploads} == {int(j["id"]) for j in jobs}
    assert all(u.num_documents and u.num_occurrences for u in uploads), uploads

    # Python: defined in one module, used in the other. References are the definition and
    # every use (as editors list them).
    assert index.navigate("shapes", "shapes/report.py:5:20", "definitions") == [
        "shapes/area.py:1:5"
    ]
    assert index.navigate("shapes", "shapes/area.py:1:5", "references") == [
        "shapes/area.py:1:5",
        "shapes/report.py:1:25",
        "shapes/report.py:5:20",
    ]
    # TypeScript.
    assert index.navigate("calc", "src/main.ts:3:13", "definitions") == ["src/math.ts:1:17"]
    assert index.navigate("calc", "src/math.ts:1:17", "references") == [
        "src/main.ts:1:10",
        "src/main.ts:3:13",
        "src/math.ts:1:17",
    ]
    # Go: across packages.
    assert index.navigate("geo", "report/report.go:7:14", "definitions") == ["area/area.go:4:6"]
    assert index.navigate("geo", "area/area.go:4:6", "references") == [
        "area/area.go:4:6",
        "report/report.go:7:14",
    ]
    # The monorepo: each project's symbols resolve within the repository's set of uploads,
    # with paths from the repository's root.
    assert index.navigate("mono", "py/alpha/alpha/cli.py:3:7", "definitions") == [
        "py/alpha/alpha/greet.py:1:5"
    ]
    assert index.navigate("mono", "py/beta/beta/main.py:3:7", "definitions") == [
        "py/beta/beta/count.py:1:5"
    ]
    assert index.navigate("mono", "py/beta/beta/count.py:1:5", "references") == [
        "py/beta/beta/count.py:1:5",
        "py/beta/beta/main.py:1:24",
        "py/beta/beta/main.py:3:7",
    ]
    assert index.navigate("mono", "web/src/page.ts:3:22", "definitions") == [
        "web/src/label.ts:1:14"
    ]
    print(f"four repositories indexed end to end in {time.monotonic() - started:.1f} s")


# A stored configuration whose indexer fails the way a broken build does.
FAILING = """index_jobs:
  - root: ""
    indexer: sourcegraph/scip-python
    local_steps:
      - echo "indexing failed, cannot resolve the imports of shapes" >&2
      - exit 3
    indexer_args: [scip-python, index, .]
"""
# What the indexer step writes to index.scip instead of an index.
GARBAGE = """index_jobs:
  - indexer: sourcegraph/scip-python
    local_steps:
      - printf 'this is not a SCIP index at all, just words' > index.scip
"""
# A real index, cut in half.
TRUNCATED = """index_jobs:
  - indexer: sourcegraph/scip-python
    local_steps:
      - scip-python index . --project-name shapes --project-version 0.1.0
      - head -c $(( $(wc -c < index.scip) / 2 )) index.scip > half.scip
      - mv half.scip index.scip
"""
# More than OFFLOAD_CODEINTEL_UPLOAD_LIMIT (64 KiB here).
OVERSIZED = """index_jobs:
  - indexer: sourcegraph/scip-python
    local_steps:
      - head -c 200000 /dev/zero > index.scip
"""


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_failing_indexers_and_bad_uploads_fail_alone(fleet: Fleet, tmp_path: Path) -> None:
    started = time.monotonic()
    images = tarballs(["scip-python"])
    index = IndexFleet(fleet, tmp_path)
    configs = {"broken": FAILING, "garbage": GARBAGE, "truncated": TRUNCATED, "big": OVERSIZED}
    for name in ["shapes", *configs]:
        index.add_repo(name, SHAPES)
    for name, text in configs.items():
        stored = index.cli("config", "set", name, "-f", "-", stdin=text)
        assert stored.returncode == 0, stored.stderr
    index.start_executor("indexer", images)
    index.start_worker()

    jobs = {j["repo"]: j for j in index.wait_jobs(5, timeout=600)}
    assert {r: j["state"] for r, j in jobs.items()} == {
        "shapes": "completed",
        "broken": "failed",
        "garbage": "completed",
        "truncated": "completed",
        "big": "failed",
    }, jobs

    # The failing indexer's own words, through the CLI.
    shown = index.cli("indexes", "show", str(jobs["broken"]["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "indexing failed, cannot resolve the imports of shapes" in shown.stdout
    assert "(exit 3)" in shown.stdout
    assert "failed" in shown.stdout.splitlines()[0]

    # The oversized index is refused by the server, and the job says so.
    big = jobs["big"]["failureMessage"]
    assert "the server refused the upload (413)" in big, big
    assert "200000" in index.cli("indexes", "show", str(jobs["big"]["id"])).stdout

    uploads = {u.repo_name: u for u in index.wait_uploads(3, timeout=120)}
    assert {r: u.state for r, u in uploads.items()} == {
        "shapes": "completed",
        "garbage": "failed",
        "truncated": "failed",
    }
    for name in ("garbage", "truncated"):
        message = uploads[name].failure_message or ""
        assert f"the index of upload {uploads[name].id} cannot be read: " in message, message
    # What a site admin sees of them.
    listed = index.cli("uploads", "list", "--state", "failed")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines() if line[0] == "#") == (
        sorted(f"#{uploads[name].id}" for name in ("garbage", "truncated"))
    )
    assert listed.stdout.count("cannot be read: ") == 2

    # The server still serves, and the good repository's navigation still answers.
    assert httpx.get(f"{fleet.base}/healthz", timeout=10).status_code == 200
    assert index.navigate("shapes", "shapes/report.py:5:20", "definitions") == [
        "shapes/area.py:1:5"
    ]
    print(f"failing indexers and bad uploads in {time.monotonic() - started:.1f} s")
