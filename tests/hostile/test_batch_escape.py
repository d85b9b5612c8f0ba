"""A batch spec aims `files:` at a symlink that the repository carries or that an earlier step
planted, as a hostile user would: end to end, on a served offload with a sandbox executor.

Before mount targets were resolved in the sandbox's own tree, bubblewrap followed such a link
while it set the sandbox up, when the host's tree is still reachable under /oldroot, and
created the file on the executor host, as the executor's user.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batchfleet import IMAGE, Batches, import_image, register
from fleet import Fleet, git, make_repo

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.slow

SPEC = """\
name: {name}
on:
  - repository: {repo}
steps:
{steps}
changesetTemplate:
  title: t
  branch: b/{name}
  commit:
    message: m
"""


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory that every user of the executor could name, empty."""
    path = tmp_path / "outside"
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    return path


@pytest.fixture
def batches(db_url: DatabaseURL, tmp_path: Path, outside: Path) -> Iterator[Batches]:
    """A served offload with two repositories: a plain one and one carrying a symlink out."""
    fleet = Fleet(db_url, tmp_path / "data")
    plain = tmp_path / "hosted-work" / "plain"
    make_repo(plain, {"README.md": "plain\n"})
    linked = tmp_path / "hosted-work" / "linked"
    make_repo(linked, {"README.md": "linked\n"})
    os.symlink(f"/oldroot{outside}", linked / "docs")
    git("add", "docs", cwd=linked)
    git("commit", "-qm", "docs live elsewhere", cwd=linked)
    sources = {}
    for work in (plain, linked):
        bare = tmp_path / "hosted" / f"{work.name}.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        sources[work.name] = bare
    asyncio.run(register(db_url, fleet.data_dir, sources))
    import_image(fleet, tmp_path, ["exec-h"])
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    fleet.start_executor("exec-h", slots=2, EXECUTOR_QUEUE_NAME="batches")
    yield setup
    setup.stop()


def preview(batches: Batches, name: str, repo: str, steps: str) -> dict[str, Any]:
    """Preview a spec; its JSON view whatever the exit status."""
    text = SPEC.format(name=name, repo=repo, steps=steps)
    result = batches.cli("preview", "-f", "-", "--json", stdin=text)
    assert result.stdout.strip(), result.stderr
    return dict(json.loads(result.stdout))


def failure_text(batches: Batches, name: str, view: dict[str, Any]) -> str:
    """Everything the user can read about the spec's workspaces: states, errors and logs."""
    logs = batches.logs(name, view["id"])
    return json.dumps(batches.workspaces(view["id"])) + json.dumps(logs)


def test_files_through_a_symlink_the_repository_carries(batches: Batches, outside: Path) -> None:
    steps = f"""\
  - run: cat /data/repository/docs/pwned
    container: {IMAGE}
    files:
      /data/repository/docs/pwned: written by a batch spec
"""
    view = preview(batches, "carried", "linked", steps)
    assert view["states"] == {"failed": 1}, view
    assert "passes through the symlink /data/repository/docs" in failure_text(
        batches, "carried", view
    )
    assert list(outside.iterdir()) == []


def test_files_through_a_symlink_an_earlier_step_planted(batches: Batches, outside: Path) -> None:
    steps = f"""\
  - run: ln -s /oldroot{outside} /data/repository/planted
    container: {IMAGE}
  - run: cat /data/repository/planted/pwned
    container: {IMAGE}
    files:
      /data/repository/planted/pwned: written by a batch spec
"""
    view = preview(batches, "planted", "plain", steps)
    assert view["states"] == {"failed": 1}, view
    assert "passes through the symlink /data/repository/planted" in failure_text(
        batches, "planted", view
    )
    assert list(outside.iterdir()) == []
