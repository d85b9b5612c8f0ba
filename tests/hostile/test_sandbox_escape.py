"""A step, a repository or a batch spec tries to reach the executor host through paths.

Every variant runs against real bubblewrap sandboxes, a real git checkout and the batch
helper as the executor runs it. `outside` stands for any host directory: after each attack it
must be exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ci import unavailable
from fleet import git, make_repo

from offload.batches.helper import BATCH_DIR, INPUT, run_in_process
from offload.executor import workspace as workspaces
from offload.executor.handler import mount_of
from offload.executor.images import ImageStore
from offload.executor.process import StepProcess
from offload.executor.runtimes.base import Limits, Mount, Step, StepUnsupported
from offload.executor.runtimes.sandbox import SandboxRuntime
from offload.protocol.wire import StepMount

REPO = "repository"


@pytest.fixture
def sandbox(tmp_path: Path) -> SandboxRuntime:
    """The sandbox runtime on the default root (no image needed)."""
    if shutil.which("bwrap") is None:
        unavailable("bubblewrap is not installed: apt-get install bubblewrap")
    return SandboxRuntime(ImageStore(tmp_path / "images"))


def via_oldroot(path: Path) -> str:
    """`path` as bubblewrap sees the host while it sets a sandbox up: under /oldroot."""
    return f"/oldroot{path}"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory no step may touch, with one secret file in it."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("host secret\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A workspace with a real checkout under repository/."""
    ws = tmp_path / "ws"
    make_repo(ws / REPO, {"README": "hello\n", "dir/file.txt": "a\n"})
    return ws


def untouched(outside: Path) -> None:
    """The host directory holds its secret and nothing else, unchanged."""
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "host secret\n"


async def run(
    sandbox: SandboxRuntime, ws: Path, script: str, mounts: tuple[Mount, ...] = ()
) -> str:
    """Run `script` as one sandboxed step; its output (StepUnsupported when refused)."""
    (ws / "step.sh").write_text(script)
    run_id = f"escape-{secrets.token_hex(4)}"
    argv = sandbox.command(Step("s", "step.sh", mounts=mounts), ws, Limits(), run_id)
    lines: list[str] = []

    async def sink(stream: str, line: str) -> None:
        lines.append(line)

    code = await StepProcess.for_runtime(sandbox, run_id, argv, sink).run(timeout=60)
    return f"exit {code}\n" + "\n".join(lines)


def file_in(ws: Path, name: str = "payload", text: str = "planted\n") -> Path:
    """A file the job ships (as `files:` content ends up in the workspace)."""
    path = ws / BATCH_DIR / "files" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def commit_symlink(ws: Path, name: str, target: str) -> None:
    """The repository itself carries a symlink (committed, then checked out)."""
    os.symlink(target, ws / REPO / name)
    git("add", name, cwd=ws / REPO)
    git("commit", "-qm", "link", cwd=ws / REPO)


async def test_files_target_through_a_committed_symlink_is_refused(
    sandbox: SandboxRuntime, root: Path, outside: Path
) -> None:
    commit_symlink(root, "link", via_oldroot(outside))
    mount = Mount(file_in(root), "/data/repository/link/pwned")
    with pytest.raises(StepUnsupported, match="passes through the symlink /data/repository/link"):
        await run(sandbox, root, "true", (mount,))
    untouched(outside)


async def test_files_target_through_a_symlink_an_earlier_step_planted_is_refused(
    sandbox: SandboxRuntime, root: Path, outside: Path
) -> None:
    out = await run(
        sandbox, root, f"ln -s {via_oldroot(outside)} /data/repository/dir/escape && echo planted"
    )
    assert "planted" in out and (root / REPO / "dir" / "escape").is_symlink()
    mount = Mount(file_in(root), "/data/repository/dir/escape/x/y")
    with pytest.raises(StepUnsupported, match="symlink /data/repository/dir/escape"):
        await run(sandbox, root, "true", (mount,))
    untouched(outside)


async def test_a_relative_symlink_climbing_out_is_refused(
    sandbox: SandboxRuntime, root: Path, outside: Path
) -> None:
    # As many ../ as it takes to reach /, then down to the host directory.
    climb = "../" * len((root / REPO).parts) + via_oldroot(outside).lstrip("/")
    commit_symlink(root, "up", climb)
    with pytest.raises(StepUnsupported, match="symlink /data/repository/up"):
        await run(sandbox, root, "true", (Mount(file_in(root), "/data/repository/up/new"),))
    untouched(outside)


async def test_a_dangling_symlink_as_the_target_itself_is_refused(
    sandbox: SandboxRuntime, root: Path, outside: Path
) -> None:
    # bwrap would create the missing file the link names: on the host.
    await run(sandbox, root, f"ln -s {via_oldroot(outside)}/created /data/repository/target")
    with pytest.raises(StepUnsupported, match="symlink /data/repository/target"):
        await run(sandbox, root, "true", (Mount(file_in(root), "/data/repository/target"),))
    untouched(outside)


async def test_a_mount_inside_an_earlier_mount_cannot_use_its_symlinks(
    sandbox: SandboxRuntime, root: Path, outside: Path
) -> None:
    shared = root / BATCH_DIR / "mounts" / "0"
    shared.mkdir(parents=True)
    os.symlink(via_oldroot(outside), shared / "hop")
    mounts = (
        Mount(shared, "/tmp/tools", read_only=False),
        Mount(file_in(root), "/tmp/tools/hop/x"),
    )
    with pytest.raises(StepUnsupported, match="symlink /tmp/tools/hop"):
        await run(sandbox, root, "true", mounts)
    untouched(outside)


async def test_a_mount_source_that_links_out_of_the_workspace_is_refused(
    root: Path, outside: Path
) -> None:
    os.symlink(str(outside / "secret"), root / "innocent")
    with pytest.raises(workspaces.WorkspaceError, match="leaves the workspace"):
        mount_of(root, "s", StepMount(source="innocent", target="/tmp/read-it"))


async def test_job_files_are_not_written_through_a_committed_symlink(
    root: Path, outside: Path
) -> None:
    commit_symlink(root, "conf", str(outside))
    from offload.protocol.wire import Job, JobFile

    job = Job(id=1, queue="q", files={f"{REPO}/conf/secret": JobFile(content="overwritten")})
    with pytest.raises(workspaces.WorkspaceError, match="leaves the workspace"):
        workspaces.write_files(root, job)
    untouched(outside)


async def test_real_paths_still_mount_where_the_step_asked(
    sandbox: SandboxRuntime, root: Path, outside: Path
) -> None:
    # The positive control: a new path in the checkout, a file under /tmp, a path on the
    # default root whose top directory is bwrap's own symlink (/bin -> usr/bin on this host).
    mounts = (
        Mount(file_in(root, "a", "in-repo\n"), "/data/repository/dir/new/a.txt"),
        Mount(file_in(root, "b", "in-tmp\n"), "/tmp/deep/b.txt"),
    )
    out = await run(sandbox, root, "cat /data/repository/dir/new/a.txt /tmp/deep/b.txt", mounts)
    assert "in-repo" in out and "in-tmp" in out, out
    assert (root / REPO / "dir" / "new" / "a.txt").exists()
    untouched(outside)


# -- the batch helper on the host ------------------------------------------------------------


def batch_workspace(tmp_path: Path) -> tuple[Path, Path]:
    """A batch workspace as the executor makes it: checkout, input and host directory."""
    ws = tmp_path / "batch"
    make_repo(ws / REPO, {"file.txt": "a\n"})
    (ws / BATCH_DIR).mkdir()
    steps = [{"run": "true", "container": "img", "env": [], "files": {"/tmp/f": "x"}}] * 2
    payload: dict[str, Any] = {
        "repository": {"name": "demo", "branch": "main"},
        "path": "",
        "steps": steps,
        "batchChange": {"name": "b", "description": ""},
        "secretNames": [],
    }
    (ws / INPUT).write_text(json.dumps(payload))
    host = tmp_path / "batch.host"
    host.mkdir(mode=0o700)
    return ws, host


def helper(ws: Path, host: Path, *args: str) -> tuple[int, str]:
    """The helper as the executor runs it: in process."""
    lines: list[str] = []
    code = run_in_process(
        list(args), workspace=ws, host=host, env={"PATH": os.environ["PATH"]}, write=lines.append
    )
    return code, "\n".join(lines)


def test_a_step_that_swaps_the_batch_dir_for_a_symlink_gets_nothing_written_out(
    tmp_path: Path, outside: Path
) -> None:
    ws, host = batch_workspace(tmp_path)
    assert helper(ws, host, "pre", "0")[0] == 0
    assert helper(ws, host, "post", "0")[0] == 0
    # The step replaces .offload-batch with a link to a host directory.
    shutil.rmtree(ws / BATCH_DIR)
    os.symlink(str(outside), ws / BATCH_DIR)
    code, out = helper(ws, host, "pre", "1")
    assert code == 1 and "symlink" in out, out
    untouched(outside)


async def test_host_git_does_not_follow_alternates_a_step_wrote(
    tmp_path: Path, outside: Path
) -> None:
    ws, host = batch_workspace(tmp_path)
    assert helper(ws, host, "pre", "0")[0] == 0
    # The step points the checkout's object store at a host path whose own alternates file
    # is a FIFO: a git that follows it blocks forever (and reads whatever it is pointed at).
    trap = outside / "objects"
    (trap / "info").mkdir(parents=True)
    os.mkfifo(trap / "info" / "alternates")
    (ws / REPO / ".git" / "objects" / "info" / "alternates").write_text(f"{trap}\n")
    (ws / REPO / "file.txt").write_text("b\n")
    code, out = await asyncio.wait_for(asyncio.to_thread(helper, ws, host, "post", "0"), 20)
    assert code == 0, out
    assert '"diff":"--- file.txt' in out.replace("\\n", "\n") or "file.txt" in out


def test_host_git_may_not_leave_the_workspace(tmp_path: Path) -> None:
    from offload.executor.hosttools import host_command
    from offload.protocol.wire import CliStep

    # A host repository the workspace happens to sit in (an executor's data dir under a
    # checkout, say), and `git -C DIR rev-parse`, a permitted host step, aimed at it.
    host_repo = tmp_path / "host-repo"
    make_repo(host_repo, {"x": "y"})
    ws = host_repo / "workspaces" / "ws"
    ws.mkdir(parents=True)
    for directory in (str(host_repo), "../.."):
        command = host_command(CliStep(command=["git", "-C", directory, "rev-parse", "HEAD"]), "g")
        assert command.argv[1:3] == ["-C", directory]
        # DIR is the job's: resolved in the workspace, so this is refused before git runs.
        with pytest.raises(workspaces.WorkspaceError, match="leaves the workspace"):
            workspaces.inside(ws, directory)
    done = subprocess.run(
        ["git", "-C", str(ws), "rev-parse", "HEAD"],
        env={"PATH": os.environ["PATH"], **workspaces.untrusted_git_env(ws)},
        capture_output=True,
        text=True,
        check=False,
    )
    # Discovery stops at the workspace: git does not find the repository around it.
    assert done.returncode != 0 and "not a git repository" in done.stderr
