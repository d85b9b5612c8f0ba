"""The shell runtime: steps run directly on the host, with NO isolation (trusted use only)."""

from __future__ import annotations

import getpass
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from offload.executor.runtimes.base import (
    Limits,
    Outcome,
    Shell,
    Step,
    StepUnsupported,
    step_env,
)

_CHDIR = 'cd -- "$1" && shift && exec "$@"'


class ShellRuntime:
    """The host's bash (else /bin/sh) in the workspace, with the step's env and nothing else;
    for development only."""

    name = "shell"

    def __init__(self, *, path: str | None = None) -> None:
        # The host PATH, so the developer's own tools are found.
        self._path = path if path is not None else os.environ.get("PATH", os.defpath)
        self._env = shutil.which("env") or "/usr/bin/env"
        bash = shutil.which("bash", path=self._path)
        self._shell = Shell.bash(bash, "this host") if bash else Shell.sh("this host has no bash")

    async def check(self) -> str:
        """Say, loudly, that steps are not isolated."""
        return (
            f"shell: WARNING: NO ISOLATION. Steps run as {getpass.getuser()} directly on this "
            "host, with its network, files and processes in reach. Trusted development only; "
            "use the sandbox or docker runtime for anything else."
        )

    async def prepare(self, images: Sequence[str]) -> None:
        """Nothing to prepare: images are ignored, steps use the host's tools."""

    async def shell(self, image: str | None) -> Shell:
        """The host's bash when its PATH has one, else /bin/sh (images are ignored)."""
        return self._shell

    def command(self, step: Step, workspace: Path, limits: Limits, run_id: str) -> list[str]:
        """`<shell> <workspace>/<script>` in <workspace>/<dir>, with only the step's env."""
        if step.mounts:
            targets = ", ".join(m.target for m in step.mounts)
            raise StepUnsupported(
                f"step {step.key} mounts files at {targets}, but the shell runtime runs steps "
                "on the host itself and cannot mount anything; run this job on an executor "
                "with the sandbox or docker runtime (EXECUTOR_BACKEND)"
            )
        env = {"PATH": self._path, "HOME": str(workspace), **step_env(step)}
        return [
            self._env,
            "-i",
            *(f"{key}={value}" for key, value in env.items()),
            "/bin/sh",
            "-c",
            _CHDIR,
            "offload-step",
            str(workspace / step.dir),
            step.shell,
            str(workspace / step.script),
        ]

    async def stop(self, run_id: str) -> Outcome:
        """Nothing outside the process group to stop, nor any limit to report."""
        return Outcome()
