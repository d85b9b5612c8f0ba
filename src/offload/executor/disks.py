"""Workspace disks: the size-limited filesystems that jobs' workspaces live on.

A step writes only to its workspace and its /tmp (the root is read-only, /tmp a tmpfs with a
size). The workspace lives on a disk of EXECUTOR_JOB_DISK: an ext4 filesystem in a sparse
image file under `<data>/disks/`, loop-mounted beside it. The kernel stops a write past its
end with ENOSPC, and `Disk.full()` lets the executor name the limit afterwards.

Making a filesystem and mounting it takes tens of milliseconds, too much for every job: a
job takes a free disk, makes its workspace on it and hands it back empty, so each slot pays
once. (Project quotas would need no image files, but ext4 and XFS quotas need a kernel built
with them; loop devices are there wherever the executor is root.)

An executor holds an flock on each of its images for as long as it lives. A start removes
the disks whose lock it can take (their executor died); a clean stop removes its own.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from offload.executor.config import size_text

log = logging.getLogger(__name__)

# ext4 without a journal: a workspace never outlives a crash, so the journal is only cost.
MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "root_owner=0:0"]
MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"
# Freed blocks stay allocated in the image file until trimmed; trim a disk when its image
# holds this much more than its filesystem uses.
TRIM_SLACK = 256 * 1024**2
_FITRIM = 0xC0185879  # _IOWR('X', 121, struct fstrim_range)
# Names ext4 makes itself; a disk with nothing else is empty.
_OWN_ENTRIES = frozenset({"lost+found"})


class DisksUnavailable(RuntimeError):
    """Workspaces cannot get a size-limited disk here; the message says why."""


@dataclass
class Disk:
    """One loop-mounted filesystem; a job makes its workspace in `path`."""

    image: Path
    path: Path
    size: int
    lock_fd: int  # the image, open and flock'ed: this executor uses the disk

    def full(self) -> bool:
        """Whether the filesystem is out of space or inodes (a step ran into the limit)."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return False
        # A write that does not fit fails whole: up to a block per writer may stay free.
        slack = max(1024**2, self.size // 1000)
        return st.f_bavail * st.f_frsize < slack or st.f_favail == 0

    def empty(self) -> bool:
        """Whether nothing but the filesystem's own entries is left on it."""
        try:
            return not set(os.listdir(self.path)) - _OWN_ENTRIES
        except OSError:
            return False


class Disks:
    """The disks of one executor: made when a job needs one, reused, removed at the end."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        self.size = size
        self._free: list[Disk] = []
        self._all: list[Disk] = []

    @classmethod
    async def open(cls, root: Path, size: int) -> Disks:
        """Disks under `root`, after removing what dead executors left there; one disk is
        made at once, so a host that cannot make them says so now. DisksUnavailable if not."""
        if os.geteuid() != 0:
            raise DisksUnavailable("the executor is not root, and only root mounts filesystems")
        for tool, package in (("mkfs.ext4", "e2fsprogs"), ("mount", "mount"), ("umount", "mount")):
            if shutil.which(tool) is None:
                raise DisksUnavailable(f"{tool} is not installed (apt-get install {package})")
        os.makedirs(root, mode=0o711, exist_ok=True)
        disks = cls(root, size)
        removed = await disks._remove_leftovers()
        if removed:
            log.info("removed %d workspace disk(s) left by executors that died", removed)
        disks.release(await disks._make())
        return disks

    def describe(self) -> str:
        """The disk limit for the start line."""
        return f"disk {size_text(self.size)} (an ext4 filesystem per job in {self.root})"

    async def acquire(self) -> Disk:
        """A free, empty disk for one job's workspace (made when none is free)."""
        if self._free:
            return self._free.pop()
        return await self._make()

    def release(self, disk: Disk) -> None:
        """Take `disk` back once its job's workspace is removed; one that is not empty (a
        step left what cannot be removed) is dropped instead."""
        if not disk.empty():
            log.warning("workspace disk %s is not empty after its job; removing it", disk.path)
            self._drop(disk)
            return
        _trim_when_grown(disk)
        self._free.append(disk)

    async def close(self) -> None:
        """Unmount and delete every disk of this executor."""
        for disk in list(self._all):
            await asyncio.to_thread(self._drop, disk)

    async def _make(self) -> Disk:
        name = f"disk-{uuid.uuid4().hex[:12]}"
        image, path = self.root / f"{name}.img", self.root / name
        # Locked under another name first: a starting executor must never see it unlocked.
        fresh = self.root / f".{name}.new"
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        disk = Disk(image, path, self.size, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(fresh, image)
            os.ftruncate(fd, self.size)
            await _run(*MKFS, str(image))
            path.mkdir(mode=0o755)
            await _run("mount", "-o", MOUNT_OPTIONS, str(image), str(path))
        except (OSError, DisksUnavailable) as exc:
            fresh.unlink(missing_ok=True)
            self._drop(disk, tracked=False)
            raise DisksUnavailable(f"cannot make a workspace disk in {self.root}: {exc}") from exc
        self._all.append(disk)
        return disk

    def _drop(self, disk: Disk, *, tracked: bool = True) -> None:
        _unmount(disk.path)
        with contextlib.suppress(OSError):
            disk.path.rmdir()
        disk.image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.close(disk.lock_fd)
        if tracked and disk in self._all:
            self._all.remove(disk)

    async def _remove_leftovers(self) -> int:
        with dead_disks(self.root) as dead:
            for image, mount, fd in dead:
                # A lock of its own (the same open file): _drop closes it, dead_disks its fd.
                disk = Disk(image, mount, self.size, os.dup(fd))
                await asyncio.to_thread(self._drop, disk, tracked=False)
            return len(dead)


@contextlib.contextmanager
def dead_disks(root: Path) -> Iterator[list[tuple[Path, Path, int]]]:
    """(image, mount point, locked fd) of each disk under `root` whose executor died.

    A live executor holds an flock on each of its images; one we can lock is a dead one's.
    The locks are held inside the block and released after it (a closed fd stays closed).
    """
    dead: list[tuple[Path, Path, int]] = []
    try:
        images = sorted(root.glob("disk-*.img"))
    except OSError:
        images = []
    try:
        for image in images:
            try:
                fd = os.open(image, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live executor's
                continue
            dead.append((image, image.with_suffix(""), fd))
        yield dead
    finally:
        for _, _, fd in dead:
            os.close(fd)


def _unmount(path: Path) -> None:
    """Detach the filesystem at `path`, even while a leftover process still uses it."""
    if not os.path.ismount(path):
        return
    # The binary, not umount2(2): it also frees the loop device (mount set autoclear).
    done = _blocking_run("umount", "--lazy", str(path))
    if done:
        log.warning("could not unmount workspace disk %s: %s", path, done)


def _blocking_run(*argv: str) -> str:
    """Run `argv` to its end; its error output if it failed, else ""."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return proc.stderr.decode(errors="replace").strip() if proc.returncode else ""


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
        raise DisksUnavailable(
            f"`{' '.join(argv[:2])} ...` exited with {proc.returncode}: {lines[-1]}"
        )


def _trim_when_grown(disk: Disk) -> None:
    """Give the blocks jobs freed back to the data directory's filesystem, now and then."""
    try:
        allocated = os.stat(disk.image).st_blocks * 512
        st = os.statvfs(disk.path)
    except OSError:
        return
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    if allocated - used < TRIM_SLACK:
        return
    try:
        fd = os.open(disk.path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        # struct fstrim_range {start, len, minlen}: the whole filesystem.
        fcntl.ioctl(fd, _FITRIM, array.array("Q", [0, 2**64 - 1, 0]))
    except OSError as exc:
        log.warning("could not trim workspace disk %s: %s", disk.path, exc)
    finally:
        os.close(fd)
