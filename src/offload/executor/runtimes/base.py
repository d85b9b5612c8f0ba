"""The contract every runtime keeps: make images ready, say how to run a step, stop it."""

from __future__ import annotations

import posixpath
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
    read-write at WORKSPACE_MOUNT inside the isolation. The script runs with `shell` (a path
    inside the step's root, as `Runtime.shell` found it), which the step sees as $OFFLOAD_SHELL.
    """

    key: str
    script: str
    image: str | None = None  # None: the runtime's default root filesystem
    dir: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    # Bound after the root, /tmp and the workspace, so they override what is there.
    mounts: tuple[Mount, ...] = ()
    shell: str = "/bin/sh"


@dataclass(frozen=True)
class Shell:
    """The shell that runs a step's scripts: bash when the step's root has one, else sh."""

    path: str  # inside the step's root
    reason: str  # for the job's log: where bash was found, or why sh

    @classmethod
    def bash(cls, path: str, where: str) -> Shell:
        """The bash at `path` in `where` (an image, the default root, this host)."""
        return cls(path, f"found in {where} at {path}")

    @classmethod
    def sh(cls, reason: str) -> Shell:
        """/bin/sh, for `reason` (the root has no bash, or looking for it failed)."""
        return cls("/bin/sh", reason)

    @property
    def name(self) -> str:
        """bash or sh, as the log names it."""
        return "bash" if posixpath.basename(self.path) == "bash" else "sh"

    def started(self, key: str) -> str:
        """The log line that says which shell runs step `key`, and why."""
        return f"running step {key} with {self.name} ({self.reason})"

    def failed(self, key: str) -> str:
        """What a log adds when step `key` failed under sh (bash-only commands fail there)."""
        if self.name == "bash":
            return ""
        return (
            f"step {key} ran with sh because {self.reason}: commands only bash has (pushd, "
            "[[ ]], arrays, source) fail under sh; use an image that has bash, or write the "
            "step for sh"
        )


def step_env(step: Step) -> dict[str, str]:
    """The step's own variables and $OFFLOAD_SHELL, which a script uses to run another."""
    return {**step.env, "OFFLOAD_SHELL": step.shell}


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

    async def shell(self, image: str | None) -> Shell:
        """The shell for steps of a prepared `image` (None: the default root); cached per image."""
        ...

    def command(self, step: Step, workspace: Path, limits: Limits, run_id: str) -> list[str]:
        """The host argv that runs `step` isolated; StepUnsupported if it cannot run it as asked."""
        ...

    async def stop(self, run_id: str) -> Outcome:
        """Stop what the engine still runs for `run_id` once its process group ended; what
        the engine saw of the run."""
        ...
