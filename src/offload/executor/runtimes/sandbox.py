"""The sandbox runtime: every step in fresh bubblewrap namespaces on a read-only image root."""

from __future__ import annotations

import asyncio
import os
import posixpath
import resource
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from offload.executor.images import ImageStore
from offload.executor.runtimes.base import (
    WORKSPACE_MOUNT,
    Limits,
    Mount,
    RuntimeUnavailable,
    Step,
)
from offload.executor.runtimes.cgroup import Cgroups
from offload.executor.runtimes.mountpoints import (
    Tree,
    host_tree,
    image_tree,
    resolve_mounts,
    workspace_layers,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host files a step on the default root may read: what /usr's symlinks and binaries need.
HOST_ETC = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/localtime",
)
NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf")
_TOP_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class SandboxRuntime:
    """bubblewrap: user/pid/net/ipc/uts/cgroup/mount namespaces, no capabilities, rlimits."""

    name = "sandbox"

    def __init__(
        self,
        images: ImageStore,
        *,
        bwrap: str = "bwrap",
        prlimit: str = "prlimit",
        cgroups: Cgroups | None = None,
    ) -> None:
        self.images = images
        self._bwrap = shutil.which(bwrap) or bwrap
        self._prlimit = shutil.which(prlimit) or prlimit
        self._env = shutil.which("env") or "/usr/bin/env"
        self._cgroups = cgroups if cgroups is not None else Cgroups.detect()

    async def check(self) -> str:
        """Run a trivial step in a sandbox; describe the isolation, or RuntimeUnavailable."""
        for tool, package in ((self._bwrap, "bubblewrap"), (self._prlimit, "util-linux")):
            if shutil.which(tool) is None:
                raise RuntimeUnavailable(
                    f"sandbox runtime: {tool} is not installed; install {package} "
                    f"(apt-get install {package}) or choose another runtime (EXECUTOR_BACKEND)"
                )
        if shutil.which(self.images.umoci) is None:
            raise RuntimeUnavailable(
                "sandbox runtime: umoci is not installed, so steps cannot use images; "
                "install umoci (apt-get install umoci) and skopeo to pull images"
            )
        with tempfile.TemporaryDirectory(prefix="offload-check-") as workspace:
            argv = self._sandbox(_host_root(network=False), Path(workspace), "/", {}, False, ())
            proc = await asyncio.create_subprocess_exec(
                *argv,
                "/bin/sh",
                "-c",
                "grep CapEff /proc/self/status",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
        if proc.returncode != 0 or not out.decode().strip().endswith("0000000000000000"):
            raise RuntimeUnavailable(
                f"sandbox runtime: bubblewrap cannot isolate a step here "
                f"({err.decode(errors='replace').strip() or out.decode().strip()}); it needs "
                "user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
                "user.max_user_namespaces > 0) or root"
            )
        if "pids" in self._cgroups.controllers:
            pids = "pids limit by cgroup"
        elif os.geteuid() != 0:
            pids = "pids limit by RLIMIT_NPROC"
        else:
            # The kernel exempts uid 0 from RLIMIT_NPROC.
            pids = "NO pids limit (root without a writable pids cgroup)"
        return (
            "sandbox: bubblewrap; new user, pid, net, ipc, uts, cgroup and mount namespaces, "
            f"no capabilities, read-only root, no network unless allowed; {pids}; "
            f"cgroups: {self._cgroups.describe()}; images in {self.images.root}"
        )

    async def prepare(self, images: Sequence[str]) -> None:
        """Pull (when allowed) and unpack each image once; ImageNotFound for a missing one."""
        for image in dict.fromkeys(i for i in images if i):
            await self.images.ensure(image)

    def command(self, step: Step, workspace: Path, limits: Limits, run_id: str) -> list[str]:
        """env -i, the run's cgroups, prlimit, then bwrap running the step's script."""
        env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOME": "/tmp"}
        if step.image:
            rootfs = self.images.rootfs(step.image)
            root = ["--ro-bind", str(rootfs), "/"]
            if limits.network and (rootfs / "etc/resolv.conf").is_file():
                root += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
            env.update(self.images.env(step.image))
            tree = image_tree(rootfs, step.image)
        else:
            root = _host_root(limits.network)
            tree = _default_tree()
        for layer in workspace_layers(workspace):
            tree = tree.with_layer(layer)
        mounts = resolve_mounts(step, tree)
        env.update(step.env)
        chdir = posixpath.normpath(posixpath.join(WORKSPACE_MOUNT, step.dir))
        script = posixpath.normpath(posixpath.join(WORKSPACE_MOUNT, step.script))
        return [
            # The sandbox's pid 1 shows its environ to the step: start from an empty one.
            self._env,
            "-i",
            *self._cgroups.create(run_id, limits),
            *self._rlimits(limits),
            *self._sandbox(root, workspace, chdir, env, limits.network, mounts),
            "/bin/sh",
            script,
        ]

    async def stop(self, run_id: str) -> None:
        """Kill anything left in the run's cgroups and remove them (namespaces die with bwrap)."""
        await self._cgroups.remove(run_id)

    def _rlimits(self, limits: Limits) -> list[str]:
        argv = [self._prlimit, "--core=0"]
        if limits.open_files > 0:
            argv.append(f"--nofile={_capped(resource.RLIMIT_NOFILE, limits.open_files)}")
        if limits.pids > 0:
            argv.append(f"--nproc={_capped(resource.RLIMIT_NPROC, limits.pids)}")
        if limits.memory_bytes > 0:
            argv.append(f"--as={_capped(resource.RLIMIT_AS, limits.memory_bytes)}")
        return [*argv, "--"]

    def _sandbox(
        self,
        root: list[str],
        workspace: Path,
        chdir: str,
        env: Mapping[str, str],
        network: bool,
        mounts: Sequence[Mount],
    ) -> list[str]:
        argv = [
            self._bwrap,
            *root,
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
            "--bind", str(workspace), WORKSPACE_MOUNT,
            # After /tmp and the workspace, so a mount may land inside either.
            *_binds(mounts),
            "--unshare-all",
            # Explicit: fail rather than run without a user namespace where none can be made.
            "--unshare-user",
            *(["--share-net"] if network else []),
            "--hostname", "sandbox",
            "--die-with-parent",
            "--new-session",
            # Root keeps its capabilities inside the user namespace unless told otherwise.
            "--cap-drop", "ALL",
            "--clearenv",
        ]  # fmt: skip
        # The default root is bwrap's own tmpfs: freeze it once the mount points exist
        # (a no-op for an image root, which is bound read-only already).
        argv += ["--remount-ro", "/"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        return [*argv, "--chdir", chdir]


def _host_root(network: bool) -> list[str]:
    """A minimal root from the host's /usr (read-only) and the few /etc files it needs."""
    argv = ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_DIRS:
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
    for path in HOST_ETC + (NETWORK_ETC if network else ()):
        argv += ["--ro-bind-try", path, path]
    return argv


def _binds(mounts: Sequence[Mount]) -> list[str]:
    argv: list[str] = []
    for mount in mounts:
        argv += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), mount.target]
    return argv


def _default_tree() -> Tree:
    """The default root as bwrap builds it from `_host_root`, for resolving mount targets."""
    # Only what is bound from the host is read-only there; the rest is bwrap's tmpfs.
    links: list[tuple[str, str]] = []
    bound = ["/usr", *HOST_ETC, *NETWORK_ETC]
    for name in _TOP_DIRS:
        top = Path("/") / name
        if top.is_symlink():
            links.append((str(top), os.readlink(top)))
        elif top.is_dir():
            bound.append(str(top))
    return host_tree(bound, links)


def _capped(kind: int, value: int) -> int:
    # Without CAP_SYS_RESOURCE a limit above the hard limit fails the whole step.
    _, hard = resource.getrlimit(kind)
    return value if hard == resource.RLIM_INFINITY else min(value, hard)
