"""The runtimes an executor can use, by name, and the default for this machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from offload.executor.images import ImageStore
from offload.executor.runtimes.base import Runtime, RuntimeUnavailable
from offload.executor.runtimes.cgroup import Cgroups
from offload.executor.runtimes.docker import DockerRuntime
from offload.executor.runtimes.sandbox import SandboxRuntime
from offload.executor.runtimes.shell import ShellRuntime


@dataclass(frozen=True)
class RuntimeSettings:
    """What the runtimes need from the executor's config."""

    images_dir: Path
    # The --data-dir `offload executor images` needs to reach images_dir (None: its default).
    images_data_dir: Path | None = None
    pull_images: bool = True
    docker: str = "docker"
    docker_host: str | None = None
    docker_default_image: str = "busybox:latest"
    # Whose run cgroups these are (one start of an executor); see runtimes/cgroup.py.
    cgroup_owner: str = ""


def _sandbox(settings: RuntimeSettings) -> Runtime:
    return SandboxRuntime(
        ImageStore(
            settings.images_dir, pull=settings.pull_images, data_dir=settings.images_data_dir
        ),
        cgroups=Cgroups.detect(owner=settings.cgroup_owner),
    )


def _docker(settings: RuntimeSettings) -> Runtime:
    return DockerRuntime(
        docker=settings.docker,
        host=settings.docker_host,
        default_image=settings.docker_default_image,
        pull=settings.pull_images,
    )


def _shell(settings: RuntimeSettings) -> Runtime:
    return ShellRuntime()


RUNTIMES: dict[str, Callable[[RuntimeSettings], Runtime]] = {
    "sandbox": _sandbox,
    "docker": _docker,
    "shell": _shell,
}


def build_runtime(name: str, settings: RuntimeSettings) -> Runtime:
    """The runtime called `name`; ValueError listing the valid names for an unknown one."""
    try:
        factory = RUNTIMES[name]
    except KeyError:
        raise ValueError(
            f"unknown runtime {name!r}; valid runtimes are: {', '.join(sorted(RUNTIMES))}"
        ) from None
    return factory(settings)


def default_runtime(docker: str = "docker", docker_host: str | None = None) -> str:
    """sandbox on Linux with bubblewrap, else docker when an engine answers; never shell."""
    if sys.platform.startswith("linux") and shutil.which("bwrap"):
        return "sandbox"
    if shutil.which(docker) and _docker_answers(docker, docker_host):
        return "docker"
    raise RuntimeUnavailable(
        "no isolating runtime found on this machine: install bubblewrap (apt-get install "
        "bubblewrap umoci skopeo) for the sandbox runtime, or Docker or Podman for the docker "
        "runtime; to run steps WITHOUT isolation for trusted development, choose the shell "
        "runtime explicitly (EXECUTOR_BACKEND=shell)"
    )


def _docker_answers(docker: str, host: str | None) -> bool:
    argv = [
        docker,
        *(["--host", host] if host else []),
        "version",
        "--format",
        "{{.Server.Version}}",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
