"""A bundle: jobs of one repository and commit that one executor slot runs together.

The slot checks the repository out once (the union of the jobs' sparse patterns) into a base
directory, then gives each job a workspace of its own made from that checkout: a copy of its
git directory whose objects are shared, and one `git read-tree` that writes the job's own
files. No job can see or change another's files; each is reported on its own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from offload.protocol.wire import Job

# What a job's copy of the git directory leaves out: its index is made afresh for the job's
# own sparse patterns, sample hooks never run, and the fetch's reflogs and git's templates
# are nothing a job's git needs (fewer files to copy for every job of a bundle).
_SKIP = {"index", "hooks", "logs", "description", "branches"}


def checkout_job(job: Job) -> Job:
    """What the base directory checks out for a job and its bundle: the same repository and
    commit, every job's sparse patterns (none when one of them wants the whole tree)."""
    jobs = [job, *job.bundle]
    patterns: list[str] = []
    if all(j.sparse_checkout for j in jobs):
        patterns = sorted({p for j in jobs for p in j.sparse_checkout})
    return job.model_copy(update={"sparse_checkout": patterns, "bundle": []})


def mismatch(job: Job, member: Job) -> str:
    """Why `member` cannot share `job`'s checkout ("" when it can)."""
    for name in ("repository_name", "repository_directory", "commit", "fetch_tags"):
        if getattr(job, name) != getattr(member, name):
            return f"its {name} differs from job {job.id}'s"
    if job.shallow_clone != member.shallow_clone or bool(job.sparse_checkout) != bool(
        member.sparse_checkout
    ):
        return f"its fetch mode differs from job {job.id}'s"
    return ""


def seal_objects(git_dir: Path) -> None:
    """Make the base checkout's object files root's and read-only (when the executor is
    root), so that jobs can share them by hard link and no step can change another's."""
    if os.geteuid() != 0:
        return
    for directory, _dirs, files in os.walk(git_dir / "objects"):
        for name in files:
            path = os.path.join(directory, name)
            os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(path, 0o444, follow_symlinks=False)


def copy_git_dir(
    base: Path, target: Path, patterns: list[str], owner: tuple[int, int] | None
) -> None:
    """`target/.git`: the base checkout's git directory for one job, with the job's own
    sparse patterns and no index yet (`git read-tree -mu HEAD` writes both the index and
    the job's files)."""
    source = base / ".git"
    dest = target / ".git"
    link = os.geteuid() == 0
    for directory, dirs, files in os.walk(source):
        relative = os.path.relpath(directory, source)
        if relative == ".":
            dirs[:] = [d for d in dirs if d not in _SKIP]
            files = [f for f in files if f not in _SKIP]
        into = dest / relative if relative != "." else dest
        into.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(into, *owner)
        shared = relative == "objects" or relative.startswith("objects" + os.sep)
        for name in files:
            src, dst = os.path.join(directory, name), into / name
            if shared and link:
                os.link(src, dst, follow_symlinks=False)
                continue
            shutil.copyfile(src, dst, follow_symlinks=False)
            shutil.copymode(src, dst)
            if owner is not None:
                os.chown(dst, *owner)
    sparse = dest / "info" / "sparse-checkout"
    if patterns:
        sparse.parent.mkdir(exist_ok=True)
        sparse.write_text("".join(f"{p}\n" for p in patterns))
        if owner is not None:
            os.chown(sparse.parent, *owner)
            os.chown(sparse, *owner)


def read_tree(repo_dir: Path) -> list[str]:
    """The git command that writes a copied job's index and files from the shared objects."""
    return ["git", "-C", str(repo_dir), "read-tree", "-mu", "HEAD"]
