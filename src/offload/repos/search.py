"""Search: evaluate a parsed query over the bare mirrors, at one commit per repository.

There is no index: paths come from `git ls-tree`, literal patterns from `git grep -F`, and
regular expressions (Python's `re` flavour) are matched in Python over `git cat-file --batch`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from offload.repos.mirror import GitError, Mirrors, git_env, kill_process_group, run_git
from offload.repos.search_query import SUPPORTED_FILTERS, Query, QueryError, parse_query
from offload.repos.search_tree import (
    And,
    Node,
    Or,
    PathFilter,
    RepoHas,
    RepoName,
    Term,
    cost,
    name_verdict,
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
_NO_FILES: frozenset[str] = frozenset()


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

    A result is one file, or one repository for repository matches and `select:repo`, so the
    last repository's paths may be cut short to stay within `count:N`.
    """
    selected = sorted(
        (t for t in repos if name_verdict(query.expr, t.name) is not False), key=lambda t: t.name
    )
    if query.repo_only:
        found = [RepoMatch(t.name, t.commit, ()) for t in selected]
        return found if query.count is None else found[: query.count]
    gate = asyncio.Semaphore(concurrency)

    async def one(target: RepoTarget) -> _Found:
        async with gate:
            return await _search_repo(query, target, mirrors, timeout)

    tasks = [asyncio.create_task(one(target)) for target in selected]
    found = []
    left = query.count
    try:
        # In name order, so that count:N keeps the same results whatever finishes first.
        for target, task in zip(selected, tasks, strict=True):
            matched = await task
            if not (matched.whole or matched.files):
                continue
            paths = tuple(sorted(matched.files))
            if query.select_repo or not paths:
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


@dataclass(frozen=True)
class _Found:
    """What an expression gives over one repository: the repository as such, and files."""

    whole: bool
    files: frozenset[str]


async def _search_repo(
    query: Query, target: RepoTarget, mirrors: Mirrors, timeout: float
) -> _Found:
    try:
        repo = _Repo(target, mirrors.existing(target.name), query.case_sensitive, timeout)
        return await repo.evaluate(query.expr, None)
    except GitError as exc:
        raise GitError(
            f"searching {target.name} at {target.commit[:12]} failed: {exc}",
            stderr=exc.stderr,
            code=exc.code,
        ) from exc


class _Repo:
    """One repository under search: its files, listed once, and git's work on them."""

    def __init__(self, target: RepoTarget, mirror: Path, case_sensitive: bool, timeout: float):
        self.name = target.name
        self.commit = target.commit
        self.mirror = mirror
        self.case_sensitive = case_sensitive
        self.timeout = timeout
        self._blobs: dict[str, str] | None = None

    async def evaluate(self, node: Node, within: frozenset[str] | None) -> _Found:
        """What `node` gives, looking only at the files `within` (None: every file)."""
        if isinstance(node, RepoName):
            return _Found(node.matches(self.name), _NO_FILES)
        if isinstance(node, RepoHas):
            return _Found(await self._has(node) != node.negated, _NO_FILES)
        if isinstance(node, Or):
            whole, files = False, _NO_FILES
            for operand in node.operands:
                found = await self.evaluate(operand, within)
                whole, files = whole or found.whole, files | found.files
            return _Found(whole, files)
        if isinstance(node, And):
            # (whole or files) and (whole' or files'): whole and whole', or files' (found among
            # `files` unless whole), or files when whole'. Cheap operands narrow the files first.
            whole, files = True, _NO_FILES
            for operand in sorted(node.operands, key=cost):
                if not (whole or files):
                    break
                found = await self.evaluate(operand, within if whole else files)
                whole, files = (
                    whole and found.whole,
                    found.files | (files if found.whole else _NO_FILES),
                )
            return _Found(whole, files)
        paths = list(await self._blobs_of()) if within is None else sorted(within)
        if isinstance(node, PathFilter):
            return _Found(False, frozenset(p for p in paths if node.matches(p)))
        return _Found(False, frozenset(await self._term(node, paths)))

    async def _blobs_of(self) -> dict[str, str]:
        if self._blobs is None:
            self._blobs = await _tree(self.mirror, self.commit, self.timeout)
        return self._blobs

    async def _term(self, term: Term, paths: list[str]) -> list[str]:
        """The paths among `paths` whose file satisfies `term`."""
        if term.where == "path" or not paths:
            return [p for p in paths if term.matches(p, None)]
        by_path = (
            []
            if term.negated or term.where == "content"
            else [p for p in paths if term.regex.search(p)]
        )
        rest = [p for p in paths if p not in set(by_path)]
        fixed = _fixed_string(term, self.case_sensitive)
        if fixed is not None:
            return by_path + sorted(await self._grep(fixed, rest))
        return by_path + await self._scan(rest, term.matches)

    async def _has(self, node: RepoHas) -> bool:
        """Whether some file has the predicate's path and content."""
        blobs = await self._blobs_of()
        paths = [p for p in blobs if node.path is None or node.path.search(p)]
        if node.content is None or not paths:
            return bool(paths)
        text = node.content_text
        if text is not None and (self.case_sensitive or text.isascii()):
            return bool(await self._grep(text, paths, first=True))
        content = node.content
        return bool(
            await self._scan(
                paths,
                lambda _, data: data is not None and content.search(data) is not None,
                first=True,
            )
        )

    async def _grep(self, text: str, paths: list[str], first: bool = False) -> set[str]:
        """The non-binary files among `paths` whose content holds `text` (one if `first`)."""
        if not paths:
            return set()
        named = len(paths) <= _PATHSPEC_LIMIT
        # -q stops at the first hit, when the paths named are exactly those that count.
        quiet = first and named
        args = ["grep", "-q" if quiet else "-l", "-z", "-I", "--no-color", "-F"]
        args += [] if self.case_sensitive else ["-i"]
        args += ["-e", text, self.commit, "--"]
        if named:
            args += [f":(literal){path}" for path in paths]
        try:
            out = await run_git(args, cwd=self.mirror, timeout=self.timeout)
        except GitError as exc:
            if exc.code == 1 and not exc.stderr:  # git grep's "nothing found"
                return set()
            raise
        if quiet:
            return {paths[0]}  # some file of `paths`: which one does not matter
        prefix = f"{self.commit}:"
        hits = {name.removeprefix(prefix) for name in out.split("\0") if name}
        return hits & set(paths)

    async def _scan(
        self, paths: list[str], test: Callable[[str, str | None], bool], first: bool = False
    ) -> list[str]:
        blobs = await self._blobs_of()
        return await _scan(self.mirror, [(p, blobs[p]) for p in paths], test, self.timeout, first)


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


async def _scan(
    mirror: Path,
    wanted: list[tuple[str, str]],
    test: Callable[[str, str | None], bool],
    timeout: float,
    first: bool,
) -> list[str]:
    """The paths among `wanted` (path, blob id) whose file passes `test` (path, text or None
    for a binary file); with `first`, reading stops at the first batch that has one."""

    def matching(batch: list[tuple[str, str | None]]) -> list[str]:
        return [path for path, text in batch if test(path, text)]

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
                    if first and found:
                        return found
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
    "SEARCH_TIMEOUT",
    "SUPPORTED_FILTERS",
    "Query",
    "QueryError",
    "RepoMatch",
    "RepoTarget",
    "parse_query",
    "search",
]
