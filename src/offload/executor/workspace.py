"""A job's workspace: a scratch directory with the repository checked out at the commit.

Next to it lives the job's host directory (`<workspace>.host`, mode 0700): private to host
tools. Runtimes mount only the workspace root, so no step in a runtime can see or change it.

Steps of a root executor run as an unprivileged host uid: the workspace, and everything the
executor writes into it, belongs to that uid (`give`); the host directory stays root's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from offload.protocol.wire import Job

SCRIPTS = ".offload"  # where step scripts live inside the workspace


class WorkspaceError(ValueError):
    """A job asks for a path outside its workspace, or similar; the job cannot run."""


def inside(root: Path, relative: str) -> Path:
    """`root/relative`, refusing anything that would land outside `root`."""
    path = (root / relative).resolve()
    top = root.resolve()
    if path != top and top not in path.parents:
        raise WorkspaceError(f"path {relative!r} leaves the workspace")
    return path


def create(parent: Path, job: Job, owner: tuple[int, int] | None = None) -> Path:
    """A fresh workspace directory for `job` (owned by `owner`, the uid and gid steps run
    as), and its host directory beside it."""
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"workspace-{job.id}-", dir=parent))
    if owner is not None:
        os.chown(root, *owner)
    # mkdtemp's names have no dot, so no other workspace can be called this.
    host = host_dir(root)
    host.mkdir(mode=0o700)
    host.chmod(0o700)  # whatever the umask
    return root


def host_dir(root: Path) -> Path:
    """The host directory of the workspace at `root`: beside it, never inside it."""
    return root.with_name(f"{root.name}.host")


def write_files(root: Path, job: Job) -> list[str]:
    """Write the job's files into the workspace; their paths."""
    written = []
    for relative, file in job.files.items():
        path = inside(root, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file.content)
        give(root, path)
        written.append(relative)
    return written


def write_script(root: Path, job: Job, index: int, commands: list[str]) -> str:
    """The script of step `index`, written into the workspace; its path relative to the root.

    The runtime runs it with the shell it found for the step's image (`Runtime.shell`: bash
    when the image has it, else sh), so it has no #! line.
    """
    name = f"{SCRIPTS}/{job.id}.{index}_{job.repository_name.replace('/', '_')}@{job.commit}.sh"
    path = inside(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # set -x shows each command in the log as it runs; set +e lets a step decide for itself.
    path.write_text("set +e\nset -x\n" + "\n".join(commands) + "\n")
    path.chmod(0o755)
    give(root, path)
    return name


def give(root: Path, path: Path) -> None:
    """Hand `path`, and the directories between `root` and it, to the workspace's owner, so
    that steps (running as that uid) can change what the executor wrote for them."""
    owner = os.stat(root)
    if owner.st_uid == os.geteuid() and owner.st_gid == os.getegid():
        return
    current = path
    while current != root and root in current.parents:
        # lchown: never follow a link out of the workspace.
        os.lchown(current, owner.st_uid, owner.st_gid)
        current = current.parent


def unreachable(path: Path, uid: int, gid: int) -> str:
    """The first directory on the way to `path` that `uid`:`gid` may not enter ("" if none):
    bubblewrap, run as that uid, binds workspaces and images by path."""
    current = Path("/")
    for part in path.resolve().parts[1:]:
        current = current / part
        try:
            st = os.stat(current)
        except FileNotFoundError:
            return ""
        if not stat.S_ISDIR(st.st_mode):
            return ""
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return f"{current} (mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid})"
    return ""


def git_env() -> dict[str, str]:
    """The environment of the executor's own git commands: no prompts, no LFS downloads."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "USER", "LANG", "TMPDIR")}
    return {**keep, "GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1"}


def untrusted_git_env(root: Path) -> dict[str, str]:
    """git's environment on a workspace that steps have written: no config, hook, fsmonitor
    or replacement from outside offload's reach, no discovery above the workspace."""
    config = {
        # Ownership: steps (another uid) own the checkout; root's git would refuse it.
        "safe.directory": "*",
        "core.fsmonitor": "false",
        "core.hooksPath": os.devnull,
    }
    env = {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CEILING_DIRECTORIES": str(root.parent),
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for n, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{n}"] = key
        env[f"GIT_CONFIG_VALUE_{n}"] = value
    return env


def git_commands(job: Job, repo_dir: Path, remote: str) -> Iterator[tuple[str, list[str]]]:
    """The (log key, argv) of each git command that checks the job's commit out, in order.

    Run each before asking for the next: between them this writes the repository's config
    itself (the remote, no auto gc; at the end, the remote named after the repository), which
    takes four git processes fewer per job than `git remote add`, `git config` and `git remote
    set-url` would.
    """
    git = ["git", "-C", str(repo_dir)]
    yield "setup.git.init", [*git, "init", "--quiet"]
    config = repo_dir / ".git" / "config"
    with config.open("a") as out:
        out.write(
            f'[remote "origin"]\n{_url(remote)}\tfetch = +refs/heads/*:refs/remotes/origin/*\n'
            "[gc]\n\tauto = 0\n"
        )
    fetch = [*git, "-c", "protocol.version=2", "fetch", "--progress", "--no-recurse-submodules"]
    if job.fetch_tags:
        fetch.append("--tags")
    if job.shallow_clone:
        fetch += ["--no-tags", "--depth=1"]
    if job.sparse_checkout:
        fetch.append("--filter=blob:none")
    yield "setup.git.fetch", [*fetch, "origin", job.commit]
    if job.sparse_checkout:
        # `sparse-checkout set` turns core.sparseCheckout on itself.
        yield (
            "setup.git.sparse-checkout-set",
            [*git, "sparse-checkout", "set", "--no-cone", "--", *job.sparse_checkout],
        )
    yield "setup.git.checkout", [*git, "checkout", "--progress", "--force", job.commit]
    # Indexers read the remote: point it at the repository's name, not the proxy.
    text = config.read_text()
    config.write_text(text.replace(_url(remote), _url(job.repository_name), 1))


def _url(url: str) -> str:
    """The config line of a remote's `url`, quoted (a repository's name is the user's)."""
    quoted = url.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'\turl = "{quoted}"\n'


def remove(root: Path) -> None:
    """Delete a workspace (files written by sandboxed steps included) and its host directory."""
    remove_tree(root)
    remove_tree(host_dir(root))


def remove_tree(path: Path) -> bool:
    """Delete `path` and everything under it, whatever steps did to it; whether it is gone.

    Steps leave read-only directories (`chmod -R a-w`), and trees deeper than Python's
    recursion limit: directories get u+rwx as they are reached (as root, files of another
    uid go too), and the walk keeps its own stack. Symlinks are removed, never followed.
    """
    # shutil's walk is faster; where it gives up (modes, depth), the walk below goes on.
    with contextlib.suppress(RecursionError):
        shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return True
    stack = [(str(path), False)]
    while stack:
        top, emptied = stack.pop()
        if emptied:
            with contextlib.suppress(OSError):
                os.rmdir(top)
            continue
        try:
            mode = os.lstat(top).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):
            with contextlib.suppress(OSError):
                os.unlink(top)
            continue
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            with contextlib.suppress(OSError):
                os.chmod(top, stat.S_IMODE(mode) | stat.S_IRWXU)
        stack.append((top, True))
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, False))
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    return not os.path.lexists(path)
