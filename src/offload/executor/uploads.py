"""A job's uploads: files its steps left in the workspace, sent to the server afterwards.

The executor reads them as root (or its own user) while the steps ran as another, so every
name on the way is opened relative to the workspace with O_NOFOLLOW: a step that made the
path a symlink (to /etc/shadow, to another job's workspace) or a FIFO gets its job failed,
and the executor reads nothing outside the workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from offload.protocol.wire import JobUpload

CHUNK = 1024 * 1024


class UploadRefused(ValueError):
    """An upload's path is not a regular file inside the workspace; the message says why."""


def check_path(upload: JobUpload) -> PurePosixPath:
    """The upload's path as relative parts; UploadRefused for an absolute path, `..` or NUL."""
    path = PurePosixPath(upload.path)
    if path.is_absolute() or "\0" in upload.path or ".." in path.parts or not path.parts:
        raise UploadRefused(
            f"upload {upload.key} names {upload.path[:200]!r}; an upload is a path relative to "
            "the workspace, without `..`"
        )
    return path


@contextlib.contextmanager
def open_within(root: Path, upload: JobUpload) -> Iterator[int]:
    """A read-only descriptor of the upload's regular file, reached from `root` without
    following any symlink; UploadRefused when it is missing or anything but a file."""
    parts = check_path(upload).parts
    opened: list[int] = []
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        opened.append(fd)
        for name in parts[:-1]:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            opened.append(fd)
        # O_NONBLOCK: a FIFO left by a step must not block the executor on open.
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        opened.append(fd)
    except OSError as exc:
        for held in opened:
            os.close(held)
        if isinstance(exc, FileNotFoundError):
            raise UploadRefused(
                f"upload {upload.key}: the steps left no file at {upload.path}"
            ) from exc
        raise UploadRefused(
            f"upload {upload.key}: {upload.path} is not a file inside the workspace "
            f"(a symlink or a special file on the way: {exc.strerror})"
        ) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UploadRefused(f"upload {upload.key}: {upload.path} is not a regular file")
        os.set_blocking(fd, True)
        yield fd
    finally:
        for held in opened:
            os.close(held)


@dataclass(frozen=True)
class Digest:
    """What the executor read of an upload: its size and sha256."""

    size: int
    sha256: str


def digest(fd: int) -> Digest:
    """Size and sha256 of the file at `fd`, read from its start."""
    sha = hashlib.sha256()
    size = 0
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        sha.update(chunk)
        size += len(chunk)
        offset += len(chunk)
    return Digest(size, sha.hexdigest())


async def chunks(fd: int, size: int) -> AsyncIterator[bytes]:
    """The first `size` bytes of the file at `fd`, read off the event loop: exactly what was
    hashed, even if the file grew since."""
    offset = 0
    while offset < size:
        chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, size - offset), offset)
        if not chunk:
            raise UploadRefused("the upload shrank while it was sent")
        offset += len(chunk)
        yield chunk
