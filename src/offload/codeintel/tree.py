"""The files of one commit as inference sees them: their paths, and small reads."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Protocol

from offload.repos.mirror import READ_TIMEOUT, GitError, git_env, kill_process_group

KiB = 1024
# A file inference reads (PKG-INFO, pyproject.toml, sourcegraph.yaml) is cut here.
MAX_READ_BYTES = 256 * KiB
# Paths listed for one commit; a larger tree is inferred from its first paths (git's order).
MAX_PATHS = 500_000
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_CHUNK = 64 * KiB


class Tree(Protocol):
    """The files of one commit of a repository."""

    async def paths(self) -> tuple[str, ...]:
        """Every file's path, relative to the repository's root, `/`-separated."""
        ...

    async def read(self, path: str, limit: int = MAX_READ_BYTES) -> bytes | None:
        """The first `limit` bytes of the file at `path`; None when there is no such file."""
        ...


class GitTree:
    """A `Tree` over a commit of a git repository (bare or not), read through git only."""

    def __init__(self, repository: Path, commit: str, *, timeout: float = READ_TIMEOUT) -> None:
        if not _COMMIT.match(commit):
            raise ValueError(f"{commit!r} is not a full commit id (40 or 64 hex digits)")
        self.repository = repository
        self.commit = commit
        self.timeout = timeout
        self._paths: tuple[str, ...] | None = None
        self._known: frozenset[str] | None = None

    async def paths(self) -> tuple[str, ...]:
        """Every file's path at the commit (blobs and symlinks; submodules are not files)."""
        if self._paths is None:
            args: list[str | bytes] = ["ls-tree", "-r", "-z", self.commit]
            out = await self._git(args, limit=None)
            paths = []
            for entry in out.split(b"\0"):
                meta, _, name = entry.partition(b"\t")
                if not name or meta.split(b" ")[1:2] == [b"commit"]:
                    continue
                paths.append(name.decode("utf-8", "surrogateescape"))
                if len(paths) >= MAX_PATHS:
                    break
            self._paths = tuple(paths)
        return self._paths

    async def read(self, path: str, limit: int = MAX_READ_BYTES) -> bytes | None:
        """The file's first `limit` bytes; only paths the listing holds are read."""
        # Paths come from the repository's own tree: anything else (.., a rev expression)
        # is never handed to git.
        if self._known is None:
            self._known = frozenset(await self.paths())
        if path not in self._known:
            return None
        spec = self.commit.encode() + b":" + path.encode("utf-8", "surrogateescape")
        return await self._git(["cat-file", "blob", spec], limit=limit)

    async def _git(self, args: list[str | bytes], *, limit: int | None) -> bytes:
        """Git's stdout, at most `limit` bytes of it (git is stopped there)."""
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=self.repository,
            env=git_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out = await asyncio.wait_for(self._collect(proc, limit), self.timeout)
        except BaseException:
            kill_process_group(proc)
            await proc.wait()
            raise
        if limit is not None and len(out) >= limit:
            kill_process_group(proc)
            await proc.wait()
            return out[:limit]
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode("utf-8", "replace").strip()
        code = await proc.wait()
        if code != 0:
            where = f"{self.repository} at {self.commit[:12]}"
            raise GitError(f"git {args[0]!s} failed (exit {code}) in {where}: {err}", stderr=err)
        return out

    @staticmethod
    async def _collect(proc: asyncio.subprocess.Process, limit: int | None) -> bytes:
        assert proc.stdout is not None
        chunks: list[bytes] = []
        size = 0
        while limit is None or size < limit:
            chunk = await proc.stdout.read(_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
