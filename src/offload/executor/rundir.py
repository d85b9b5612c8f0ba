"""An executor run's own directory of workspaces, held by a lock for as long as the run lives.

Executors on one host may share a data directory, and an executor's default name is new at
every start, so what a previous run left is told apart by a lock, not by a name: each run
holds an flock on `<workspaces>/<run>.lock` and keeps its workspaces in `<workspaces>/<run>/`
(its cgroups are `offload/<run>/...`, runtimes/cgroup.py). The kernel drops a lock when its
process dies, however it dies: a lock that can be taken belongs to a dead run, and `sweep`
removes what that run left (its step processes, its cgroups, its workspaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from offload.executor.disks import dead_disks
from offload.executor.runtimes.cgroup import Cgroups
from offload.executor.workspace import remove_tree

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
# How long killed step processes get to vanish before their workspaces are removed.
KILL_WAIT = 2.0


class RunDir:
    """This run's directory of workspaces, and the lock that says the run is alive."""

    def __init__(self, path: Path, lock: Path, fd: int) -> None:
        self.path = path
        self.lock = lock
        self._fd = fd

    @classmethod
    def claim(cls, parent: Path, run_id: str) -> RunDir:
        """Take the lock of run `run_id` under `parent` and make its directory; OSError if not."""
        parent.mkdir(parents=True, exist_ok=True)
        lock = parent / f"{run_id}{LOCK_SUFFIX}"
        # os.open's descriptors are not inherited: a step that outlives a killed executor
        # must not keep its run looking alive.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = parent / run_id
            path.mkdir(exist_ok=True)
        except OSError:
            os.close(fd)
            raise
        return cls(path, lock, fd)

    def release(self, *, keep: bool = False) -> None:
        """Remove the directory and the lock (unless `keep`: the next start keeps them too)."""
        try:
            if not keep and remove_tree(self.path):
                self.lock.unlink(missing_ok=True)
        finally:
            os.close(self._fd)


@dataclass
class Swept:
    """What a sweep found of dead runs, and removed."""

    runs: int = 0
    workspaces: int = 0
    cgroups: int = 0
    processes: int = 0
    kept: int = 0

    def describe(self) -> str:
        """One line for the log; empty when there was nothing to sweep."""
        counts = [
            _plural(self.workspaces, "workspace"),
            _plural(self.cgroups, "cgroup"),
            _plural(self.processes, "process", "processes"),
        ]
        removed = [c for c in counts if not c.startswith("0 ")]
        if not removed and not self.kept:
            return ""
        removed = removed or ["nothing"]
        listed = ", ".join(removed[:-1]) + (" and " if len(removed) > 1 else "") + removed[-1]
        by = f"{self.runs} previous runs" if self.runs > 1 else "a previous run"
        line = f"removed {listed} left by {by} of this executor"
        if self.kept:
            line += f"; kept {_plural(self.kept, 'workspace')} (EXECUTOR_KEEP_WORKSPACES)"
        return line


async def sweep(
    parent: Path, cgroups: Cgroups, *, keep_workspaces: bool = False, disks: Path | None = None
) -> Swept:
    """Remove what every dead run under `parent` left; what was removed.

    A run whose leftovers cannot all be removed keeps its lock file, so the next start
    tries again. With `keep_workspaces`, workspaces (and the lock) stay for inspection.
    Steps still running on the workspace disks in `disks` whose executor died are killed
    too; the disks themselves are executor/disks.py's to remove.
    """
    swept = Swept()
    if disks is not None:
        swept.processes += await asyncio.to_thread(_kill_on_dead_disks, disks)
    try:
        names = sorted(e.name for e in os.scandir(parent) if e.name.endswith(LOCK_SUFFIX))
    except FileNotFoundError:
        names = []
    for name in names:
        lock, run_id = parent / name, name.removesuffix(LOCK_SUFFIX)
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its executor is alive
            # Another start may have swept this run and unlinked its lock meanwhile.
            try:
                if os.stat(lock).st_ino != os.fstat(fd).st_ino:
                    continue
            except FileNotFoundError:
                continue
            await _sweep_run(parent / run_id, lock, run_id, cgroups, keep_workspaces, swept)
        finally:
            os.close(fd)
    return swept


async def _sweep_run(
    run: Path, lock: Path, run_id: str, cgroups: Cgroups, keep: bool, swept: Swept
) -> None:
    swept.runs += 1
    # Steps of the shell runtime and host steps do not die with their executor.
    swept.processes += await asyncio.to_thread(_kill_inside, run)
    try:
        swept.cgroups += await cgroups.sweep([run_id])
    except RuntimeError as exc:
        log.warning("could not remove the cgroups of dead run %s: %s", run_id, exc)
        return
    workspaces = _workspaces(run)
    if keep:
        swept.kept += workspaces
        return
    if not await asyncio.to_thread(remove_tree, run):
        log.warning("could not remove all of %s, left by a dead run; remove it by hand", run)
        return
    swept.workspaces += workspaces
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)


def _workspaces(run: Path) -> int:
    try:
        # Each workspace has a host directory beside it: count the workspaces only.
        return sum(1 for entry in os.scandir(run) if not entry.name.endswith(".host"))
    except OSError:
        return 0


def _kill_on_dead_disks(root: Path) -> int:
    """SIGKILL the processes working on the disks of dead executors; how many there were."""
    with dead_disks(root) as dead:
        return sum(_kill_inside(mount) for _, mount, _ in dead)


def _kill_inside(run: Path) -> int:
    """SIGKILL every process whose working directory is in `run`; how many there were."""
    inside = os.path.realpath(run)
    killed: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd == inside or cwd.startswith(inside + "/"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    deadline = time.monotonic() + KILL_WAIT
    while any(_running(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(killed)


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, waiting for its parent to reap it, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _plural(count: int, word: str, plural: str = "") -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"
