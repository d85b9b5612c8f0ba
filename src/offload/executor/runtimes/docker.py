"""The docker runtime: each step in a throwaway container of Docker or Podman (docker CLI)."""

from __future__ import annotations

import asyncio
import csv
import io
import posixpath
import shutil
from collections.abc import Sequence
from pathlib import Path

from offload.executor.runtimes.base import (
    WORKSPACE_MOUNT,
    ImageNotFound,
    Limits,
    Mount,
    Outcome,
    RuntimeUnavailable,
    Shell,
    Step,
    StepUnsupported,
    step_env,
)

# Run in the image once: where its PATH finds bash (nothing when it has none).
_FIND_BASH = "command -v bash || true"


class DockerRuntime:
    """`docker run --network none` with limits and hardening, via the docker CLI."""

    name = "docker"

    def __init__(
        self,
        *,
        docker: str = "docker",
        host: str | None = None,
        default_image: str = "busybox:latest",
        pull: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self._docker = shutil.which(docker) or docker
        self._host = host
        self.default_image = default_image
        self._pull = pull
        self._timeout = timeout
        # By image name; prepare() forgets one whose image the engine now has with another id.
        self._shells: dict[str, Shell] = {}
        self._ids: dict[str, str] = {}

    async def check(self) -> str:
        """Ask the engine for its name and version; RuntimeUnavailable when it does not answer."""
        if shutil.which(self._docker) is None:
            raise RuntimeUnavailable(
                f"docker runtime: the docker CLI {self._docker!r} is not installed; install "
                "docker.io (or podman with podman-docker), or set the CLI path in the config"
            )
        code, out, err = await self._cli(
            "version", "--format", "{{.Server.Platform.Name}} {{.Server.Version}}"
        )
        if code != 0:
            raise RuntimeUnavailable(
                f"docker runtime: no engine answers at {self._where()} ({_last(err)}); start "
                "dockerd or `podman system service`, or point DOCKER_HOST at a running one"
            )
        # Podman names itself; Debian's docker.io leaves the platform name empty.
        engine = out.strip() if " " in out.strip() else f"engine {out.strip()}"
        return (
            f"docker: {engine} at {self._where()} via {self._docker}; containers run with "
            "--network none (steps granted network are refused: a container network reaches "
            "the host and its private networks; run them on the sandbox runtime), "
            "--cap-drop ALL, no-new-privileges, read-only root "
            "(so steps write only to the workspace and /tmp: no --storage-opt size needed), "
            "memory, pids and cpu limits by the engine's cgroups, /tmp size by tmpfs"
        )

    async def prepare(self, images: Sequence[str]) -> None:
        """Make sure the engine has every image, pulling when allowed; ImageNotFound otherwise."""
        for image in dict.fromkeys(i or self.default_image for i in images):
            code, out, _ = await self._cli("image", "inspect", "--format", "{{.Id}}", image)
            if code == 0:
                self._seen(image, out.strip())
                continue
            why = "this executor does not pull images"
            if self._pull:
                code, _, err = await self._cli("pull", "--quiet", image)
                if code == 0:
                    self._seen(image, "")
                    continue
                why = f"pulling it failed: {_last(err)}"
            raise ImageNotFound(
                f"image {image} is not in the docker engine at {self._where()} and {why}; "
                f"load it into the engine (`docker load -i IMAGE.tar` or "
                f"`docker import ROOTFS.tar {image}`)"
            )

    async def shell(self, image: str | None) -> Shell:
        """bash when the image's PATH finds one in a container of it, else sh; looked for once
        per image (again when prepare() sees the name hold another image)."""
        image = image or self.default_image
        known = self._shells.get(image)
        if known is not None:
            return known
        code, out, err = await self._cli(
            *("run", "--rm", "--network", "none", "--cap-drop", "ALL"),
            *("--security-opt", "no-new-privileges", "--read-only"),
            *("--entrypoint", "/bin/sh", image, "-c", _FIND_BASH),
        )
        found = out.strip().splitlines()[-1] if code == 0 and out.strip() else ""
        where = f"image {image}"
        if found.startswith("/"):
            shell = Shell.bash(found, where)
        elif code == 0:
            shell = Shell.sh(f"{where} has no bash")
        else:
            # Not kept: the step's own start will say what is wrong with the image.
            return Shell.sh(f"looking for bash in {where} failed: {_last(err)}")
        self._shells[image] = shell
        return shell

    def command(self, step: Step, workspace: Path, limits: Limits, run_id: str) -> list[str]:
        """The `docker run` argv of the step, named offload-<run_id> so stop() can find it.

        Without --rm: stop() reads how the container ended (killed for memory?), then removes it.
        """
        if limits.network:
            # A bridge network reaches the host's services and every private network the
            # host routes to; walling those off needs host firewall rules offload does not own.
            raise StepUnsupported(
                f"step {step.key} is granted network, which the docker runtime does not give: "
                "a container network reaches the executor's host and its private networks; "
                "run jobs granted network on an executor with the sandbox runtime "
                "(EXECUTOR_BACKEND=sandbox)"
            )
        argv = [*self._base(), "run", "--name", container_name(run_id), "--network", "none"]
        # Mode given: the engine's default tmpfs is root's alone, and steps may run as another uid.
        size = f",size={limits.tmp_bytes}" if limits.tmp_bytes > 0 else ""
        tmp = f"/tmp:mode=1777{size}"
        argv += [
            "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            "--read-only",
            "--tmpfs", tmp,
        ]  # fmt: skip
        if limits.uid is not None:
            gid = limits.gid if limits.gid is not None else limits.uid
            argv += ["--user", f"{limits.uid}:{gid}"]
        if limits.cpus > 0:
            argv += ["--cpus", f"{limits.cpus:g}"]
        if limits.memory_bytes > 0:
            # Same value for swap: the limit is on memory, not memory plus swap.
            argv += ["--memory", str(limits.memory_bytes)]
            argv += ["--memory-swap", str(limits.memory_bytes)]
        if limits.pids > 0:
            argv += ["--pids-limit", str(limits.pids)]
        if limits.open_files > 0:
            argv += ["--ulimit", f"nofile={limits.open_files}:{limits.open_files}"]
        argv += ["-v", f"{workspace}:{WORKSPACE_MOUNT}"]
        for mount in step.mounts:
            argv += ["--mount", mount_option(mount)]
        argv += ["-w", posixpath.normpath(posixpath.join(WORKSPACE_MOUNT, step.dir))]
        env = {"HOME": "/tmp", **step_env(step)}
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        script = posixpath.normpath(posixpath.join(WORKSPACE_MOUNT, step.script))
        return [*argv, "--entrypoint", step.shell, step.image or self.default_image, script]

    async def stop(self, run_id: str) -> Outcome:
        """Remove the run's container (killing the CLI client leaves it running); whether
        the engine killed it for its memory limit."""
        name = container_name(run_id)
        code, out, _ = await self._cli("inspect", "--format", "{{.State.OOMKilled}}", name)
        outcome = Outcome(limit="memory" if code == 0 and out.strip() == "true" else None)
        code, _, err = await self._cli("rm", "--force", name)
        if code != 0 and "no such container" not in err.lower():
            raise RuntimeError(
                f"could not remove container {name} at {self._where()}: "
                f"{_last(err)}; remove it with `docker rm -f {name}`"
            )
        return outcome

    def _seen(self, image: str, image_id: str) -> None:
        """The engine has `image` as `image_id` ("" after a pull): forget what another was."""
        if not image_id or self._ids.get(image) != image_id:
            self._shells.pop(image, None)
        self._ids[image] = image_id

    def _base(self) -> list[str]:
        return [self._docker, *(["--host", self._host] if self._host else [])]

    def _where(self) -> str:
        return self._host or "the default DOCKER_HOST"

    async def _cli(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self._base(),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return 124, "", f"`docker {args[0]}` did not answer within {self._timeout:g}s"
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def container_name(run_id: str) -> str:
    """The engine-side name of a run's container."""
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in run_id)
    return f"offload-{safe}"


def mount_option(mount: Mount) -> str:
    """The `--mount` value of a bind mount; quoted as CSV, which is how docker parses it."""
    fields = ["type=bind", f"source={mount.source}", f"target={mount.target}"]
    if mount.read_only:
        fields.append("readonly")
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(fields)
    return line.getvalue()


def _last(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"
