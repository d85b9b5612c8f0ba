"""Per-run control groups: the pids and cpu limits that rlimits cannot give a root executor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.executor.runtimes.base import Limits

# The kernel does not enforce RLIMIT_NPROC for uid 0, so a root executor needs the pids
# controller to stop a fork bomb; cpu quotas have no rlimit at all.
CONTROLLERS = ("pids", "cpu")
PARENT = "offload"

# Joins the cgroups named before "--" (by writing its own pid), then execs the rest.
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy we may use: its version, controllers and our parent group."""

    version: int
    controllers: frozenset[str]
    parent: Path


class Cgroups:
    """Creates, joins and removes the control groups of runs, where this host lets us."""

    def __init__(self, hierarchies: Sequence[Hierarchy]) -> None:
        self._hierarchies = tuple(hierarchies)

    @classmethod
    def detect(
        cls,
        mountinfo: Path = Path("/proc/self/mountinfo"),
        own: Path = Path("/proc/self/cgroup"),
    ) -> Cgroups:
        """The usable hierarchies below this process's own cgroups (none when not permitted)."""
        try:
            mounts = mountinfo.read_text().splitlines()
            memberships = own.read_text().splitlines()
        except OSError:
            return cls(())
        found: list[Hierarchy] = []
        for line in mounts:
            hierarchy = _hierarchy(line, memberships)
            if hierarchy is not None:
                found.append(hierarchy)
        return cls(found)

    @property
    def controllers(self) -> frozenset[str]:
        """The controllers that runs get limits from."""
        return frozenset().union(*(h.controllers for h in self._hierarchies))

    def describe(self) -> str:
        """Where run cgroups live, for the runtime's check line."""
        if not self._hierarchies:
            return "no cgroups"
        return ", ".join(
            f"{'+'.join(sorted(h.controllers))} (cgroup v{h.version} {h.parent})"
            for h in self._hierarchies
        )

    def create(self, run_id: str, limits: Limits) -> list[str]:
        """Make the run's cgroups with its limits; the argv prefix that joins them."""
        procs: list[str] = []
        for h in self._hierarchies:
            group = h.parent / _safe(run_id)
            group.mkdir(exist_ok=True)
            for name, value in _limit_files(h, limits):
                (group / name).write_text(value)
            procs.append(str(group / "cgroup.procs"))
        if not procs:
            return []
        return ["/bin/sh", "-c", _JOIN, "offload-cgroup", *procs, "--"]

    async def remove(self, run_id: str, patience: float = 5.0) -> None:
        """Kill whatever is still in the run's cgroups, then delete them."""
        for h in self._hierarchies:
            group = h.parent / _safe(run_id)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + patience
            while group.exists():
                for pid in _members(group):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    group.rmdir()
                except FileNotFoundError:
                    break
                except OSError:
                    # Busy until the killed members have been reaped.
                    if loop.time() > deadline:
                        raise RuntimeError(
                            f"cgroup {group} still has processes {_members(group)} after "
                            f"{patience:.0f}s; kill them and remove the directory"
                        ) from None
                    await asyncio.sleep(0.02)


def _hierarchy(line: str, memberships: list[str]) -> Hierarchy | None:
    fields = line.split()
    sep = fields.index("-")
    mount_root, mount_point = fields[3], fields[4]
    fstype, options = fields[sep + 1], fields[sep + 3].split(",")
    if fstype == "cgroup":
        wanted = frozenset(options) & frozenset(CONTROLLERS)
        own = _own_path(memberships, lambda ctrls: bool(wanted) and wanted <= ctrls)
        version = 1
    elif fstype == "cgroup2":
        own = _own_path(memberships, lambda ctrls: ctrls == frozenset({""}))
        wanted = frozenset()
        version = 2
    else:
        return None
    if own is None or not own.startswith(mount_root):
        return None
    base = Path(mount_point) / own[len(mount_root) :].lstrip("/")
    if version == 2:
        # cgroup v2 only lets us use controllers our own group already delegates.
        with contextlib.suppress(OSError):
            delegated = (base / "cgroup.subtree_control").read_text().split()
            wanted = frozenset(delegated) & frozenset(CONTROLLERS)
    if not wanted:
        return None
    parent = base / PARENT
    try:
        parent.mkdir(exist_ok=True)
        if version == 2:
            enable = " ".join(f"+{c}" for c in sorted(wanted))
            (parent / "cgroup.subtree_control").write_text(enable)
    except OSError:
        return None
    return Hierarchy(version=version, controllers=wanted, parent=parent)


def _own_path(memberships: list[str], match: Callable[[frozenset[str]], bool]) -> str | None:
    for line in memberships:
        _, ctrls, path = line.split(":", 2)
        if match(frozenset(ctrls.split(","))):
            return path
    return None


def _limit_files(h: Hierarchy, limits: Limits) -> list[tuple[str, str]]:
    files: list[tuple[str, str]] = []
    if "pids" in h.controllers and limits.pids > 0:
        files.append(("pids.max", str(limits.pids)))
    if "cpu" in h.controllers and limits.cpus > 0:
        period = 100_000
        quota = max(1000, int(limits.cpus * period))
        if h.version == 1:
            files += [("cpu.cfs_period_us", str(period)), ("cpu.cfs_quota_us", str(quota))]
        else:
            files.append(("cpu.max", f"{quota} {period}"))
    return files


def _members(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _safe(run_id: str) -> str:
    # Never "." or "..": the name is joined to a path we later rmdir.
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id) or "run"
