"""Auto-indexing end to end: repositories on the built-in host, the scheduler queueing their
inferred index jobs, a sandbox executor running the real indexers with no network and
uploading each index, the worker processing the uploads, and code navigation answering exact
positions. (The ways it goes wrong are in test_codeintel_failures.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import Fleet
from indexfleet import SHAPES, IndexFleet, serving_fleet, tarballs

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.slow

PYTHON = "sourcegraph/scip-python"
TYPESCRIPT = "sourcegraph/scip-typescript"
GO = "sourcegraph/scip-go"

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
    with serving_fleet(db_url, tmp_path) as serving:
        yield serving


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
