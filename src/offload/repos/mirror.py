"""Bare mirrors of repositories under `<data_dir>/repos`: created, fetched and read with git."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from offload.repos.registry import redact_source, validate_name

log = logging.getLogger(__name__)

# Long enough for a first clone of a large repository, short enough that a hung server does
# not hold the mirror's lock for ever.
FETCH_TIMEOUT = 30 * 60.0
READ_TIMEOUT = 60.0
# Mirror every ref of the source, and drop the ones the source no longer has.
MIRROR_REFSPEC = "+refs/*:refs/*"
# Executors fetch one commit by id, shallow and possibly without blobs (sparse checkouts).
MIRROR_CONFIG = {
    "uploadpack.allowFilter": "true",
    "uploadpack.allowAnySHA1InWant": "true",
    "core.logAllRefUpdates": "false",
}
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_STDERR_LIMIT = 4000


class GitError(RuntimeError):
    """A git command failed; the message says which, where, and what git printed."""

    def __init__(self, message: str, *, stderr: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.code = code


@dataclass(frozen=True)
class MirrorState:
    """What a mirror looks like after a sync: its default branch and that branch's commit."""

    default_branch: str | None
    head_commit: str | None


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment git runs in: never prompts, plain English messages."""
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ASKPASS": "true"})
    env.pop("GIT_DIR", None)
    env.pop("GIT_PROTOCOL", None)
    env.update(extra or {})
    return env


def kill_process_group(proc: asyncio.subprocess.Process) -> None:
    """Kill `proc` and the helpers it started (remote-https, pack-objects, ...)."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = READ_TIMEOUT,
    secret_source: str | None = None,
) -> str:
    """Run `git args...` and return its stdout; GitError with its stderr when it fails."""
    shown = " ".join(args[:2])
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=git_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        kill_process_group(proc)
        await proc.wait()
        raise GitError(
            f"git {shown} timed out after {timeout:.0f}s"
            + (f" (source {redact_source(secret_source)})" if secret_source else "")
            + "; check that the source is reachable",
            code=None,
        ) from None
    except BaseException:
        kill_process_group(proc)
        await proc.wait()
        raise
    if proc.returncode != 0:
        text = stderr.decode("utf-8", "replace").strip()
        if secret_source and secret_source in text:
            text = text.replace(secret_source, redact_source(secret_source))
        text = text[-_STDERR_LIMIT:]
        raise GitError(
            f"git {shown} failed (exit {proc.returncode})"
            + (f" in {cwd}" if cwd else "")
            + (f": {text}" if text else ""),
            stderr=text,
            code=proc.returncode,
        )
    return stdout.decode("utf-8", "replace")


class MirrorLock:
    """Exclusive use of one mirror, across coroutines and across processes (worker, CLI)."""

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the lock for the block; GitError if it cannot be had within the timeout."""
        async with self._local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                deadline = time.monotonic() + self.timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EACCES):
                            raise
                    if time.monotonic() > deadline:
                        raise GitError(
                            f"mirror lock {self.path} is still held by another process after "
                            f"{self.timeout:.0f}s; is a sync of it stuck?"
                        )
                    await asyncio.sleep(0.05)
                yield
            finally:
                os.close(fd)  # also releases the flock


class Mirrors:
    """Every mirror under one root directory, one bare repository per registered name."""

    def __init__(self, root: Path, *, fetch_timeout: float = FETCH_TIMEOUT) -> None:
        self.root = root
        self.fetch_timeout = fetch_timeout
        self._locks: dict[str, MirrorLock] = {}

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, fetch_timeout: float = FETCH_TIMEOUT) -> Mirrors:
        """The mirrors of an offload data dir (`<data_dir>/repos`)."""
        return cls(data_dir / "repos", fetch_timeout=fetch_timeout)

    def path(self, name: str) -> Path:
        """Where the mirror of `name` lives (`<root>/<name>.git`)."""
        return self.root / f"{validate_name(name)}.git"

    def exists(self, name: str) -> bool:
        """Whether `name` has a mirror on disk."""
        return (self.path(name) / "HEAD").is_file()

    def lock(self, name: str) -> MirrorLock:
        """The lock every change to `name`'s mirror holds."""
        if name not in self._locks:
            file_name = quote(validate_name(name), safe="")
            if len(file_name) > 200:
                # A file name holds 255 bytes; a long repository name (up to 255 characters,
                # each "/" quoted to 3) names its lock by its hash instead.
                file_name = hashlib.sha256(name.encode()).hexdigest()
            lock_file = self.root / ".locks" / (file_name + ".lock")
            self._locks[name] = MirrorLock(lock_file, timeout=self.fetch_timeout)
        return self._locks[name]

    async def sync(self, name: str, source: str) -> MirrorState:
        """Bring `name`'s mirror level with `source`: clone it the first time, fetch after."""
        async with self.lock(name).hold():
            path = self.path(name)
            if (path / "HEAD").is_file():
                await self._fetch(path, source)
            else:
                await self._clone(path, source)
            return await self.state(name)

    def _scratch(self, prefix: str) -> Path:
        """A fresh path on the mirrors' file system, where renames are atomic."""
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{prefix}{uuid.uuid4().hex}"

    async def _clone(self, path: Path, source: str) -> None:
        scratch = self._scratch("clone-")
        try:
            await run_git(
                ["clone", "--mirror", "--quiet", "--", source, str(scratch)],
                timeout=self.fetch_timeout,
                secret_source=source,
            )
            for key, value in MIRROR_CONFIG.items():
                await run_git(["config", key, value], cwd=scratch)
            self._install(scratch, path)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)

    async def _fetch(self, path: Path, source: str) -> None:
        # The registry's source is the truth: follow it if it changed since the clone.
        current = await run_git(["config", "--get", "remote.origin.url"], cwd=path)
        if current.strip() != source:
            await run_git(["config", "remote.origin.url", source], cwd=path)
        head = await _remote_head(path, source, self.fetch_timeout)
        await run_git(
            ["fetch", "--prune", "--quiet", "origin", MIRROR_REFSPEC],
            cwd=path,
            timeout=self.fetch_timeout,
            secret_source=source,
        )
        if head is not None and await self._has_ref(path, head):
            await run_git(["symbolic-ref", "HEAD", head], cwd=path)

    async def _has_ref(self, path: Path, ref: str) -> bool:
        try:
            await run_git(["show-ref", "--verify", "--quiet", ref], cwd=path)
        except GitError:
            return False
        return True

    def _install(self, scratch: Path, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # what an interrupted removal or a crash left behind
            self._discard(path)
        # Readers (upload-pack) only ever see a complete mirror or none.
        scratch.rename(path)

    def _discard(self, path: Path) -> None:
        # Rename first so that a reader never sees half a mirror.
        trash = self._scratch("removed-")
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)

    def existing(self, name: str) -> Path:
        """The path of `name`'s mirror; GitError saying how to create it when there is none."""
        path = self.path(name)
        if not (path / "HEAD").is_file():
            raise GitError(f"repository {name!r} has no mirror at {path}: run `offload repos sync`")
        return path

    async def state(self, name: str) -> MirrorState:
        """The default branch of `name`'s mirror and its commit (None for an empty repository)."""
        path = self.existing(name)
        try:
            ref = (await run_git(["symbolic-ref", "--quiet", "HEAD"], cwd=path)).strip()
        except GitError:
            ref = ""
        branch = ref.removeprefix("refs/heads/") or None
        return MirrorState(default_branch=branch, head_commit=await self.resolve(name, "HEAD"))

    async def resolve(self, name: str, rev: str) -> str | None:
        """The commit `rev` (branch, tag, commit, `HEAD~2`, ...) names in the mirror, or None."""
        path = self.existing(name)
        if not rev or rev.startswith("-") or any(c.isspace() or c == "\0" for c in rev):
            return None
        try:
            out = await run_git(
                ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
                cwd=path,
            )
        except GitError:
            return None
        commit = out.strip()
        return commit if _COMMIT.match(commit) else None

    async def default_branch(self, name: str) -> str | None:
        """The branch HEAD points at in `name`'s mirror."""
        return (await self.state(name)).default_branch

    async def remove(self, name: str) -> bool:
        """Delete `name`'s mirror; False when there was none."""
        async with self.lock(name).hold():
            path = self.path(name)
            if not path.exists():
                return False
            self._discard(path)
            for parent in path.parents:
                if parent == self.root or self.root not in parent.parents:
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break
            return True


async def _remote_head(path: Path, source: str, timeout: float) -> str | None:
    """The ref the source's HEAD points at (`refs/heads/main`), None when it has none."""
    out = await run_git(
        ["ls-remote", "--symref", "origin", "HEAD"],
        cwd=path,
        timeout=timeout,
        secret_source=source,
    )
    for line in out.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            return line[len("ref: ") : -len("\tHEAD")]
    return None


__all__ = [
    "GitError",
    "MirrorLock",
    "MirrorState",
    "Mirrors",
    "git_env",
    "kill_process_group",
    "run_git",
]
