"""A served offload for batch changes end to end: repositories on the built-in code host, a
worker, sandbox executors with a busybox image, and the batch CLI against them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from fleet import Fleet, Process, make_repo, spawn

from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer

IMAGE = "offload-test/busybox:latest"


async def register(url: DatabaseURL, data_dir: Path, sources: dict[str, Path]) -> None:
    db = await open_database(url)
    try:
        syncer = Syncer(RepoRegistry(db), Mirrors.in_data_dir(data_dir))
        for name, source in sources.items():
            await syncer.add(str(source), name=name)
    finally:
        await db.close()


def bare(path: Path, files: dict[str, str]) -> Path:
    """A bare repository (what the built-in code host holds) with one commit of `files`."""
    work = path.with_name(path.name + "-work")
    make_repo(work, files)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(path)], check=True)
    return path


class Batches:
    """The fleet plus a worker, and the batch CLI against them."""

    def __init__(self, fleet: Fleet, tmp: Path) -> None:
        self.fleet = fleet
        self.tmp = tmp
        self.worker: Process | None = None
        self.tokens: dict[str, str] = {}

    def token(self, user: str) -> str:
        """A token of `user`, who is created the first time."""
        if user not in self.tokens:
            self.tokens[user] = self.fleet.user(user)
        return self.tokens[user]

    def start_worker(self) -> None:
        env = {**self.fleet.env, "OFFLOAD_BATCHES_SYNC_INTERVAL": "0.5s"}
        args = ["worker"]
        for job in ("batches.resolver", "batches.reconciler", "batches.syncer"):
            args += ["--job", job]
        self.worker = spawn("worker", args, env)
        self.worker.wait_for("offload worker listening")

    def cli(self, *args: str, user: str = "alice", stdin: str | None = None) -> Any:
        result = self.fleet.offload(
            "batch", *args, stdin=stdin, timeout=300, token=self.token(user)
        )
        return result

    def preview(self, text: str, user: str = "alice", *, status: int = 0) -> dict[str, Any]:
        """The preview's JSON; `status`: its exit status (1 when a workspace failed)."""
        result = self.cli("preview", "-f", "-", "--json", user=user, stdin=text)
        assert result.returncode == status, result.stderr
        return dict(json.loads(result.stdout))

    def status(self, name: str, user: str = "alice") -> dict[str, Any]:
        result = self.cli("status", name, "--json", user=user)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def wait_status(self, name: str, want: dict[str, int], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = self.status(name)
            if all(view["changesets"].get(k, 0) == n for k, n in want.items()):
                return view
            time.sleep(0.5)
        raise AssertionError(f"changesets are {view.get('changesets')}, not {want}: {view}")

    def workspaces(self, spec_id: str) -> list[dict[str, Any]]:
        response = self.fleet.api("GET", f"/api/batches/specs/{spec_id}/workspaces")
        assert response.status_code == 200, response.text
        return list(response.json())

    def logs(self, name: str, spec_id: str, user: str = "alice") -> list[dict[str, Any]]:
        response = self.fleet.api(
            "GET", f"/api/batches/changes/{user}/{name}/logs", params={"spec": spec_id}
        )
        assert response.status_code == 200, response.text
        return list(response.json())

    def stop(self) -> None:
        if self.worker is not None and self.worker.popen.poll() is None:
            self.worker.stop(timeout=60)
        self.fleet.stop_all()


def tag_image(fleet: Fleet, tmp: Path, executor: str, name: str) -> None:
    """The busybox image import_image() built, imported into `executor` as `name` too."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "offload",
            "executor",
            "images",
            "import",
            name,
            str(tmp / "busybox.tar"),
        ],
        env={
            **fleet.env,
            "EXECUTOR_DATA_DIR": str(fleet.data_dir / f"executor-{executor}"),
            "PATH": os.environ["PATH"],
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def import_image(fleet: Fleet, tmp: Path, executors: list[str]) -> None:
    try:
        tarball = build_tarball(build_rootfs(tmp / "busybox-rootfs"), tmp / "busybox.tar")
    except BusyboxMissing as exc:
        unavailable(str(exc))
    for name in executors:
        result = subprocess.run(
            [sys.executable, "-m", "offload", "executor", "images", "import", IMAGE, str(tarball)],
            env={
                **fleet.env,
                "EXECUTOR_DATA_DIR": str(fleet.data_dir / f"executor-{name}"),
                "PATH": os.environ["PATH"],
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
