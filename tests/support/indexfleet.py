"""A served offload that indexes code end to end: repositories on the built-in code host, a
worker running the codeintel scheduler and upload processor, sandbox executors on the
`codeintel` queue with the real indexer images imported, and what a user then reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ci import unavailable
from fleet import Fleet, Process, make_repo
from indexers import IndexerBuildFailed, indexer_tarball

from offload.codeintel.store import CodeintelStore, UploadRow
from offload.db.connect import open_database
from offload.db.url import DatabaseURL

# The states an index job or an upload ends in.
FINISHED = {"completed", "errored", "failed"}


# A Python package of two modules: `square` defined in one, used in the other.
SHAPES = {
    "pyproject.toml": '[project]\nname = "shapes"\nversion = "0.1.0"\n',
    "shapes/__init__.py": "",
    "shapes/area.py": "def square(side):\n    return side * side\n",
    "shapes/report.py": (
        "from shapes.area import square\n\n\n"
        "def describe(side):\n    return f'area {square(side)}'\n"
    ),
}


@contextlib.contextmanager
def serving_fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    """A server over `db_url` (uploads capped at 64 KiB), stopped with all it started."""
    require_sandbox()
    fleet = Fleet(db_url, tmp_path / "data", settings={"OFFLOAD_CODEINTEL_UPLOAD_LIMIT": "65536"})
    fleet.start_server()
    try:
        yield fleet
    finally:
        fleet.stop_all()


def require_sandbox() -> None:
    """Skip (fail on CI) unless the sandbox runtime's tools are installed."""
    import shutil

    for command in ("umoci", "skopeo", "bwrap", "prlimit"):
        if shutil.which(command) is None:
            unavailable(f"{command} is not installed (apt-get install bubblewrap umoci skopeo)")


def tarballs(names: Iterable[str]) -> dict[str, Path]:
    """The image name and rootfs tarball of each indexer, built once per machine."""
    found: dict[str, Path] = {}
    for name in names:
        try:
            tarball, image = indexer_tarball(name)
        except IndexerBuildFailed as exc:
            unavailable(str(exc))
        found[image] = tarball
    return found


class IndexFleet:
    """A fleet that indexes: repositories, executors with indexer images, a codeintel worker."""

    def __init__(self, fleet: Fleet, tmp: Path) -> None:
        self.fleet = fleet
        self.tmp = tmp
        self.commits: dict[str, str] = {}

    def add_repo(self, name: str, files: dict[str, str]) -> str:
        """A new repository `name` of `files`, registered with `offload repos add`; its commit."""
        path = self.tmp / "sources" / name
        commit = make_repo(path, files)
        added = self.fleet.offload("repos", "add", str(path))
        assert added.returncode == 0, added.stderr
        self.commits[name] = commit
        return commit

    def start_executor(self, name: str, images: dict[str, Path], *, slots: int = 2) -> Process:
        """A sandbox executor on the `codeintel` queue with `images` imported first."""
        data_dir = self.fleet.data_dir / f"executor-{name}"
        for image, tarball in images.items():
            command = ["executor", "images", "import", image, str(tarball)]
            imported = subprocess.run(
                [sys.executable, "-m", "offload", *command],
                env={**os.environ, **self.fleet.env, "EXECUTOR_DATA_DIR": str(data_dir)},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert imported.returncode == 0, imported.stderr
        return self.fleet.start_executor(name, slots=slots, EXECUTOR_QUEUE_NAME="codeintel")

    def start_worker(self, **settings: str) -> Process:
        """`offload worker` running the scheduler (every second) and the upload processor."""
        env = {
            "OFFLOAD_CODEINTEL_SCHEDULER_INTERVAL": "1s",
            "OFFLOAD_CODEINTEL_SCHEDULER_BATCH_SIZE": "10",
            **settings,
        }
        return self.fleet.start_worker("codeintel.scheduler", "codeintel.uploads", env=env)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`offload codeintel ARGS` as the site admin."""
        return self.fleet.offload("codeintel", *args, stdin=stdin, timeout=120)

    def index_jobs(self) -> list[dict[str, Any]]:
        """Every index job, as `offload codeintel indexes list --json` shows them."""
        listed = self.cli("indexes", "list", "--limit", "200", "--json")
        assert listed.returncode == 0, listed.stderr
        return list(json.loads(listed.stdout)["indexJobs"])

    def wait_jobs(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Poll until `count` index jobs exist and all have finished; them, oldest first."""
        deadline = time.monotonic() + timeout
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            jobs = self.index_jobs()
            if len(jobs) >= count and all(j["state"] in FINISHED for j in jobs):
                return sorted(jobs, key=lambda j: int(j["id"]))
            time.sleep(1)
        states = [(j["repo"], j["root"], j["state"]) for j in jobs]
        raise AssertionError(
            f"index jobs after {timeout}s: {states}\nexecutors:\n"
            + "".join(line for p in self.fleet.executors for line in p.lines[-30:])
        )

    def uploads(self) -> list[UploadRow]:
        """Every upload, as the server stores it, oldest first."""
        return sorted(asyncio.run(self._uploads()), key=lambda u: u.id)

    async def _uploads(self) -> list[UploadRow]:
        db = await open_database(self.fleet.url)
        try:
            return await CodeintelStore(db).uploads(limit=200)
        finally:
            await db.close()

    def wait_uploads(self, count: int, timeout: float) -> list[UploadRow]:
        """Poll until `count` uploads exist and all have finished processing; them."""
        deadline = time.monotonic() + timeout
        found: list[UploadRow] = []
        while time.monotonic() < deadline:
            found = self.uploads()
            if len(found) >= count and all(u.state in FINISHED for u in found):
                return found
            time.sleep(0.5)
        worker = self.fleet.worker.lines[-30:] if self.fleet.worker else []
        raise AssertionError(
            f"uploads after {timeout}s: {[(u.repo_name, u.root, u.state) for u in found]}\n"
            + "".join(worker)
        )

    def navigate(self, repo: str, where: str, kind: str) -> list[str]:
        """`definitions` or `references` of the symbol at `where` (PATH:LINE:COL, 1-based) in
        `repo`'s indexed commit, as the navigation API answers them: PATH:LINE:COL each."""
        path, line, column = where.rsplit(":", 2)
        answer = self.fleet.api(
            "GET",
            f"/api/codeintel/{repo}/{kind}",
            params={
                "commit": self.commits[repo],
                "path": path,
                "line": int(line) - 1,
                "character": int(column) - 1,
            },
        )
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert not found["adjusted"], found
        return sorted(
            f"{loc['path']}:{loc['range']['start']['line'] + 1}:"
            f"{loc['range']['start']['character'] + 1}"
            for loc in found["locations"]
        )
