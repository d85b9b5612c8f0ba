"""Repository hosting with real git: registry, mirrors, syncer, CLI, and git smart-HTTP."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from access_site import served as served_site
from fastapi import FastAPI, HTTPException, Request
from typer.testing import CliRunner, Result

from offload.config import Settings
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.executor.gitproxy import GitProxy
from offload.repos.cli import repos_app
from offload.repos.githttp import git_router, pkt_line
from offload.repos.mirror import Mirrors
from offload.repos.registry import (
    DuplicateRepo,
    RepoNameError,
    RepoRegistry,
    default_name,
    redact_source,
    validate_name,
)
from offload.repos.syncer import Syncer, SyncFailed
from offload.serving import Server
from offload.serving import server as uvicorn_server
from offload.testing import FakeClock
from offload.worker.job import WorkerContext
from offload.worker.registry import JOBS


def git_env(home: Path) -> dict[str, str]:
    """git as a user with no configuration of their own would run it."""
    return {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
        "LC_ALL": "C",
    }


def git(cwd: Path, *args: str) -> str:
    """Run git where no server is involved (making and changing source repositories)."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(cwd.parent), capture_output=True, text=True
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@dataclass
class Ran:
    """How a git command ended."""

    code: int
    stdout: str
    stderr: str


async def agit(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Ran:
    """Run git as a client of the in-process server (it must not block the event loop)."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env={**git_env(cwd.parent), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def commit(repo: Path, path: str, content: str, message: str) -> str:
    """Write `path` in `repo`, commit it, and return the new commit."""
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(content)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_source(path: Path) -> dict[str, str]:
    """A repository with two commits on main, a branch, an annotated tag and 40 more tags."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    commits = {"first": commit(path, "src/app.py", "print('v1')\n", "first")}
    commits["second"] = commit(path, "docs/guide.md", "# Guide\n", "second")
    git(path, "tag", "-a", "v1", "-m", "release 1", commits["first"])
    git(path, "branch", "feature", commits["first"])
    # Enough refs that a clone's request passes 1 KiB, which git sends gzip-compressed.
    refs = "".join(f"create refs/tags/t{i:02} {commits['second']}\n" for i in range(40))
    subprocess.run(["git", "update-ref", "--stdin"], cwd=path, input=refs, text=True, check=True)
    return commits


@pytest.fixture
def hosting(db: Database, tmp_path: Path) -> Syncer:
    """A syncer over the test database, with mirrors under the test's data dir."""
    return Syncer(RepoRegistry(db), Mirrors.in_data_dir(tmp_path / "data"))


# -- names ---------------------------------------------------------------------------------


def test_default_names_follow_the_source() -> None:
    assert default_name("https://github.com/Org/Project.git") == "github.com/Org/Project"
    assert default_name("https://user:token@GitHub.com:8443/org/project/") == (
        "github.com/org/project"
    )
    assert default_name("git@github.com:org/project.git") == "github.com/org/project"
    assert default_name("ssh://git@git.example.com:2222/team/api") == "git.example.com/team/api"
    assert default_name("file:///srv/git/project.git") == "project"
    assert default_name("/srv/git/my project/.git") == "my-project"
    assert redact_source("https://user:token@github.com/o/p") == "https://***@github.com/o/p"
    assert redact_source("ssh://git:pw@host/o/p") == "ssh://git:***@host/o/p"
    for bad in ("", "../etc", "a/../b", ".hidden", "a.git/b", "x.lock", "a//b", "-rf", "a b"):
        with pytest.raises(RepoNameError, match="repository name"):
            validate_name(bad)


# -- registry, mirrors, syncer ---------------------------------------------------------------


async def test_local_paths_and_file_urls_are_mirrored_listed_and_resolved(
    hosting: Syncer, tmp_path: Path
) -> None:
    alpha = make_source(tmp_path / "alpha")
    beta = make_source(tmp_path / "src" / "beta.git")

    added = await hosting.add(str(tmp_path / "alpha"))
    assert (added.name, added.default_branch, added.head_commit) == (
        "alpha",
        "main",
        alpha["second"],
    )
    assert added.last_synced_at is not None and added.last_error is None
    from_url = await hosting.add(f"file://{tmp_path}/src/beta.git", name="acme/beta")
    assert from_url.head_commit == beta["second"]

    listed = await hosting.registry.list()
    assert [(r.name, r.source) for r in listed] == [
        ("acme/beta", f"file://{tmp_path}/src/beta.git"),
        ("alpha", str(tmp_path / "alpha")),
    ]
    assert hosting.mirrors.path("acme/beta") == tmp_path / "data" / "repos" / "acme" / "beta.git"

    with pytest.raises(DuplicateRepo, match="'alpha' is already registered; pass --name"):
        await hosting.add(str(tmp_path / "alpha"))
    with pytest.raises(RepoNameError, match=r"not valid at '\.\.'"):
        await hosting.add(str(tmp_path / "alpha"), name="acme/../etc")

    resolve = hosting.mirrors.resolve
    assert await resolve("alpha", "main") == alpha["second"]
    assert await resolve("alpha", "feature") == alpha["first"]
    assert await resolve("alpha", "v1") == alpha["first"]  # the tag peeled to its commit
    assert await resolve("alpha", "HEAD~1") == alpha["first"]
    assert await resolve("alpha", alpha["first"][:10]) == alpha["first"]
    assert await resolve("alpha", "no-such-branch") is None
    assert await resolve("alpha", "--output=/tmp/x") is None
    assert await hosting.mirrors.default_branch("alpha") == "main"


async def test_a_source_that_cannot_be_mirrored_is_not_registered(
    hosting: Syncer, tmp_path: Path
) -> None:
    with pytest.raises(SyncFailed, match=r"cannot mirror .*nowhere as nowhere: git clone"):
        await hosting.add(str(tmp_path / "nowhere"))
    assert await hosting.registry.list() == []
    assert not hosting.mirrors.exists("nowhere")


async def test_sync_picks_up_new_commits_deleted_branches_and_a_new_default_branch(
    hosting: Syncer, tmp_path: Path
) -> None:
    source = tmp_path / "alpha"
    commits = make_source(source)
    repo = await hosting.add(str(source))

    third = commit(source, "src/app.py", "print('v2')\n", "third")
    git(source, "branch", "-D", "feature")
    git(source, "checkout", "-q", "-b", "develop")
    fourth = commit(source, "src/dev.py", "pass\n", "fourth")
    git(source, "tag", "-d", "t00")

    outcome = await hosting.sync(repo)
    assert outcome.ok and outcome.state is not None
    assert outcome.state.default_branch == "develop"  # the source's HEAD moved
    assert outcome.state.head_commit == fourth
    assert await hosting.mirrors.resolve("alpha", "main") == third
    assert await hosting.mirrors.resolve("alpha", "feature") is None
    assert await hosting.mirrors.resolve("alpha", "t00") is None
    assert await hosting.mirrors.resolve("alpha", "v1") == commits["first"]
    synced = await hosting.registry.require("alpha")
    assert (synced.default_branch, synced.head_commit, synced.last_error) == (
        "develop",
        fourth,
        None,
    )


class Once:
    """The worker's sleep in these tests: notes the end of a pass, then waits to be stopped."""

    def __init__(self) -> None:
        self.passed = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        assert seconds == 300  # OFFLOAD_REPOS_SYNC_INTERVAL's default
        self.passed.set()
        await asyncio.Event().wait()


async def test_a_failing_source_records_its_error_and_the_others_still_sync(
    db: Database, tmp_path: Path
) -> None:
    clock = FakeClock()
    hosting = Syncer(RepoRegistry(db, clock=clock), Mirrors.in_data_dir(tmp_path / "data"))
    for name in ("a", "b", "c"):
        make_source(tmp_path / name)
        await hosting.add(str(tmp_path / name))
    added_at = clock.now()
    clock.advance(timedelta(minutes=5))
    shutil.rmtree(tmp_path / "b")
    new_a = commit(tmp_path / "a", "x", "x\n", "more")
    new_c = commit(tmp_path / "c", "y", "y\n", "more")

    heard: list[str] = []
    outcomes = await hosting.sync_all(on_done=lambda o: heard.append(o.name))

    assert sorted(heard) == ["a", "b", "c"]
    assert [(o.name, o.ok) for o in outcomes] == [("a", True), ("b", False), ("c", True)]
    failed = await hosting.registry.require("b")
    assert failed.last_error is not None
    assert "git ls-remote --symref failed (exit 128)" in failed.last_error
    assert "does not appear to be a git repository" in failed.last_error
    assert failed.last_synced_at == added_at and failed.last_attempt_at == clock.now()
    assert (await hosting.registry.require("a")).head_commit == new_a
    assert (await hosting.registry.require("c")).head_commit == new_c

    # The worker job does the same pass; the source is back, so the error clears.
    make_source(tmp_path / "b")
    once = Once()
    context = WorkerContext(db, Settings(data_dir=tmp_path / "data"), clock=clock, sleep=once)
    (routine,) = JOBS["repos.syncer"].build(context)
    assert routine.name == "repos.syncer"
    running = asyncio.create_task(routine.run())
    await asyncio.wait_for(once.passed.wait(), 20)
    routine.stop(1.0)
    await asyncio.wait_for(running, 5)
    recovered = await hosting.registry.require("b")
    assert recovered.last_error is None and recovered.head_commit is not None


async def test_concurrent_syncs_of_one_mirror_wait_for_each_other_and_leave_it_sound(
    db: Database, tmp_path: Path
) -> None:
    source = tmp_path / "alpha"
    make_source(source)
    first = Syncer(RepoRegistry(db), Mirrors.in_data_dir(tmp_path / "data"))
    repo = await first.add(str(source))
    # A second Mirrors shares only the files, like another process (worker, CLI) would.
    second = Syncer(RepoRegistry(db), Mirrors.in_data_dir(tmp_path / "data"))

    async with first.mirrors.lock("alpha").hold():
        blocked = asyncio.create_task(second.sync(repo))
        await asyncio.sleep(0.3)
        assert not blocked.done(), "a sync ran while another held the mirror's lock"
    assert (await blocked).ok

    for i in range(3):
        commit(source, f"f{i}", f"{i}\n", f"commit {i}")
    head = git(source, "rev-parse", "HEAD")
    outcomes = await asyncio.gather(*(s.sync(repo) for s in (first, second) * 3))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    mirror = first.mirrors.path("alpha")
    git(mirror, "fsck", "--strict", "--no-progress")
    assert git(mirror, "rev-parse", "main") == head
    assert not list((tmp_path / "data" / "repos" / ".tmp").iterdir())


# -- command line ------------------------------------------------------------------------------


@pytest.fixture
async def cli_env(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """A served offload and the environment `offload repos` reads to reach it as a site admin
    (the logging the commands reconfigure is put back after)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    async with served_site(db, db_url, tmp_path / "site") as site:
        yield {
            "OFFLOAD_URL": site.url,
            "OFFLOAD_TOKEN": site.tokens["admin"],
            "OFFLOAD_DATA_DIR": str(tmp_path / "cli"),
            "COLUMNS": "250",
        }
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_repos_commands_add_list_and_sync(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()

    async def invoke(*args: str) -> Result:
        # The command runs its own event loop; the server answers on this one.
        return await asyncio.to_thread(runner.invoke, repos_app, list(args), env=cli_env)

    commits = make_source(tmp_path / "alpha")
    make_source(tmp_path / "beta")

    added = await invoke("add", str(tmp_path / "alpha"))
    assert added.exit_code == 0, added.output
    assert "added alpha" in added.stdout
    assert "default branch: main" in added.stdout
    assert f"head commit:    {commits['second']}" in added.stdout
    added = await invoke("add", f"file://{tmp_path}/beta", "-n", "t/beta")
    assert added.exit_code == 0, added.output

    again = await invoke("add", str(tmp_path / "alpha"))
    assert again.exit_code == 2 and "'alpha' is already registered" in again.stderr
    bad = await invoke("add", str(tmp_path / "alpha"), "--name", "x/.y")
    assert bad.exit_code == 2 and "repository name 'x/.y' is not valid" in bad.stderr

    shutil.rmtree(tmp_path / "beta")
    new_head = commit(tmp_path / "alpha", "z", "z\n", "z")
    synced = await invoke("sync")
    assert synced.exit_code == 1
    assert "syncing every repository" in synced.stdout
    assert f"synced alpha: main at {new_head[:12]}" in synced.stdout
    assert "failed t/beta: git" in synced.stdout
    assert "1 of 3 repositories failed to sync: t/beta" in synced.stderr

    one = await invoke("sync", "alpha")
    assert one.exit_code == 0 and "syncing 1 repository" in one.stdout
    missing = await invoke("sync", "gamma")
    assert missing.exit_code == 2 and "no repository named 'gamma'" in missing.stderr

    listed = await invoke("list")
    assert listed.exit_code == 0, listed.output
    # Into a pipe: a header line, then one plain line per repository.
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "main" in rows["alpha"] and new_head[:12] in rows["alpha"]
    assert "never" in rows["t/beta"] or "UTC" in rows["t/beta"]
    assert "does not appear" in rows["t/beta"]  # its last error, on its own line

    removed = await invoke("remove", "t/beta")
    assert removed.exit_code == 0 and "removed t/beta" in removed.stdout
    assert not (tmp_path / "site" / "data" / "repos" / "t").exists()
    # The command line only talked to the server: it made no database of its own.
    assert not (tmp_path / "cli").exists()

    for command in (["add"], ["list"], ["sync"], ["remove"]):
        shown = await invoke(*command, "--help")
        assert shown.exit_code == 0 and "Example" in shown.stdout, command


# -- git smart-HTTP ------------------------------------------------------------------------------

ADMIN = "Authorization: Bearer admin"


def authorize(request: Request, repo: str) -> None:
    """Job tokens in miniature: `admin` reads anything, `job-<name>` reads <name> only."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    if token != "admin" and token != f"job-{repo}":
        raise HTTPException(403, f"this token may not read {repo}")


@dataclass
class Served:
    """The git base URL of the test server, the commits of `alpha`, and a home for clients."""

    url: str
    commits: dict[str, str]
    home: Path


@pytest.fixture
async def served(hosting: Syncer, tmp_path: Path) -> AsyncIterator[Served]:
    """Mirrors of `alpha` and `acme/beta` behind a real HTTP server on 127.0.0.1."""
    commits = make_source(tmp_path / "alpha")
    make_source(tmp_path / "beta")
    await hosting.add(str(tmp_path / "alpha"))
    await hosting.add(str(tmp_path / "beta"), name="acme/beta")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server, serving = await serve_git(hosting, sock)
    home = tmp_path / "clients"
    home.mkdir()
    yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}/.executors/git", commits, home)
    server.should_exit = True
    await asyncio.wait_for(serving, 10)
    sock.close()


async def serve_git(hosting: Syncer, sock: socket.socket) -> tuple[Server, asyncio.Task[None]]:
    """The git routes of `hosting` served on `sock`, once the server has started."""
    app = FastAPI()
    app.include_router(
        git_router(hosting.registry, hosting.mirrors, authorize=authorize),
        prefix="/.executors/git",
    )
    server = uvicorn_server(app, stop_timeout=1)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers no event to wait on.
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return server, serving


async def test_git_clones_over_http_with_protocol_v2_and_v0(served: Served) -> None:
    for version, marker in (("2", "git< version 2"), ("0", "git< # service=git-upload-pack")):
        target = served.home / f"clone-v{version}"
        ran = await agit(
            served.home,
            "-c",
            f"http.extraHeader={ADMIN}",
            "-c",
            f"protocol.version={version}",
            "clone",
            f"{served.url}/alpha",
            str(target),
            env={"GIT_TRACE_PACKET": "1", "GIT_TRACE_CURL": "1", "GIT_TRACE_CURL_NO_DATA": "1"},
        )
        assert ran.code == 0, ran.stderr
        assert marker in ran.stderr
        assert "Send header: Content-Encoding: gzip" in ran.stderr  # 41 tags make a big request
        assert (target / "src" / "app.py").read_text() == "print('v1')\n"
        assert git(target, "rev-parse", "HEAD") == served.commits["second"]
        assert "origin/feature" in git(target, "branch", "-r")
        assert len(git(target, "tag").split()) == 41
    nested = await agit(
        served.home, "-c", f"http.extraHeader={ADMIN}", "clone", f"{served.url}/acme/beta"
    )
    assert nested.code == 0, nested.stderr
    assert (served.home / "beta" / "docs" / "guide.md").is_file()


@pytest.mark.parametrize("version", ["2", "0"])
async def test_executor_style_shallow_fetch_of_one_commit(served: Served, version: str) -> None:
    workspace = served.home / "workspace"
    workspace.mkdir()
    first = served.commits["first"]  # not the tip of main: only reachable, never advertised
    await agit(workspace, "init", "-q")
    await agit(workspace, "remote", "add", "origin", f"{served.url}/alpha")
    fetched = await agit(
        workspace,
        "-c",
        "http.extraHeader=Authorization: Bearer job-alpha",
        "-c",
        f"protocol.version={version}",
        "fetch",
        "--depth=1",
        "origin",
        first,
    )
    assert fetched.code == 0, fetched.stderr
    assert (await agit(workspace, "checkout", "-q", first)).code == 0
    assert (workspace / "src" / "app.py").is_file()
    assert not (workspace / "docs").exists()
    assert git(workspace, "rev-list", "--count", "HEAD") == "1"  # shallow


async def test_sparse_checkout_fetches_only_the_blobs_it_needs(served: Served) -> None:
    target = served.home / "sparse"
    auth = ["-c", f"http.extraHeader={ADMIN}"]
    cloned = await agit(
        served.home,
        *auth,
        "clone",
        "--filter=blob:none",
        "--no-checkout",
        "--sparse",
        f"{served.url}/alpha",
        str(target),
    )
    assert cloned.code == 0, cloned.stderr
    assert (await agit(target, "sparse-checkout", "set", "src")).code == 0
    # Checking out fetches the missing blobs of src/ lazily, through the same endpoint.
    checked_out = await agit(target, *auth, "checkout", "-q", "main")
    assert checked_out.code == 0, checked_out.stderr
    assert (target / "src" / "app.py").read_text() == "print('v1')\n"
    assert not (target / "docs").exists()
    missing = git(target, "rev-list", "--objects", "--missing=print", "--all")
    assert any(line.startswith("?") for line in missing.splitlines()), "every blob was sent"


async def test_refusals_are_what_git_users_understand(served: Served) -> None:
    workspace = served.home / "w"
    refused = await agit(served.home, "clone", f"{served.url}/alpha", str(workspace))
    assert refused.code != 0 and "403" in refused.stderr
    assert "this token may not read alpha" in refused.stderr  # shown as `remote: ...`
    wrong_repo = await agit(
        served.home,
        "-c",
        "http.extraHeader=Authorization: Bearer job-alpha",
        "ls-remote",
        f"{served.url}/acme/beta",
    )
    assert wrong_repo.code != 0 and "403" in wrong_repo.stderr

    unknown = await agit(
        served.home, "-c", f"http.extraHeader={ADMIN}", "ls-remote", f"{served.url}/nope"
    )
    assert unknown.code != 0 and "not found" in unknown.stderr

    cloned = await agit(
        served.home, "-c", f"http.extraHeader={ADMIN}", "clone", f"{served.url}/alpha", "pusher"
    )
    assert cloned.code == 0, cloned.stderr
    pushed = await agit(
        served.home / "pusher",
        "-c",
        f"http.extraHeader={ADMIN}",
        "push",
        "origin",
        "HEAD:refs/heads/pushed",
    )
    assert pushed.code != 0 and "403" in pushed.stderr
    assert "read-only mirror" in pushed.stderr

    admin = {"Authorization": "Bearer admin"}
    upload_pack = {"service": "git-upload-pack"}
    async with httpx.AsyncClient(base_url=served.url, headers=admin) as c:
        assert (await c.get("/nope/info/refs", params=upload_pack)).status_code == 404
        assert (await c.get("/.git/info/refs", params=upload_pack)).status_code == 404
        dumb = await c.get("/alpha/info/refs")
        assert dumb.status_code == 403 and "smart-HTTP" in dumb.text
        assert (await c.post("/alpha/git-receive-pack", content=b"0000")).status_code == 403
        wrong_type = await c.post("/alpha/git-upload-pack", content=b"0000")
        assert wrong_type.status_code == 415


async def test_gzip_request_bodies_are_inflated(served: Served) -> None:
    request = (
        pkt_line("command=ls-refs\n") + b"0001" + pkt_line("ref-prefix refs/heads/\n") + b"0000"
    )
    headers = {
        "Authorization": "Bearer admin",
        "Content-Type": "application/x-git-upload-pack-request",
        "Git-Protocol": "version=2",
    }
    async with httpx.AsyncClient(base_url=served.url, headers=headers) as client:
        advertised = await client.get("/alpha/info/refs", params={"service": "git-upload-pack"})
        assert advertised.headers["content-type"] == "application/x-git-upload-pack-advertisement"
        assert advertised.content.startswith(b"000eversion 2\n")
        for body, extra in ((request, {}), (gzip.compress(request), {"Content-Encoding": "gzip"})):
            response = await client.post("/alpha/git-upload-pack", content=body, headers=extra)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-git-upload-pack-result"
            assert f"{served.commits['second']} refs/heads/main".encode() in response.content
            assert b"refs/heads/feature" in response.content
        broken = await client.post(
            "/alpha/git-upload-pack", content=b"not gzip", headers={"Content-Encoding": "gzip"}
        )
        assert broken.status_code == 400 and "not valid gzip" in broken.text


def upload_packs(mirror: Path) -> list[int]:
    """Pids of the upload-pack processes serving `mirror`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"upload-pack" in args and str(mirror).encode() in args:
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_client_that_goes_away_mid_pack_stops_its_upload_pack(
    served: Served, hosting: Syncer, tmp_path: Path
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    git(big, "init", "-q", "-b", "main")
    # Incompressible, and larger than every buffer between git and the client.
    (big / "blob").write_bytes(os.urandom(24 * 1024 * 1024))
    git(big, "add", "blob")
    git(big, "commit", "-q", "-m", "big")
    repo = await hosting.add(str(big))
    request = (
        pkt_line("command=fetch\n")
        + b"0001"
        + pkt_line(f"want {repo.head_commit}\n")
        + pkt_line("done\n")
        + b"0000"
    )
    headers = {
        "Authorization": "Bearer admin",
        "Content-Type": "application/x-git-upload-pack-request",
        "Git-Protocol": "version=2",
    }
    mirror = hosting.mirrors.path("big")
    async with (
        httpx.AsyncClient(base_url=served.url, headers=headers) as client,
        client.stream("POST", "/big/git-upload-pack", content=request) as response,
    ):
        assert response.status_code == 200
        await anext(response.aiter_raw())
        assert upload_packs(mirror), "upload-pack ended before the client stopped reading"
    async with asyncio.timeout(5):
        while upload_packs(mirror):  # noqa: ASYNC110 (processes offer nothing to wait on)
            await asyncio.sleep(0.05)


async def test_a_checkout_through_the_executor_proxy_waits_out_a_server_restart(
    hosting: Syncer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commits = make_source(tmp_path / "alpha")
    await hosting.add(str(tmp_path / "alpha"))
    # The server's port is known but nothing listens on it yet: connections are refused.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(base_url=base) as http:
        proxy = GitProxy(
            http, "alpha", {"Authorization": "Bearer job-alpha"}, retries=6, retry_delay=0.2
        )
        await proxy.start()
        home = tmp_path / "clients"
        home.mkdir()
        cloning = asyncio.create_task(agit(home, "clone", "-q", proxy.url, str(home / "alpha")))
        await asyncio.sleep(1.0)
        assert not cloning.done()
        server, serving = await serve_git(hosting, sock)
        ran = await cloning
        await proxy.close()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
    sock.close()
    assert ran.code == 0, ran.stderr
    assert git(home / "alpha", "rev-parse", "HEAD") == commits["second"]
    assert "git proxy for alpha: All connection attempts failed; retrying in 0.2s" in caplog.text


async def test_the_executor_proxy_gives_up_on_a_server_that_stays_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(base_url=base) as http:
        proxy = GitProxy(http, "alpha", {}, retries=3, retry_delay=0.05)
        await proxy.start()
        ran = await agit(tmp_path, "ls-remote", proxy.url)
        await proxy.close()
    sock.close()
    assert ran.code != 0
    assert "502" in ran.stderr
    assert caplog.text.count("retrying in") == 2
