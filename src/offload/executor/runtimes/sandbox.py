"""The sandbox runtime: every step in fresh bubblewrap namespaces on a read-only image root."""

from __future__ import annotations

import asyncio
import os
import posixpath
import resource
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from offload.executor.images import ImageStore
from offload.executor.runtimes.base import (
    WORKSPACE_MOUNT,
    Limits,
    Mount,
    Outcome,
    RuntimeUnavailable,
    Shell,
    Step,
    StepUnsupported,
    step_env,
)
from offload.executor.runtimes.cgroup import Cgroups
from offload.executor.runtimes.mountpoints import (
    MAX_SYMLINKS,
    Tree,
    host_tree,
    image_tree,
    resolve_mounts,
    workspace_layers,
)
from offload.executor.runtimes.network import GrantedNetwork

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
# The uid and gid the check runs a sandbox as, to learn whether an unprivileged host user
# can make one here (steps of a root executor run as EXECUTOR_JOB_USER).
_CHECK_USER = (65534, 65534)


class SandboxRuntime:
    """bubblewrap: user/pid/net/ipc/uts/cgroup/mount namespaces, no capabilities, rlimits."""

    name = "sandbox"

    def __init__(
        self,
        images: ImageStore,
        *,
        bwrap: str = "bwrap",
        prlimit: str = "prlimit",
        setpriv: str = "setpriv",
        slirp4netns: str = "slirp4netns",
        cgroups: Cgroups | None = None,
    ) -> None:
        self.images = images
        self._bwrap = shutil.which(bwrap) or bwrap
        self._prlimit = shutil.which(prlimit) or prlimit
        self._setpriv = shutil.which(setpriv) or setpriv
        self._env = shutil.which("env") or "/usr/bin/env"
        self._cgroups = cgroups if cgroups is not None else Cgroups.detect()
        self._network = GrantedNetwork(slirp4netns=slirp4netns, bwrap=self._bwrap)
        # By unpacked root (None: the default root): a re-imported image is a new directory.
        self._shells: dict[Path | None, Shell] = {}

    async def check(self) -> str:
        """Run a trivial step in a sandbox; describe the isolation, or RuntimeUnavailable."""
        tools = [(self._bwrap, "bubblewrap"), (self._prlimit, "util-linux")]
        if os.geteuid() == 0:
            tools.append((self._setpriv, "util-linux"))
        for tool, package in tools:
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
        # As root, the check runs as an unprivileged user, as steps do: that needs user
        # namespaces for everyone, which some hosts restrict.
        user = _CHECK_USER if os.geteuid() == 0 else None
        with tempfile.TemporaryDirectory(prefix="offload-check-") as workspace:
            if user is not None:
                os.chown(workspace, *user)
            argv = self._sandbox(
                _host_root(network=False), Path(workspace), "/", {}, (), (), as_root=bool(user)
            )
            proc = await asyncio.create_subprocess_exec(
                *self._setuid(user),
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
            who = f"as the unprivileged uid {user[0]} " if user else ""
            raise RuntimeUnavailable(
                f"sandbox runtime: bubblewrap cannot isolate a step {who}here "
                f"({err.decode(errors='replace').strip() or out.decode().strip()}); it needs "
                "user namespaces for unprivileged users (sysctl kernel.unprivileged_userns_clone=1 "
                "and user.max_user_namespaces > 0; on Ubuntu also "
                "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap)"
            )
        await self._check_network(user)
        return (
            "sandbox: bubblewrap; new user, pid, net, ipc, uts, cgroup and mount namespaces, "
            f"no capabilities, read-only root, no network unless allowed; {self._enforcement()}; "
            f"{self._network.describe()}; "
            f"cgroups: {self._cgroups.describe()}; images in {self.images.root}"
        )

    async def _check_network(self, user: tuple[int, int] | None) -> None:
        """Start one sandbox with granted network; when that fails, such steps fail saying why."""
        if self._network.problem() is not None:
            return
        with tempfile.TemporaryDirectory(prefix="offload-check-") as workspace:
            if user is not None:
                os.chown(workspace, *user)
            proc = await asyncio.create_subprocess_exec(
                *self._network.launcher((), resolv_conf=True),
                *self._setuid(user),
                *self._sandbox(
                    _host_root(network=True),
                    Path(workspace),
                    "/",
                    {},
                    self._network.bwrap_args(resolv_conf=True),
                    (),
                    as_root=bool(user),
                ),
                "/bin/sh",
                "-c",
                "grep -q tap0: /proc/net/dev",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
        if proc.returncode != 0:
            said = err.decode(errors="replace").strip().splitlines()
            self._network.failed(
                "a sandbox with network did not start here "
                f"({said[-1] if said else f'exit status {proc.returncode}'})"
            )

    def _enforcement(self) -> str:
        """How each limit is enforced here, for the check line."""
        controllers = self._cgroups.controllers
        if "memory" in controllers:
            memory = "memory limit by cgroup"
        else:
            memory = "memory limit by RLIMIT_AS (address space: no memory cgroup)"
        if "pids" in controllers:
            pids = "pids limit by cgroup"
        else:
            pids = "pids limit by RLIMIT_NPROC (all steps of one uid together: no pids cgroup)"
        cpu = "cpu limit by cgroup" if "cpu" in controllers else "NO cpu limit (no cpu cgroup)"
        return f"{memory}, {pids}, {cpu}, /tmp size by tmpfs"

    async def prepare(self, images: Sequence[str]) -> None:
        """Pull (when allowed) and unpack each image once; ImageNotFound for a missing one."""
        for image in dict.fromkeys(i for i in images if i):
            await self.images.ensure(image)

    async def shell(self, image: str | None) -> Shell:
        """bash when the image's PATH (or /bin) holds one, looked up inside the image (its
        symlinks followed within it, never on the host); else sh."""
        rootfs = self.images.rootfs(image) if image else None
        known = self._shells.get(rootfs)
        if known is not None:
            return known
        if image and rootfs is not None:
            where = f"image {image}"
            path = self.images.env(image).get("PATH", DEFAULT_PATH)
            found = find_program(rootfs, "bash", path)
        else:
            # The default root is the host's /usr and top directories, bound as they are.
            where = "the default root (the host's /usr)"
            found = find_program(Path("/"), "bash", DEFAULT_PATH, within=_default_bound())
        shell = Shell.bash(found, where) if found else Shell.sh(f"{where} has no bash")
        self._shells[rootfs] = shell
        return shell

    def command(self, step: Step, workspace: Path, limits: Limits, run_id: str) -> list[str]:
        """env -i, the run's cgroups, prlimit, then bwrap running the step's script."""
        env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOME": "/tmp"}
        if step.image:
            rootfs = self.images.rootfs(step.image)
            # The lock lives as long as the step's namespaces: `images rm` asks for it.
            root = ["--ro-bind", str(rootfs), "/", "--lock-file", "/"]
            # Only onto a plain file: bwrap would follow a symlink there on the host.
            resolv_conf = limits.network and _plain_file(rootfs, "etc/resolv.conf")
            env.update(self.images.env(step.image))
            tree = image_tree(rootfs, step.image)
        else:
            root = _host_root(limits.network)
            resolv_conf = True
            tree = _default_tree()
        for layer in workspace_layers(workspace):
            tree = tree.with_layer(layer)
        mounts = resolve_mounts(step, tree)
        env.update(step_env(step))
        chdir = posixpath.normpath(posixpath.join(WORKSPACE_MOUNT, step.dir))
        script = posixpath.normpath(posixpath.join(WORKSPACE_MOUNT, step.script))
        user = _user(limits)
        network: list[str] = []
        granted: list[str] = []
        if limits.network:
            if (problem := self._network.problem()) is not None:
                raise StepUnsupported(
                    f"step {step.key} is granted network, which this executor cannot give: "
                    f"{problem}; run the job without network or on another executor"
                )
            network = self._network.bwrap_args(resolv_conf)
            # Inside the run's cgroups (slirp4netns counts against the step's limits), before
            # the rlimits and the uid change: it sets the namespace up as the executor.
            granted = self._network.launcher(limits.allowed_networks, resolv_conf)
        return [
            # The sandbox's pid 1 shows its environ to the step: start from an empty one.
            self._env,
            "-i",
            # Joined as root (the groups are root's), before the uid changes.
            *self._cgroups.create(run_id, limits),
            *granted,
            *self._rlimits(limits),
            *self._setuid(user),
            *self._sandbox(
                root,
                workspace,
                chdir,
                env,
                network,
                mounts,
                tmp_bytes=limits.tmp_bytes,
                as_root=user is not None,
            ),
            step.shell,
            script,
        ]

    async def stop(self, run_id: str) -> Outcome:
        """Kill anything left in the run's cgroups and remove them (namespaces die with bwrap);
        the limits the cgroups saw it hit."""
        outcome = self._cgroups.outcome(run_id)
        await self._cgroups.remove(run_id)
        return outcome

    def _rlimits(self, limits: Limits) -> list[str]:
        argv = [self._prlimit, "--core=0"]
        controllers = self._cgroups.controllers
        if limits.open_files > 0:
            argv.append(f"--nofile={_capped(resource.RLIMIT_NOFILE, limits.open_files)}")
        # Fallbacks only: RLIMIT_NPROC counts the processes of every job that runs as the
        # same uid, and RLIMIT_AS breaks runtimes that reserve address space (Go, Java, node).
        if limits.pids > 0 and "pids" not in controllers:
            argv.append(f"--nproc={_capped(resource.RLIMIT_NPROC, limits.pids)}")
        if limits.memory_bytes > 0 and "memory" not in controllers:
            argv.append(f"--as={_capped(resource.RLIMIT_AS, limits.memory_bytes)}")
        return [*argv, "--"]

    def _setuid(self, user: tuple[int, int] | None) -> list[str]:
        """The argv prefix that runs the rest as host `user`, without groups or new privileges."""
        if user is None:
            return []
        uid, gid = user
        return [
            self._setpriv,
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--no-new-privs",
            "--",
        ]

    def _sandbox(
        self,
        root: list[str],
        workspace: Path,
        chdir: str,
        env: Mapping[str, str],
        network: Sequence[str],
        mounts: Sequence[Mount],
        *,
        tmp_bytes: int = 0,
        as_root: bool = False,
    ) -> list[str]:
        argv = [
            self._bwrap,
            *root,
            "--proc", "/proc",
            "--dev", "/dev",
            *(["--size", str(tmp_bytes)] if tmp_bytes > 0 else []),
            "--tmpfs", "/tmp",
            "--bind", str(workspace), WORKSPACE_MOUNT,
            # Granted network: its namespace is set up from outside (network.py).
            *network,
            # After /tmp and the workspace, so a mount may land inside either.
            *_binds(mounts),
            # The network namespace too, granted network or not.
            "--unshare-all",
            # Explicit: fail rather than run without a user namespace where none can be made.
            "--unshare-user",
            "--hostname", "sandbox",
            "--die-with-parent",
            "--new-session",
            # Root keeps its capabilities inside the user namespace unless told otherwise.
            "--cap-drop", "ALL",
            "--clearenv",
        ]  # fmt: skip
        if as_root:
            # Run by an unprivileged host uid, the step is still root in its namespace, as
            # scripts expect (and as it is when the executor runs bwrap as root).
            argv += ["--uid", "0", "--gid", "0"]
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
        # The step's resolv.conf names slirp4netns's resolver (network.py), not the host's.
        if path != "/etc/resolv.conf":
            argv += ["--ro-bind-try", path, path]
    return argv


def find_program(root: Path, name: str, path: str, within: Sequence[str] = ()) -> str:
    """Where `name` is on `path` (then in /bin) in the tree at `root`, as that tree names it:
    an executable regular file once symlinks are followed within the tree (never out of it);
    with `within`, only if it really lies under one of those directories. "" if nowhere."""
    dirs = [d for d in path.split(":") if d.startswith("/")]
    for directory in dict.fromkeys([*dirs, "/bin"]):
        candidate = posixpath.join(directory, name)
        real = _real_path(root, candidate)
        if real is None or (within and not any(real.startswith(f"{d}/") for d in within)):
            continue
        try:
            st = os.lstat(root / real.lstrip("/"))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    return ""


def _real_path(root: Path, path: str) -> str | None:
    """`path` in the tree at `root` with every symlink resolved inside that tree; None when
    a part is missing or the links loop."""
    pending = [p for p in path.split("/") if p]
    done = "/"
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = posixpath.dirname(done)  # "/.." is "/": never above the tree's root
            continue
        current = posixpath.join(done, part)
        # Every part of `done` is a real directory already: lstat follows no link of the tree.
        host = root / current.lstrip("/")
        try:
            if not stat.S_ISLNK(os.lstat(host).st_mode):
                done = current
                continue
            link = os.readlink(host)
        except OSError:
            return None
        hops += 1
        if hops > MAX_SYMLINKS:
            return None
        pending = [p for p in link.split("/") if p] + pending
        if link.startswith("/"):
            done = "/"
    return done


def _default_bound() -> list[str]:
    """The host directories the default root binds (its top-level symlinks lead into them)."""
    tops = [f"/{n}" for n in _TOP_DIRS if not os.path.islink(f"/{n}") and os.path.isdir(f"/{n}")]
    return ["/usr", *tops]


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


def _plain_file(root: Path, relative: str) -> bool:
    """Whether `relative` is a regular file under `root` with no symlink on the way."""
    path = root
    for part in relative.split("/"):
        path = path / part
        if path.is_symlink():
            return False
    return path.is_file()


def _user(limits: Limits) -> tuple[int, int] | None:
    """The host uid and gid to switch to before bwrap: None to stay this process's own."""
    if limits.uid is None or limits.uid == os.geteuid():
        return None
    return limits.uid, limits.gid if limits.gid is not None else limits.uid


def _capped(kind: int, value: int) -> int:
    # Without CAP_SYS_RESOURCE a limit above the hard limit fails the whole step.
    _, hard = resource.getrlimit(kind)
    return value if hard == resource.RLIM_INFINITY else min(value, hard)
