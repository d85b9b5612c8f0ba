"""Executor settings that a site admin gets wrong, and what a killed executor leaves behind.

Every bad value stops both `offload executor` and `offload executor validate` at once, with one
message that names the variable, the value and what would be valid, and never a traceback
(before, a data directory that was a file drained the queue: every job failed). An executor
SIGKILLed while a job ran leaves its workspace, cgroups and step processes, which the next
start of that executor removes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet import Fleet, make_repo

from offload.db.url import DatabaseURL
from offload.executor.workspace import remove_tree

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux")

OFFLOAD = str(Path(sys.executable).with_name("offload"))
# Mounts a tmpfs with these options on "$0" in a mount namespace of its own, then runs "$@":
# a read-only or full filesystem that only the command sees (a user namespace lets anyone).
_ON_TMPFS = 'mkdir -p "$0" && mount -t tmpfs -o "$1" tmpfs "$0" && shift && exec "$@"'


@dataclass(frozen=True)
class Case:
    """A bad setting: the variables, what the error must quote, what it must say is valid."""

    settings: dict[str, str]
    quoted: str
    valid: str
    # A tmpfs mounted over the data directory, with these options (for a read-only or full one).
    tmpfs: str = ""


CASES = {
    "data dir is a file": Case({}, "EXECUTOR_DATA_DIR=", "point EXECUTOR_DATA_DIR at a directory"),
    "data dir is read-only": Case(
        {}, "EXECUTOR_DATA_DIR=", "is not a writable directory", tmpfs="ro,size=16m"
    ),
    "data dir is full": Case({}, "EXECUTOR_DATA_DIR=", "needs at least 1G", tmpfs="size=16m"),
    "heartbeat xyz": Case(
        {"EXECUTOR_HEARTBEAT_INTERVAL": "xyz"},
        "EXECUTOR_HEARTBEAT_INTERVAL='xyz'",
        "from 100ms to 10s",
    ),
    "heartbeat 0": Case(
        {"EXECUTOR_HEARTBEAT_INTERVAL": "0"}, "EXECUTOR_HEARTBEAT_INTERVAL='0'", "from 100ms"
    ),
    "poll wait -5": Case(
        {"EXECUTOR_QUEUE_POLL_WAIT": "-5"}, "EXECUTOR_QUEUE_POLL_WAIT='-5'", "from 0s to 1m"
    ),
    "a million slots": Case(
        {"EXECUTOR_MAX_NUM_JOBS": "1000000"}, "EXECUTOR_MAX_NUM_JOBS='1000000'", "from 1 to 256"
    ),
    "CPUs -1": Case({"EXECUTOR_JOB_NUM_CPUS": "-1"}, "EXECUTOR_JOB_NUM_CPUS='-1'", "from 0.01"),
    "CPUs NaN": Case({"EXECUTOR_JOB_NUM_CPUS": "NaN"}, "EXECUTOR_JOB_NUM_CPUS='NaN'", "from 0.01"),
    "name with a newline": Case(
        {"EXECUTOR_NAME": "exec\nevil"}, "EXECUTOR_NAME='exec\\nevil'", "printable ASCII"
    ),
    "unknown backend": Case(
        {"EXECUTOR_BACKEND": "vmware"}, "EXECUTOR_BACKEND='vmware'", "docker, sandbox, shell"
    ),
    "keep workspaces maybe": Case(
        {"EXECUTOR_KEEP_WORKSPACES": "maybe"},
        "EXECUTOR_KEEP_WORKSPACES='maybe'",
        "write true or false",
    ),
    "memory 1M": Case({"EXECUTOR_JOB_MEMORY": "1M"}, "EXECUTOR_JOB_MEMORY='1M'", "from 64M"),
    "pids 2": Case({"EXECUTOR_JOB_PIDS": "2"}, "EXECUTOR_JOB_PIDS='2'", "from 16"),
    "disk inf": Case({"EXECUTOR_JOB_DISK": "inf"}, "EXECUTOR_JOB_DISK='inf'", "from 64M to 64T"),
}


def _base_env(data_dir: Path) -> dict[str, str]:
    """A valid configuration (its server is a port nobody listens on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTOR_", "OFFLOAD_"))}
    return {
        **env,
        "EXECUTOR_FRONTEND_URL": "http://127.0.0.1:9",
        "EXECUTOR_REGISTRATION_TOKEN": "token-of-the-test",
        "EXECUTOR_QUEUE_NAME": "default",
        "EXECUTOR_BACKEND": "shell",
        "EXECUTOR_DATA_DIR": str(data_dir),
    }


def _run(
    args: list[str], env: dict[str, str], tmpfs: str = "", data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [OFFLOAD, *args]
    if tmpfs:
        assert data_dir is not None
        argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _ON_TMPFS,
                str(data_dir), tmpfs, *argv]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_the_valid_base_configuration_gets_as_far_as_the_server(tmp_path: Path) -> None:
    # Each case below changes one thing of this configuration: that is what it must refuse.
    done = _run(["executor", "validate"], _base_env(tmp_path / "data"))
    assert done.returncode == 1, done.stderr
    assert "cannot reach http://127.0.0.1:9" in done.stderr
    assert f"data directory: {tmp_path / 'data'} is writable" in done.stdout


@pytest.mark.parametrize("command", [["executor"], ["executor", "validate"]], ids=" ".join)
@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_setting_stops_the_executor_with_one_clear_message(
    tmp_path: Path, name: str, command: list[str]
) -> None:
    case = CASES[name]
    data_dir = tmp_path / "data"
    if name == "data dir is a file":
        data_dir.write_text("not a directory\n")
    env = {**_base_env(data_dir), **case.settings}
    started = time.monotonic()
    done = _run(command, env, case.tmpfs, data_dir)
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert done.stderr.startswith("error: the executor cannot start:"), output
    assert done.stderr.count("error:") == 1, output
    assert case.quoted in done.stderr and case.valid in done.stderr, output
    assert "cannot reach" not in output, "it went on to the server"
    assert took < 30, f"it took {took:.1f}s to refuse"
    if name == "data dir is a file":
        assert data_dir.read_text() == "not a directory\n"


def test_every_problem_is_listed_at_once_and_a_typo_is_named(tmp_path: Path) -> None:
    env = {
        **_base_env(tmp_path / "data"),
        "EXECUTOR_HEARTBEAT_INTERVAL": "xyz",
        "EXECUTOR_MAX_NUM_JOBS": "1000000",
        "EXECUTOR_JOB_NUM_CPUS": "inf",
        "EXECUTOR_QUEUE_NAMS": "batches",
    }
    done = _run(["executor", "validate"], env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    problems = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 3, done.stderr
    assert (
        "warning: EXECUTOR_QUEUE_NAMS is not an executor setting, so it has no effect; "
        "did you mean EXECUTOR_QUEUE_NAMES?"
    ) in done.stderr


def test_removal_copes_with_read_only_directories_deep_trees_and_symlinks() -> None:
    # Under /tmp itself, so that an ordinary user can reach it (pytest's tmp_path is 0700).
    top = Path(tempfile.mkdtemp(prefix="offload-removal-", dir="/tmp"))
    try:
        top.chmod(0o755)
        outside = top / "outside"
        outside.mkdir()
        (outside / "keep").write_text("the host's\n")
        tree = top / "workspace"
        locked = tree / "locked" / "inner"
        locked.mkdir(parents=True)
        (locked / "file").write_text("x")
        (tree / "link").symlink_to(outside)
        (locked / "link").symlink_to(outside / "keep")
        deep = tree / "deep"
        deep.mkdir()
        for _ in range(1200):  # deeper than Python's recursion limit
            deep = deep / "d"
            deep.mkdir()
        (tree / "deep" / "d").chmod(0o500)
        locked.chmod(0o500)
        (tree / "locked").chmod(0o000)
        outside.chmod(0o555)
        if os.geteuid() == 0:
            # Root ignores modes: remove as the tree's owner, as a non-root executor would.
            subprocess.run(["chown", "-R", "-h", "65534:65534", str(top)], check=True)
            # A forked child that drops to the owner: it needs no read access to the checkout
            # or the virtualenv (a fresh clone may sit in a directory only root can enter).
            child = os.fork()
            if child == 0:  # pragma: no cover (the child)
                try:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                    os._exit(0 if remove_tree(tree) else 1)
                finally:
                    os._exit(2)
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0, "remove_tree failed as the owner"
        else:
            assert remove_tree(tree)
        assert not tree.exists()
        assert (outside / "keep").read_text() == "the host's\n"
        assert stat.S_IMODE(outside.stat().st_mode) == 0o555, "chmod went through a symlink"
    finally:
        remove_tree(top)


# --- what a killed executor leaves --------------------------------------------------------

_DEAD_RUN = """
import os, subprocess, sys, time
from pathlib import Path
from offload.executor.rundir import RunDir
run = RunDir.claim(Path(sys.argv[1]), "dead-run")
ws = run.path / "workspace-2-abc"
(ws / "ro" / "a").mkdir(parents=True)
(ws / "ro" / "a" / "f").write_text("x")
for d in (ws / "ro" / "a", ws / "ro"):
    d.chmod(0o555)
(run.path / "workspace-2-abc.host").mkdir()
subprocess.Popen(["sleep", sys.argv[2]], cwd=ws, start_new_session=True)
print("ready", flush=True)
time.sleep(600)
"""


def _killed_run(parent: Path) -> int:
    """A run that SIGKILL stopped while its step slept, in `parent`; the step's pid."""
    sleep = ["sleep", str(random.randint(8000, 8999))]
    dead = subprocess.Popen(
        [sys.executable, "-c", _DEAD_RUN, str(parent), sleep[1]], stdout=subprocess.PIPE, text=True
    )
    assert dead.stdout is not None and dead.stdout.readline() == "ready\n"
    dead.kill()
    dead.wait()
    dead.stdout.close()
    orphan = _process(sleep)
    assert orphan is not None, "the dead run's step died with it"
    return orphan


async def test_a_dead_runs_leftovers_are_swept_and_a_live_runs_are_not(tmp_path: Path) -> None:
    from offload.executor.rundir import RunDir, sweep
    from offload.executor.runtimes.cgroup import Cgroups

    parent = tmp_path / "workspaces"
    live = RunDir.claim(parent, "live-run")
    (live.path / "workspace-1-xyz").mkdir()
    orphan = _killed_run(parent)

    swept = await sweep(parent, Cgroups.detect())
    assert swept.describe() == (
        "removed 1 workspace and 1 process left by a previous run of this executor"
    )
    assert not _alive(orphan)
    assert sorted(p.name for p in parent.iterdir()) == ["live-run", "live-run.lock"]
    assert (live.path / "workspace-1-xyz").is_dir()
    assert (await sweep(parent, Cgroups.detect())).describe() == "", "swept twice"
    live.release()
    assert list(parent.iterdir()) == []


async def test_kept_workspaces_of_a_dead_run_stay_until_a_start_that_keeps_none(
    tmp_path: Path,
) -> None:
    from offload.executor.rundir import sweep
    from offload.executor.runtimes.cgroup import Cgroups

    parent = tmp_path / "workspaces"
    orphan = _killed_run(parent)
    kept = await sweep(parent, Cgroups.detect(), keep_workspaces=True)
    assert kept.describe() == (
        "removed 1 process left by a previous run of this executor; "
        "kept 1 workspace (EXECUTOR_KEEP_WORKSPACES)"
    )
    assert not _alive(orphan)
    assert (parent / "dead-run" / "workspace-2-abc" / "ro" / "a" / "f").is_file()
    removed = await sweep(parent, Cgroups.detect())
    assert removed.describe() == "removed 1 workspace left by a previous run of this executor"
    assert list(parent.iterdir()) == []


@pytest.fixture
def fleet(sqlite_template: Path, tmp_path: Path) -> Iterator[Fleet]:
    path = tmp_path / "offload.db"
    shutil.copy(sqlite_template, path)
    # Steps of a root executor run as another uid, which must reach the data directory:
    # pytest's tmp_path is closed to others (0700).
    data = Path(tempfile.mkdtemp(prefix="offload-leftovers-", dir="/tmp"))
    data.chmod(0o755)
    fleet = Fleet(DatabaseURL.for_sqlite(path), data)
    make_repo(tmp_path / "src" / "demo", {"README": "hello from demo\n"})
    fleet.start_server()
    added = fleet.offload("repos", "add", str(tmp_path / "src" / "demo"), "--name", "demo")
    assert added.returncode == 0, added.stderr
    yield fleet
    fleet.stop_all()
    remove_tree(data)


def _wait(what: str, found: Callable[[], object], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout}s")


def _process(argv: list[str]) -> int | None:
    """The pid of a live process running exactly `argv`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if [c.decode(errors="replace") for c in cmdline] == argv and state != "Z":
                return int(entry.name)
    return None


def _cgroup_dirs(pid: int) -> list[Path]:
    """The directories of the run cgroups that `pid` is in (below an `offload` group)."""
    mounts: list[tuple[str, set[str], Path]] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype, _, options = fields[fields.index("-") + 1 :][:3]
        if fstype in ("cgroup", "cgroup2") and fields[3] == "/":
            mounts.append((fstype, set(options.split(",")), Path(fields[4])))
    found = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, group = line.split(":", 2)
        if "/offload/" not in group:
            continue
        for fstype, options, point in mounts:
            v2 = fstype == "cgroup2" and not controllers
            v1 = fstype == "cgroup" and bool(controllers) and set(controllers.split(",")) <= options
            if (v1 or v2) and (point / group.lstrip("/")).is_dir():
                found.append(point / group.lstrip("/"))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _workspace(data: Path) -> Path | None:
    # In the run's directory of workspaces, or on a workspace disk (executor/disks.py).
    found = [p for p in data.glob("*/*/workspace-*") if not p.name.endswith(".host")]
    return found[0] if found else None


def _leftovers(fleet: Fleet, name: str, backend: str) -> tuple[int, list[Path], Path]:
    """An executor holding a running job (a sleeping step), SIGKILLed: the step's pid, its
    run cgroups, and its workspace."""
    first = fleet.start_executor(name, slots=1, backend=backend)
    sleep = ["sleep", str(random.randint(7000, 7999))]
    # The step leaves a read-only tree in its workspace, as steps do.
    script = f"mkdir -p ro/a && touch ro/a/f && chmod -R a-w ro && exec {' '.join(sleep)}"
    fleet.submit("demo", ["sh", "-c", script])
    pid = int(str(_wait("sleeping step", lambda: _process(sleep))))
    data = fleet.data_dir / f"executor-{name}"
    workspace = Path(str(_wait("workspace", lambda: _workspace(data))))
    groups = _cgroup_dirs(pid)
    if backend == "sandbox" and "no cgroups" not in "".join(first.lines):
        assert groups, f"the step is in no run cgroup: {Path(f'/proc/{pid}/cgroup').read_text()}"
    first.stop(signal.SIGKILL)
    return pid, groups, workspace


@pytest.mark.slow
def test_the_next_start_removes_a_killed_executors_workspace_and_cgroups(fleet: Fleet) -> None:
    pid, groups, workspace = _leftovers(fleet, "exec-left", "sandbox")
    # bubblewrap takes the step with it; the workspace and the cgroups it ran in stay.
    _wait("the end of the sandboxed step", lambda: not _alive(pid))
    assert workspace.is_dir() and all(g.is_dir() for g in groups)

    second = fleet.start_executor("exec-left", slots=1)
    # A workspace in the run's own directory is counted here; one on a workspace disk goes
    # with its disk (executor/disks.py says so in a line of its own).
    in_run_dir = workspace.parent.parent.name == "workspaces"
    removed = ("1 workspace" if in_run_dir else "") + (" and " if in_run_dir and groups else "")
    removed += "1 cgroup" if groups else ""
    if removed:
        second.wait_for(rf"removed {removed} left by a previous run of this executor")
    assert not workspace.exists() and not workspace.parent.exists()
    assert not workspace.with_name(workspace.name + ".host").exists()
    assert not any(g.exists() for g in groups), groups
    assert not any(g.parent.exists() for g in groups), "the dead run's own cgroup is left"
    runs = fleet.data_dir / "executor-exec-left" / "workspaces"
    assert len(list(runs.glob("*.lock"))) == 1, list(runs.iterdir())  # the live run's

    job_id = fleet.submit("demo", ["sh", "-c", "cat README"])
    job = fleet.wait_state(job_id, {"completed", "failed", "errored"})
    assert job["state"] == "completed", (job, fleet.logs(job_id))

    # A clean stop leaves nothing for the next start to find.
    live = next(runs.glob("*.lock")).name.removesuffix(".lock")
    assert second.stop() == 0
    assert list(runs.iterdir()) == []
    assert not any((g.parent.parent / live).exists() for g in groups)


@pytest.mark.slow
def test_the_next_start_kills_the_steps_a_killed_shell_executor_left(fleet: Fleet) -> None:
    pid, _, workspace = _leftovers(fleet, "exec-shell", "shell")
    time.sleep(0.5)
    assert _alive(pid), "the shell runtime's step died with its executor"

    second = fleet.start_executor("exec-shell", slots=1, backend="shell")
    # The step's shell and its sleep; a workspace on a workspace disk goes with its disk.
    second.wait_for(
        r"removed (1 workspace and )?2 processes left by a previous run of this executor"
    )
    assert not _alive(pid)
    assert not workspace.exists()
