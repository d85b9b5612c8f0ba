"""Search: evaluate a parsed query over the bare mirrors, at one commit per repository.

There is no index: paths come from `git ls-tree`, literal patterns from `git grep -F`, and
regular expressions (Python's `re` flavour) are matched in Python over `git cat-file --batch`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.repos.mirror import GitError, Mirrors, git_env, kill_process_group, run_git
from offload.repos.search_query import (
    LANGUAGES,
    SUPPORTED_FILTERS,
    Query,
    QueryError,
    Term,
    parse_query,
)

# Searches read mirrors that may be large; one git process per step may take this long.
SEARCH_TIMEOUT = 10 * 60.0
DEFAULT_CONCURRENCY = 8
# git's own rule: a NUL in the first 8000 bytes makes a blob binary (as `git grep -I` skips).
BINARY_PROBE = 8000
# Few enough candidate paths are passed to git grep, so it reads only those files.
_PATHSPEC_LIMIT = 256
# Regular expressions run in a thread, a batch of this many bytes at a time, so that a
# large repository does not stall the event loop.
_BATCH_BYTES = 1 << 20
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class RepoTarget:
    """A repository to search, at a full commit id (normally its default branch's head)."""

    name: str
    commit: str

    def __post_init__(self) -> None:
        if not _COMMIT.match(self.commit):
            raise ValueError(
                f"cannot search {self.name} at {self.commit!r}: give a full commit id "
                "(Mirrors.resolve turns a branch into one)"
            )


@dataclass(frozen=True)
class RepoMatch:
    """A repository the query matched, and its matching files (none for repo-only matches)."""

    name: str
    commit: str
    paths: tuple[str, ...]


async def search(
    query: Query,
    repos: Sequence[RepoTarget],
    mirrors: Mirrors,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = SEARCH_TIMEOUT,
) -> list[RepoMatch]:
    """The repositories (by name) and files `query` matches; at most `query.count` results.

    A result is one file, or one repository for repo-only queries and `select:repo`, so the
    last repository's paths may be cut short to stay within `count:N`.
    """
    selected = sorted((t for t in repos if query.matches_repo(t.name)), key=lambda t: t.name)
    if query.repo_only:
        found = [RepoMatch(t.name, t.commit, ()) for t in selected]
        return found if query.count is None else found[: query.count]
    gate = asyncio.Semaphore(concurrency)

    async def one(target: RepoTarget) -> tuple[str, ...]:
        async with gate:
            return await _search_repo(query, target, mirrors, timeout)

    tasks = [asyncio.create_task(one(target)) for target in selected]
    found = []
    left = query.count
    try:
        # In name order, so that count:N keeps the same results whatever finishes first.
        for target, task in zip(selected, tasks, strict=True):
            paths = await task
            if not paths:
                continue
            if query.select_repo:
                paths = ()
                left = None if left is None else left - 1
            elif left is not None:
                paths = paths[:left]
                left -= len(paths)
            found.append(RepoMatch(target.name, target.commit, paths))
            if left == 0:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return found


async def _search_repo(
    query: Query, target: RepoTarget, mirrors: Mirrors, timeout: float
) -> tuple[str, ...]:
    """The sorted paths of `target` that match every file filter and pattern of `query`."""
    try:
        mirror = mirrors.existing(target.name)
        blobs = await _tree(mirror, target.commit, timeout)
        candidates = [path for path in blobs if query.matches_path(path)]
        scanned: list[Term] = []
        for term in query.terms:
            fixed = _fixed_string(term, query.case_sensitive)
            if fixed is None:
                scanned.append(term)
            elif candidates:
                hits = await _grep(mirror, target.commit, fixed, query, candidates, timeout)
                candidates = [p for p in candidates if p in hits or term.matches(p, None)]
        if scanned and candidates:
            if all(term.where == "path" for term in scanned):
                candidates = [p for p in candidates if all(t.matches(p, None) for t in scanned)]
            else:
                wanted = [(path, blobs[path]) for path in candidates]
                candidates = await _scan(mirror, wanted, scanned, timeout)
    except GitError as exc:
        raise GitError(
            f"searching {target.name} at {target.commit[:12]} failed: {exc}",
            stderr=exc.stderr,
            code=exc.code,
        ) from exc
    return tuple(sorted(candidates))


def _fixed_string(term: Term, case_sensitive: bool) -> str | None:
    """The text `git grep -F` can look for on the term's behalf, None when Python must."""
    if term.is_regex or term.negated or term.where == "path" or "\n" in term.pattern:
        return None
    # git folds only ASCII letters under -i; Python's re folds the rest.
    return term.pattern if case_sensitive or term.pattern.isascii() else None


async def _tree(mirror: Path, commit: str, timeout: float) -> dict[str, str]:
    """Every file's path at `commit`, with its blob id (submodules left out)."""
    out = await run_git(["ls-tree", "-r", "-z", commit], cwd=mirror, timeout=timeout)
    blobs: dict[str, str] = {}
    for record in out.split("\0"):
        info, _, path = record.partition("\t")
        fields = info.split()
        if len(fields) == 3 and fields[1] == "blob":
            blobs[path] = fields[2]
    return blobs


async def _grep(
    mirror: Path, commit: str, text: str, query: Query, candidates: list[str], timeout: float
) -> set[str]:
    """The non-binary files at `commit` whose content holds `text`."""
    args = ["grep", "-l", "-z", "-I", "--no-color", "-F"]
    args += [] if query.case_sensitive else ["-i"]
    args += ["-e", text, commit, "--"]
    if len(candidates) <= _PATHSPEC_LIMIT:
        args += [f":(literal){path}" for path in candidates]
    try:
        out = await run_git(args, cwd=mirror, timeout=timeout)
    except GitError as exc:
        if exc.code == 1 and not exc.stderr:  # git grep's "nothing found"
            return set()
        raise
    prefix = f"{commit}:"
    return {name.removeprefix(prefix) for name in out.split("\0") if name}


async def _scan(
    mirror: Path, wanted: list[tuple[str, str]], terms: list[Term], timeout: float
) -> list[str]:
    """The paths among `wanted` (path, blob id) whose file satisfies every term."""

    def matching(batch: list[tuple[str, str | None]]) -> list[str]:
        return [path for path, text in batch if all(t.matches(path, text) for t in terms)]

    proc = await asyncio.create_subprocess_exec(
        "git",
        "cat-file",
        "--batch",
        cwd=mirror,
        env=git_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def feed() -> None:
        for _, blob in wanted:
            stdin.write(f"{blob}\n".encode())
            await stdin.drain()
        stdin.close()

    feeder = asyncio.create_task(feed())
    found: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            batch: list[tuple[str, str | None]] = []
            size = 0
            for path, blob in wanted:
                header = (await stdout.readline()).split()
                if len(header) != 3:
                    raise GitError(f"git cat-file --batch gave no content for {path} ({blob})")
                data = (await stdout.readexactly(int(header[2]) + 1))[:-1]
                binary = b"\0" in data[:BINARY_PROBE]
                batch.append((path, None if binary else data.decode("utf-8", "replace")))
                size += len(data)
                if size >= _BATCH_BYTES:
                    found += await asyncio.to_thread(matching, batch)
                    batch, size = [], 0
            found += await asyncio.to_thread(matching, batch)
            await feeder
            await proc.wait()
    except TimeoutError:
        raise GitError(f"git cat-file --batch timed out after {timeout:.0f}s") from None
    except asyncio.IncompleteReadError:
        raise GitError(f"git cat-file --batch in {mirror} ended early") from None
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        kill_process_group(proc)
        await proc.wait()
    return found


__all__ = [
    "DEFAULT_CONCURRENCY",
    "LANGUAGES",
    "SEARCH_TIMEOUT",
    "SUPPORTED_FILTERS",
    "Query",
    "QueryError",
    "RepoMatch",
    "RepoTarget",
    "parse_query",
    "search",
]
