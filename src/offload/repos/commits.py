"""Commits made without a work tree: a diff applied on a base, pushes, and merges of branches."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from offload.repos.mirror import (
    FETCH_TIMEOUT,
    READ_TIMEOUT,
    GitError,
    git_env,
    kill_process_group,
    run_git,
)

_STDERR_LIMIT = 4000


class DiffDoesNotApply(GitError):
    """A diff does not apply to the commit it was meant for."""


class MergeConflict(GitError):
    """Merging two branches conflicts; `paths` are the conflicting files."""

    def __init__(self, message: str, *, paths: Sequence[str]) -> None:
        super().__init__(message)
        self.paths = tuple(paths)


class BranchMoved(GitError):
    """A branch changed while offload was updating it; nothing was overwritten."""


@dataclass(frozen=True)
class _Ran:
    code: int
    stdout: str
    stderr: str


async def _git(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = READ_TIMEOUT,
) -> _Ran:
    """Run git with extra environment and input; the caller decides what a failure means."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=git_env(env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        kill_process_group(proc)
        await proc.wait()
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s in {cwd}") from None
    except BaseException:
        kill_process_group(proc)
        await proc.wait()
        raise
    assert proc.returncode is not None
    stderr = err.decode("utf-8", "replace").strip()[-_STDERR_LIMIT:]
    return _Ran(proc.returncode, out.decode("utf-8", "replace"), stderr)


async def _check(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> str:
    """Stdout of a git command that must succeed; GitError with its stderr otherwise."""
    ran = await _git(args, cwd=cwd, env=env, stdin=stdin)
    if ran.code != 0:
        raise GitError(
            f"git {args[0]} failed (exit {ran.code}) in {cwd}"
            + (f": {ran.stderr}" if ran.stderr else ""),
            stderr=ran.stderr,
            code=ran.code,
        )
    return ran.stdout.strip()


async def _resolve(repo: Path, rev: str) -> str | None:
    """The commit `rev` names in `repo`, or None."""
    if not rev or rev.startswith("-"):
        return None
    ran = await _git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], cwd=repo
    )
    return ran.stdout.strip() if ran.code == 0 else None


def _identity_env(
    *,
    author_name: str,
    author_email: str,
    committer_name: str | None = None,
    committer_email: str | None = None,
    when: datetime | None = None,
) -> dict[str, str]:
    """GIT_AUTHOR_* and GIT_COMMITTER_* of a commit; the committer defaults to the author."""
    env = {
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_COMMITTER_NAME": committer_name or author_name,
        "GIT_COMMITTER_EMAIL": committer_email or author_email,
    }
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = _git_date(when)
    return env


def _git_date(when: datetime) -> str:
    """`when` in git's internal format (`<epoch> +hhmm`); a naive time is taken as UTC."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    offset = aware.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{int(aware.timestamp())} {sign}{hours:02d}{rest:02d}"


async def _commit_tree(
    repo: Path, tree: str, parents: Sequence[str], message: str, env: Mapping[str, str]
) -> str:
    """Write a commit object of `tree` on `parents`; its id."""
    args = ["commit-tree", "--no-gpg-sign", tree]
    for parent in parents:
        args += ["-p", parent]
    text = message if message.endswith("\n") else message + "\n"
    # The message goes in on stdin, taken verbatim: `-m` would treat it as paragraphs.
    return await _check([*args, "-F", "-"], cwd=repo, env=env, stdin=text.encode())


async def commit_diff(
    repo_dir: Path,
    *,
    base_rev: str,
    diff: bytes,
    message: str,
    author_name: str,
    author_email: str,
    committer_name: str | None = None,
    committer_email: str | None = None,
    when: datetime | None = None,
) -> str:
    """Write a commit of `diff` on `base_rev` in `repo_dir` (bare is fine) and return its id.

    `diff` is what `git diff --cached --no-prefix --binary` prints. Only objects are written,
    no ref moves; with `when` given, the same inputs always give the same commit id.
    """
    if not diff.strip():
        raise DiffDoesNotApply(f"the diff for {base_rev} in {repo_dir} is empty: nothing to commit")
    base = await _resolve(repo_dir, base_rev)
    if base is None:
        raise GitError(f"base {base_rev!r} is not a commit in {repo_dir}")
    with tempfile.TemporaryDirectory(prefix="offload-index-") as scratch:
        # A private index: the repository's own (if any) and its work tree stay untouched.
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        await _check(["read-tree", base], cwd=repo_dir, env=index)
        applied = await _git(
            ["apply", "--cached", "--binary", "-p0", "--whitespace=nowarn", "-"],
            cwd=repo_dir,
            env=index,
            stdin=diff,
        )
        if applied.code != 0:
            raise DiffDoesNotApply(
                f"the diff does not apply to {base_rev} ({base[:12]}) in {repo_dir}: "
                f"{applied.stderr or 'git apply failed'}; recompute the diff on that commit",
                stderr=applied.stderr,
                code=applied.code,
            )
        tree = await _check(["write-tree"], cwd=repo_dir, env=index)
    env = _identity_env(
        author_name=author_name,
        author_email=author_email,
        committer_name=committer_name,
        committer_email=committer_email,
        when=when,
    )
    return await _commit_tree(repo_dir, tree, [base], message, env)


async def diff(repo_path: Path, old: str, new: str, *, max_bytes: int) -> tuple[bytes, bool]:
    """The diff from commit `old` to commit `new` (renames found, a/ b/ prefixes), at most
    `max_bytes` of it, and whether it was cut there."""
    for rev in (old, new):
        if await _resolve(repo_path, rev) is None:
            raise GitError(f"{rev!r} is not a commit in {repo_path}")
    args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "-M"]
    # The repository's own diff.noprefix or diff.mnemonicPrefix must not change the output.
    args += ["--src-prefix=a/", "--dst-prefix=b/", old, new, "--"]
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=repo_path,
        env=git_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    chunks: list[bytes] = []
    size, cut = 0, False
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            # Read only what is kept: a diff of gigabytes never sits in memory.
            while chunk := await proc.stdout.read(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    cut = True
                    kill_process_group(proc)
                    break
            err = await proc.stderr.read(_STDERR_LIMIT)
            code = await proc.wait()
    except TimeoutError:
        kill_process_group(proc)
        await proc.wait()
        raise GitError(f"git diff timed out after {READ_TIMEOUT:.0f}s in {repo_path}") from None
    except BaseException:
        kill_process_group(proc)
        await proc.wait()
        raise
    if code != 0 and not cut:
        stderr = err.decode("utf-8", "replace").strip()
        raise GitError(
            f"git diff failed (exit {code}) in {repo_path}: {stderr}", stderr=stderr, code=code
        )
    return b"".join(chunks)[:max_bytes], cut


async def parents(repo_path: Path, commit: str) -> list[str]:
    """The parents of `commit` in `repo_path`, first parent first."""
    line = await _check(["rev-list", "--parents", "-n", "1", commit, "--"], cwd=repo_path)
    return line.split()[1:]


async def merge_base(repo_path: Path, one: str, other: str) -> str | None:
    """The best common ancestor of two commits, or None when their histories never meet."""
    ran = await _git(["merge-base", one, other], cwd=repo_path)
    return ran.stdout.strip() if ran.code == 0 and ran.stdout.strip() else None


async def push(repo_dir: Path, commit: str, url: str, branch: str, *, force: bool = True) -> None:
    """Point `branch` at `url` to `commit` of `repo_dir`; never prompts, never logs secrets."""
    await check_branch_name(repo_dir, branch)
    refspec = f"{'+' if force else ''}{commit}:refs/heads/{branch}"
    # The url sits after `--` and away from the first two arguments, which run_git shows.
    await run_git(
        ["push", "--quiet", "--no-verify", "--", url, refspec],
        cwd=repo_dir,
        timeout=FETCH_TIMEOUT,
        secret_source=url,
    )


async def branch_commit(repo_path: Path, branch: str) -> str | None:
    """The commit branch `branch` of `repo_path` points at, or None when there is no such branch."""
    return await _resolve(repo_path, f"refs/heads/{branch}")


async def check_branch_name(repo_dir: Path, branch: str) -> None:
    """Raise ValueError unless `branch` is a name git accepts for a branch."""
    ran = await _git(["check-ref-format", f"refs/heads/{branch}"], cwd=repo_dir)
    if ran.code != 0 or branch.startswith("-"):
        raise ValueError(f"{branch!r} is not a valid branch name: see `git help check-ref-format`")


async def _checked_out_at(repo: Path, ref: str) -> str | None:
    """The work tree of `repo` that has `ref` checked out, if any."""
    out = await _check(["worktree", "list", "--porcelain"], cwd=repo)
    tree = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            tree = line.removeprefix("worktree ")
        elif line == f"branch {ref}":
            return tree
    return None


async def merge(
    repo_path: Path,
    *,
    base_ref: str,
    head_ref: str,
    message: str,
    author_name: str,
    author_email: str,
    when: datetime | None = None,
) -> str:
    """Merge branch `head_ref` into branch `base_ref` of `repo_path`; base's new commit.

    Always a merge commit (like a code host's merge button), even when base could be
    fast-forwarded, so that the history shows the merge. A head already in base changes
    nothing. MergeConflict names the conflicting files; BranchMoved means base changed
    meanwhile and was left as the other writer made it.
    """
    base_full = f"refs/heads/{base_ref}"
    base = await branch_commit(repo_path, base_ref)
    head = await branch_commit(repo_path, head_ref)
    for name, found in ((base_ref, base), (head_ref, head)):
        if found is None:
            raise GitError(f"there is no branch {name!r} in {repo_path}")
    assert base is not None and head is not None
    contained = await _git(["merge-base", "--is-ancestor", head, base], cwd=repo_path)
    if contained.code == 0:
        return base
    work_tree = await _checked_out_at(repo_path, base_full)
    if work_tree is not None:
        # Moving a checked-out branch under a work tree makes it show the merge reversed.
        raise GitError(
            f"cannot merge into {base_ref} of {repo_path}: it is checked out in the work tree "
            f"{work_tree}; check out another branch there (or host a bare repository)"
        )
    merged = await _git(
        ["merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", base, head],
        cwd=repo_path,
    )
    fields = [field for field in merged.stdout.split("\0") if field]
    if merged.code == 1 and fields:
        paths = sorted(set(fields[1:]))
        raise MergeConflict(
            f"merging {head_ref} into {base_ref} of {repo_path} conflicts in "
            f"{', '.join(paths) or 'the tree'}; update {head_ref} so that it merges cleanly",
            paths=paths,
        )
    if merged.code != 0 or not fields:
        raise GitError(
            f"git merge-tree failed (exit {merged.code}) in {repo_path}: {merged.stderr}",
            stderr=merged.stderr,
            code=merged.code,
        )
    env = _identity_env(author_name=author_name, author_email=author_email, when=when)
    commit = await _commit_tree(repo_path, fields[0], [base, head], message, env)
    # Compare-and-swap: a push to base since we read it fails here instead of being lost.
    moved = await _git(["update-ref", base_full, commit, base], cwd=repo_path)
    if moved.code != 0:
        if await _resolve(repo_path, base_full) != base:
            raise BranchMoved(
                f"{base_ref} of {repo_path} changed while merging {head_ref} into it; "
                "nothing was overwritten: merge again",
                stderr=moved.stderr,
                code=moved.code,
            )
        raise GitError(
            f"git update-ref of {base_ref} failed in {repo_path}: {moved.stderr}",
            stderr=moved.stderr,
            code=moved.code,
        )
    return commit


__all__ = [
    "BranchMoved",
    "DiffDoesNotApply",
    "MergeConflict",
    "branch_commit",
    "check_branch_name",
    "commit_diff",
    "diff",
    "merge",
    "merge_base",
    "parents",
    "push",
]
