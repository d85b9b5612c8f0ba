"""`offload codeintel infer` in a real process against a real server: the jobs a user reads,
and an invalid sourcegraph.yaml's errors with their line:column and exit status 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import Fleet, make_repo

from offload.codeintel.inference import IMAGES
from offload.db.url import DatabaseURL

INVALID = "index_jobs:\n  - root: api\n    indexer: 42\n"


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(db_url, tmp_path / "data")
    fleet.start_server()
    yield fleet
    fleet.stop_all()


def add(fleet: Fleet, path: Path, files: dict[str, str]) -> str:
    """A new repository of `files` at `path`, registered with `offload repos add`; its commit."""
    commit = make_repo(path, files)
    added = fleet.offload("repos", "add", str(path))
    assert added.returncode == 0, added.stderr
    return commit


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_infer_shows_each_job_and_why(fleet: Fleet, tmp_path: Path) -> None:
    files = {
        "pyproject.toml": '[project]\nname = "greet"\nversion = "1.2.0"\n',
        "greet/__init__.py": "",
        "web/package.json": "{}",
        "web/tsconfig.json": "{}",
    }
    commit = add(fleet, tmp_path / "src" / "mono", files)
    done = fleet.offload("codeintel", "infer", "mono")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"mono at {commit[:12]}: 2 index jobs (inferred)\n"
        "\n"
        "root:    /\n"
        f"indexer: {IMAGES['python']}\n"
        "args:    scip-python index . --project-name greet --project-version 1.2.0\n"
        "local:   pip install . || true\n"
        "why:     Python project pyproject.toml (project greet 1.2.0)\n"
        "\n"
        "root:    web\n"
        f"indexer: {IMAGES['typescript']}\n"
        "args:    scip-typescript index\n"
        f"step:    in web with {IMAGES['typescript']}:\n"
        "           npm install\n"
        "env:     NPM_TOKEN\n"
        "why:     TypeScript project web/tsconfig.json\n"
    )
    answer = json.loads(fleet.offload("codeintel", "infer", "mono", "--json").stdout)
    assert answer["commit"] == commit and [j["root"] for j in answer["jobs"]] == ["", "web"]

    unknown = fleet.offload("codeintel", "infer", "mono", "--commit", "no-such-branch")
    assert unknown.returncode == 2
    assert "repository mono has no revision 'no-such-branch'" in unknown.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_invalid_sourcegraph_yaml_exits_1_with_line_and_column(
    fleet: Fleet, tmp_path: Path
) -> None:
    add(fleet, tmp_path / "src" / "broken", {"sourcegraph.yaml": INVALID, "go.mod": "module x\n"})
    done = fleet.offload("codeintel", "infer", "broken")
    assert done.returncode == 1
    assert "0 index jobs (sourcegraph.yaml)" in done.stdout
    lines = done.stderr.splitlines()
    assert lines[0].startswith("sourcegraph.yaml:3:14: index_jobs[0].indexer: "), done.stderr
    assert "broken's sourcegraph.yaml is invalid" in done.stderr
    as_json = fleet.offload("codeintel", "infer", "broken", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["errors"][0]["line"] == 3
