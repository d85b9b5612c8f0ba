"""The contract every runtime keeps: make images ready, say how to run a step, stop it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Protocol


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot work on this machine; the message says why and what to install."""


class ImageNotFound(LookupError):
    """An image a job needs is neither in the local store nor pullable; the message says how."""


class StepUnsupported(ValueError):
    """This runtime cannot run the step as asked (mounts on shell, say); the message says why."""


@dataclass(frozen=True)
class Limits:
    """What one step may use. Zero means no limit of that kind."""

    cpus: float = 0.0
    memory_bytes: int = 0
    pids: int = 4096
    open_files: int = 4096
    # The workspace's size on disk and the size of the step's /tmp.
    disk_bytes: int = 0
    tmp_bytes: int = 0
    # What one job may write to its log (all steps together).
    output_bytes: int = 0
    # The host uid and gid steps run as (None: the executor's own, when it is not root).
    uid: int | None = None
    gid: int | None = None
    # Steps get no network unless the job explicitly allows it.
    network: bool = False
    # Private-range networks a granted job may reach anyway (a site admin lists them).
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()


@dataclass(frozen=True)
class Mount:
    """A host path (inside the job's workspace) bound at `target` inside the step."""

    source: Path  # absolute, symlinks resolved
    target: str  # absolute and normalized; never /, /proc, /dev or WORKSPACE_MOUNT
    read_only: bool = True


@dataclass(frozen=True)
class Step:
    """One step of a job, as the runtime needs it.

    `script` and `dir` are relative to the workspace root, which every runtime mounts
    read-write at WORKSPACE_MOUNT inside the isolation (the script is run with /bin/sh).
    """

    key: str
    script: str
    image: str | None = None  # None: the runtime's default root filesystem
    dir: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    # Bound after the root, /tmp and the workspace, so they override what is there.
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What the engine saw of a finished run: a limit it hit, and CPU time held back."""

    # "memory" (a process was killed for it) or "pids" (a fork failed for it); None if neither.
    limit: str | None = None
    # Seconds the cpu limit kept the step's processes waiting.
    throttled: float = 0.0


# Where the workspace appears inside every runtime, so scripts can rely on one path.
WORKSPACE_MOUNT = "/data"


class Runtime(Protocol):
    """One way of isolating steps (sandbox, docker, shell, ...)."""

    name: str

    async def check(self) -> str:
        """Verify the runtime works here: a one-line description, or RuntimeUnavailable."""
        ...

    async def prepare(self, images: Sequence[str]) -> None:
        """Make every image ready to run (import, unpack, pull); ImageNotFound otherwise."""
        ...

    def command(self, step: Step, workspace: Path, limits: Limits, run_id: str) -> list[str]:
        """The host argv that runs `step` isolated; StepUnsupported if it cannot run it as asked."""
        ...

    async def stop(self, run_id: str) -> Outcome:
        """Stop what the engine still runs for `run_id` once its process group ended; what
        the engine saw of the run."""
        ...
