"""`offload executor images` against the store of the executor `offload up` runs: a job
whose image is missing says which import fixes it, and that import does."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from busybox import build_rootfs, build_tarball
from fleet import make_repo

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

IMAGE = "offload-test/needs-import:1"
README = "hello from the imported image\n"
# What a user's shell has: no offload or executor settings of the developer's or CI's.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OFFLOAD_", "EXECUTOR_"))}


def offload(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`offload ARGS` with exactly the user's environment `env` added to a clean one."""
    return subprocess.run(
        [sys.executable, "-m", "offload", *args],
        env={**CLEAN_ENV, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Up:
    """`offload up` running in a temporary data directory, and a shell's view of it."""

    data_dir: Path
    env: dict[str, str]
    tarball: Path

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        """`offload run` of `command` on the repository demo in the image IMAGE."""
        return offload("run", "--repo", "demo", "--image", IMAGE, "--", *command, env=self.env)

    def jobs(self) -> list[dict[str, Any]]:
        """`offload jobs list --json`."""
        listed = offload("jobs", "list", "--json", env=self.env)
        assert listed.returncode == 0, listed.stderr
        return list(json.loads(listed.stdout))

    def job(self, job_id: int) -> dict[str, Any]:
        """The job as `offload jobs list --json` shows it."""
        return next(job for job in self.jobs() if int(job["id"]) == job_id)

    def wait(self, job_id: int, states: set[str], timeout: float = 60) -> dict[str, Any]:
        """Poll until the job is in one of `states`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} is {job['state']}, not in {states}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """`offload up` with its own data dir, config dir (its CLI sign-in) and a free port."""
    env = {
        "OFFLOAD_DATA_DIR": str(tmp_path / "data"),
        "OFFLOAD_WORKER_PORT": "0",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "up", "--port", "0"],
        env={**CLEAN_ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        while not (
            any("offload is up at" in line for line in seen)
            and any(" connected to " in line for line in seen)
        ):
            line = process.stdout.readline()
            assert line, "offload up exited:\n" + "".join(seen)
            seen.append(line)
        make_repo(tmp_path / "src" / "demo", {"README": README})
        added = offload("repos", "add", str(tmp_path / "src" / "demo"), "--name", "demo", env=env)
        assert added.returncode == 0, added.stderr
        tarball = build_tarball(build_rootfs(tmp_path / "rootfs"), tmp_path / "rootfs.tar")
        yield Up(tmp_path / "data", env, tarball)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=90)


def suggested_import(message: str) -> str:
    """The import command a missing image's message names."""
    found = re.search(r"`(offload executor images import [^`]*)`", message)
    assert found, message
    return found.group(1)


def run_suggested(command: str, tarball: Path) -> subprocess.CompletedProcess[str]:
    """Run `command` as a user pastes it into a shell that has no offload settings, with
    the placeholder replaced by their tarball."""
    argv = [tarball.as_posix() if a == "TARBALL_OR_DIR" else a for a in shlex.split(command)]
    assert argv[:4] == ["offload", "executor", "images", "import"], argv
    return offload(*argv[1:], env={})


@pytest.mark.slow
def test_the_import_a_missing_image_suggests_makes_the_job_run(up: Up) -> None:
    failed = up.run("cat", "README")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"image {IMAGE} is not in the image store" in failed.stderr, failed.stderr
    command = suggested_import(failed.stderr)
    # Not offload's default data dir: the command names the store `offload up` runs with.
    executor_dir = up.data_dir / "executor"
    assert command == (
        f"offload executor images import --data-dir {executor_dir} {IMAGE} TARBALL_OR_DIR"
    )
    (failed_job,) = up.jobs()
    assert suggested_import(failed_job["failureMessage"]) == command

    imported = run_suggested(command, up.tarball)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {IMAGE} " in imported.stdout
    assert f"into {executor_dir / 'images'} (given by --data-dir)" in imported.stdout

    retried = offload("jobs", "retry", str(failed_job["id"]), env=up.env)
    assert retried.returncode == 0, retried.stderr
    done = up.wait(int(failed_job["id"]), {"completed", "failed", "errored", "canceled"})
    assert done["state"] == "completed", done
    logs = offload("jobs", "logs", str(failed_job["id"]), env=up.env)
    assert README in logs.stdout, logs.stdout

    # The same shell as `offload up` (its OFFLOAD_DATA_DIR) lists that store without a flag.
    listed = offload("executor", "images", "list", env=up.env)
    assert listed.returncode == 0, listed.stderr
    assert f"images in {executor_dir / 'images'} (the executor of `offload up`" in listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["name", "id", "size", "imported", "unpacked"]
    name, short_id, size, day, _clock, utc, unpacked = row.split()
    assert (name, utc, unpacked) == (IMAGE, "UTC", "yes")
    as_json = offload("executor", "images", "list", "--json", env=up.env)
    (image,) = json.loads(as_json.stdout)
    assert image["name"] == IMAGE and image["unpacked"] is True
    assert image["digest"] == f"sha256:{image['digest'][7:]}" and short_id == image["digest"][7:19]
    assert image["size"] > 500_000 and size.endswith(("K", "M"))
    assert image["imported"].startswith(day) and image["source"] == str(up.tarball)
    assert image["store"] == str(executor_dir / "images")

    removed = offload("executor", "images", "rm", IMAGE, env=up.env)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"removed {IMAGE} from {executor_dir / 'images'}")
    assert json.loads(offload("executor", "images", "list", "--json", env=up.env).stdout) == []
    assert list((executor_dir / "images" / "bundles").iterdir()) == []
    assert list((executor_dir / "images" / "layouts").iterdir()) == []

    again = up.run("cat", "README")
    assert again.returncode == 1, again.stdout + again.stderr
    assert suggested_import(again.stderr) == command


@pytest.mark.slow
def test_an_image_a_running_step_uses_is_not_removed(up: Up) -> None:
    imported = offload(
        "executor", "images", "import", IMAGE, str(up.tarball), env=up.env
    )  # the default store of this shell: `offload up`'s
    assert imported.returncode == 0, imported.stderr
    started = offload(
        "run", "--detach", "--repo", "demo", "--image", IMAGE, "--",
        "sh", "-c", "echo step-started; sleep 60",
        env=up.env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = int(started.stdout.strip())
    deadline = time.monotonic() + 60
    while "step-started" not in offload("jobs", "logs", str(job_id), env=up.env).stdout:
        assert time.monotonic() < deadline, up.job(job_id)
        time.sleep(0.3)

    refused = offload("executor", "images", "rm", IMAGE, env=up.env)
    assert refused.returncode == 1, refused.stdout
    assert f"image {IMAGE} is in use by a running step" in refused.stderr, refused.stderr
    assert "remove it once that job has finished" in refused.stderr
    (image,) = json.loads(offload("executor", "images", "list", "--json", env=up.env).stdout)
    assert image["name"] == IMAGE and image["unpacked"] is True

    canceled = offload("jobs", "cancel", str(job_id), env=up.env)
    assert canceled.returncode == 0, canceled.stderr
    up.wait(job_id, {"canceled"})
    deadline = time.monotonic() + 30
    while (removed := offload("executor", "images", "rm", IMAGE, env=up.env)).returncode:
        # Canceled in the database first; the sandbox goes within the kill grace.
        assert time.monotonic() < deadline, removed.stderr
        time.sleep(0.5)
    assert removed.stdout.startswith(f"removed {IMAGE} ")


def test_each_images_command_explains_the_store_and_shows_examples() -> None:
    for command in ("import", "list", "rm"):
        shown = offload("executor", "images", command, "--help", env={"COLUMNS": "200"})
        assert shown.returncode == 0, shown.stderr
        assert "Example" in shown.stdout and "--data-dir" in shown.stdout, shown.stdout
        assert f"offload executor images {command} " in shown.stdout


def test_a_store_named_by_the_flag_or_executor_data_dir_is_the_one_listed(
    tmp_path: Path,
) -> None:
    tarball = build_tarball(build_rootfs(tmp_path / "rootfs"), tmp_path / "rootfs.tar")
    mine = tmp_path / "mine"
    imported = offload(
        "executor", "images", "import", "--data-dir", str(mine), "local/mine", str(tarball), env={}
    )
    assert imported.returncode == 0, imported.stderr

    by_env = offload("executor", "images", "list", env={"EXECUTOR_DATA_DIR": str(mine)})
    assert by_env.stdout.splitlines()[1].startswith("local/mine:latest "), by_env.stdout
    assert f"images in {mine / 'images'} (from EXECUTOR_DATA_DIR)" in by_env.stderr
    other = offload("executor", "images", "list", env={"OFFLOAD_DATA_DIR": str(tmp_path / "up")})
    assert other.returncode == 0 and other.stdout == "", other.stdout
    assert f"no images in {tmp_path / 'up' / 'executor' / 'images'}" in other.stderr
    assert "`offload executor images import NAME TARBALL_OR_DIR`" in other.stderr

    missing = offload("executor", "images", "rm", "--data-dir", str(mine), "local/other", env={})
    assert missing.returncode == 1
    assert f"`offload executor images list --data-dir {mine}` shows" in missing.stderr
