"""Per-run control groups: the memory, pids and cpu limits that rlimits cannot give well."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.executor.runtimes.base import Limits, Outcome

# RLIMIT_NPROC counts every process of a uid (all jobs that run as it, together) and is not
# enforced for uid 0; RLIMIT_AS limits address space, which Go, Java and node reserve far
# beyond what they use; cpu quotas have no rlimit at all.
CONTROLLERS = ("pids", "cpu", "memory")
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
    """Creates, joins and removes the control groups of runs, where this host lets us.

    With an `owner` (one start of an executor), run groups live in `offload/<owner>/<run>`,
    so that a later start can remove what a dead one left without touching live runs.
    """

    def __init__(self, hierarchies: Sequence[Hierarchy], owner: str = "") -> None:
        self._hierarchies = tuple(hierarchies)
        self._owner = _safe(owner) if owner else ""
        self._owned: set[Path] = set()

    @classmethod
    def detect(
        cls,
        mountinfo: Path = Path("/proc/self/mountinfo"),
        own: Path = Path("/proc/self/cgroup"),
        *,
        owner: str = "",
    ) -> Cgroups:
        """The usable hierarchies below this process's own cgroups (none when not permitted)."""
        try:
            mounts = mountinfo.read_text().splitlines()
            memberships = own.read_text().splitlines()
        except OSError:
            return cls((), owner)
        found: list[Hierarchy] = []
        for line in mounts:
            hierarchy = _hierarchy(line, memberships)
            if hierarchy is not None:
                found.append(hierarchy)
        return cls(found, owner)

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
            group = self._owner_group(h) / _safe(run_id)
            group.mkdir(exist_ok=True)
            for name, value in _limit_files(h, limits, group):
                (group / name).write_text(value)
            procs.append(str(group / "cgroup.procs"))
        if not procs:
            return []
        return ["/bin/sh", "-c", _JOIN, "offload-cgroup", *procs, "--"]

    async def remove(self, run_id: str, patience: float = 5.0) -> None:
        """Kill whatever is still in the run's cgroups, then delete them."""
        for h in self._hierarchies:
            parent = h.parent / self._owner if self._owner else h.parent
            await _kill_and_remove(parent / _safe(run_id), patience)

    def outcome(self, run_id: str) -> Outcome:
        """What the run's groups counted so far: a memory or pids limit hit, CPU held back."""
        oom = forks = 0
        throttled = 0.0
        for h in self._hierarchies:
            parent = h.parent / self._owner if self._owner else h.parent
            group = parent / _safe(run_id)
            if "memory" in h.controllers:
                events = "memory.oom_control" if h.version == 1 else "memory.events"
                oom += _counter(group / events, "oom_kill")
            if "pids" in h.controllers:
                forks += _counter(group / "pids.events", "max")
            if "cpu" in h.controllers:
                if h.version == 1:
                    throttled += _counter(group / "cpu.stat", "throttled_time") / 1e9
                else:
                    throttled += _counter(group / "cpu.stat", "throttled_usec") / 1e6
        limit = "memory" if oom else "pids" if forks else None
        return Outcome(limit=limit, throttled=throttled)

    async def sweep(self, owners: Sequence[str], patience: float = 5.0) -> int:
        """Kill and remove every run group of these (dead) owners, and theirs; how many runs."""
        runs: set[tuple[str, str]] = set()
        for owner in owners:
            for h in self._hierarchies:
                group = h.parent / _safe(owner)
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    runs.update((owner, run.name) for run in group.iterdir() if run.is_dir())
                await _kill_and_remove(group, patience)
        return len(runs)

    def _owner_group(self, h: Hierarchy) -> Path:
        if not self._owner:
            return h.parent
        group = h.parent / self._owner
        if group not in self._owned:
            group.mkdir(exist_ok=True)
            if h.version == 2:
                # Runs get only the controllers that each group above them enables.
                enable = " ".join(f"+{c}" for c in sorted(h.controllers))
                (group / "cgroup.subtree_control").write_text(enable)
            self._owned.add(group)
        return group


async def _kill_and_remove(group: Path, patience: float) -> None:
    """Kill the members of `group` and of the groups below it, then delete them all."""
    # cgroupfs answers from memory: these calls do not block the loop.
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for child in [Path(e.path) for e in os.scandir(group) if e.is_dir(follow_symlinks=False)]:
            await _kill_and_remove(child, patience)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    # A step's last process is usually gone within a millisecond or two of its group's
    # leader: poll fast at first, since every step waits for this.
    delay = 0.001
    while True:
        for pid in _members(group):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.rmdir(group)
            break
        except FileNotFoundError:
            break
        except OSError:
            # Busy until the killed members have been reaped.
            if loop.time() > deadline:
                raise RuntimeError(
                    f"cgroup {group} still has processes {_members(group)} after "
                    f"{patience:.0f}s; kill them and remove the directory"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)


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


def _limit_files(h: Hierarchy, limits: Limits, group: Path) -> list[tuple[str, str]]:
    files: list[tuple[str, str]] = []
    if "memory" in h.controllers and limits.memory_bytes > 0:
        memory = str(limits.memory_bytes)
        if h.version == 1:
            # Memory first: the kernel refuses memory+swap below memory. Without swap
            # accounting (no memsw files) there is no swap to limit.
            files.append(("memory.limit_in_bytes", memory))
            if (group / "memory.memsw.limit_in_bytes").exists():
                files.append(("memory.memsw.limit_in_bytes", memory))
        else:
            files.append(("memory.max", memory))
            if (group / "memory.swap.max").exists():
                files.append(("memory.swap.max", "0"))
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


def _counter(path: Path, name: str) -> int:
    """The value of `name` in a flat-keyed cgroup file (`name value` lines); 0 if absent."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _members(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _safe(run_id: str) -> str:
    # Never "." or "..": the name is joined to a path we later rmdir.
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id) or "run"
