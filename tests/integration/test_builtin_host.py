"""The built-in code host, with real git and real databases: commits, pushes, pulls, merges."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from offload.db.base import Database
from offload.repos.codehosts.base import (
    CodeHostError,
    PullRequestChanges,
    PullRequestDraft,
    PullRequestNotFound,
)
from offload.repos.codehosts.builtin import BuiltinHost
from offload.repos.commits import DiffDoesNotApply, MergeConflict, commit_diff, merge, push
from offload.repos.mirror import GitError, Mirrors
from offload.repos.pulls import (
    NotHosted,
    PullRequests,
    PullRequestStateError,
    PullRequestStore,
)
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer
from offload.testing import FakeClock

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BOT, BOT_EMAIL = "Batch Bot", "bot@example.com"


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


def git_bytes(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run git as a user of the repositories would (not through offload); its stdout."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(cwd.parent), input=stdin, capture_output=True
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.decode()}"
    return done.stdout


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    """Run git as a user of the repositories would; its stdout as text."""
    return git_bytes(cwd, *args, stdin=stdin).decode().strip()


def write(repo: Path, path: str, content: bytes | str) -> None:
    """Write `path` in the work tree of `repo`."""
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    target.write_bytes(content)


def commit_all(repo: Path, message: str) -> str:
    """Commit everything in the work tree of `repo`; the new commit."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_work(path: Path) -> str:
    """A repository whose main has text, binary, a name with a space and a file to delete."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write(path, "README.md", "# Project\n")
    write(path, "src/app.py", "print('v1')\n")
    write(path, "docs/old name.txt", "a file with a space in its name\n")
    write(path, "gone.txt", "to be deleted\n")
    write(path, "logo.bin", bytes(range(256)) * 4)
    return commit_all(path, "first")


def staged_diff(work: Path) -> bytes:
    """The change in `work`'s work tree, as offload's executors write it."""
    git(work, "add", "-A")
    return git_bytes(work, "diff", "--cached", "--no-prefix", "--binary")


def change_everything(work: Path) -> bytes:
    """Edit, add (binary and spaced names), rename and delete files; the staged diff."""
    write(work, "src/app.py", "print('v2')\n")
    write(work, "logo.bin", bytes(reversed(range(256))) * 4)
    write(work, "new dir/fresh file.txt", "new\n")
    write(work, "icon.bin", b"\x00\xff\x00binary\x01")
    git(work, "mv", "docs/old name.txt", "docs/new name.txt")
    git(work, "rm", "-q", "gone.txt")
    return staged_diff(work)


@dataclass
class Hosting:
    """A hosted repository `project` (a bare repository), its registration and its mirror."""

    bare: Path
    work: Path
    base: str
    registry: RepoRegistry
    mirrors: Mirrors
    store: PullRequestStore
    pulls: PullRequests
    host: BuiltinHost

    @property
    def mirror(self) -> Path:
        """The server's mirror of `project`."""
        return self.mirrors.path("project")

    async def propose(self, branch: str, edit: dict[str, str], *, base: str = "main") -> str:
        """Commit `edit` on `base` in the mirror and push it to `branch` of the hosted repo."""
        scratch = self.work.parent / f"scratch-{branch.replace('/', '-')}"
        if not scratch.exists():
            git(self.work.parent, "clone", "-q", str(self.bare), str(scratch))
        git(scratch, "fetch", "-q", "origin")
        git(scratch, "checkout", "-q", "--detach", f"origin/{base}")
        for path, content in edit.items():
            write(scratch, path, content)
        diff = staged_diff(scratch)
        git(scratch, "reset", "-q", "--hard")
        base_commit = git(self.bare, "rev-parse", base)
        await self.mirrors.sync("project", str(self.bare))
        commit = await commit_diff(
            self.mirror,
            base_rev=base_commit,
            diff=diff,
            message=f"change {branch}",
            author_name=BOT,
            author_email=BOT_EMAIL,
        )
        await push(self.mirror, commit, str(self.bare), branch)
        return commit


@pytest.fixture
async def hosting(db: Database, tmp_path: Path) -> Hosting:
    """`project` hosted from a bare repository in tmp_path, registered and mirrored."""
    work = tmp_path / "work"
    base = make_work(work)
    bare = tmp_path / "project.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    registry = RepoRegistry(db)
    mirrors = Mirrors.in_data_dir(tmp_path / "data")
    await Syncer(registry, mirrors).add(str(bare), name="project")
    store = PullRequestStore(db, FakeClock(WHEN))
    return Hosting(
        bare=bare,
        work=work,
        base=base,
        registry=registry,
        mirrors=mirrors,
        store=store,
        pulls=PullRequests(store, registry, mirrors),
        host=BuiltinHost(store, registry, mirrors),
    )


# commits: commit_diff, push, merge --------------------------------------------------------


async def test_commit_diff_gives_the_tree_a_work_tree_apply_gives(tmp_path: Path) -> None:
    work = tmp_path / "work"
    base = make_work(work)
    diff = change_everything(work)
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(work), str(mirror))

    made = await commit_diff(
        mirror,
        base_rev=base,
        diff=diff,
        message="Apply the change\n\nbody",
        author_name=BOT,
        author_email=BOT_EMAIL,
    )

    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(work), str(checkout))
    git(checkout, "checkout", "-q", base)
    git(checkout, "apply", "--index", "--binary", "-p0", stdin=diff)
    expected = commit_all(checkout, "by hand")
    assert git(mirror, "rev-parse", f"{made}^{{tree}}") == git(
        checkout, "rev-parse", f"{expected}^{{tree}}"
    )
    assert git(mirror, "rev-parse", f"{made}^") == base
    assert git(mirror, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%B", made) == (
        "Batch Bot <bot@example.com>|Batch Bot <bot@example.com>|Apply the change\n\nbody"
    )
    files = git(mirror, "ls-tree", "-r", "--name-only", made).splitlines()
    assert "docs/new name.txt" in files and "new dir/fresh file.txt" in files
    assert "docs/old name.txt" not in files and "gone.txt" not in files
    assert git_bytes(mirror, "cat-file", "blob", f"{made}:icon.bin") == b"\x00\xff\x00binary\x01"
    # Only objects were written: no ref of the mirror moved.
    assert git(mirror, "rev-parse", "main") == base


async def test_commit_diff_with_a_fixed_time_is_idempotent(tmp_path: Path) -> None:
    work = tmp_path / "work"
    base = make_work(work)
    diff = change_everything(work)
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(work), str(mirror))

    async def make(when: datetime) -> str:
        return await commit_diff(
            mirror,
            base_rev=base,
            diff=diff,
            message="same",
            when=when,
            author_name=BOT,
            author_email=BOT_EMAIL,
        )

    first, again, later = await make(WHEN), await make(WHEN), await make(WHEN.replace(hour=13))

    assert first == again != later
    stamp = str(int(WHEN.timestamp()))
    assert git(mirror, "log", "-1", "--format=%at %ct", first) == f"{stamp} {stamp}"


async def test_a_diff_that_does_not_apply_names_the_repository_and_base(tmp_path: Path) -> None:
    work = tmp_path / "work"
    make_work(work)
    write(work, "src/app.py", "print('v2')\n")
    diff = staged_diff(work)
    moved_on = commit_all(work, "v2")  # the diff's old lines are gone from this commit
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(work), str(mirror))

    with pytest.raises(DiffDoesNotApply) as failed:
        await commit_diff(
            mirror,
            base_rev=moved_on,
            diff=diff,
            message="x",
            author_name=BOT,
            author_email=BOT_EMAIL,
        )

    message = str(failed.value)
    assert str(mirror) in message and moved_on[:12] in message and "src/app.py" in message
    with pytest.raises(GitError, match="is not a commit"):
        await commit_diff(
            mirror,
            base_rev="no-such-branch",
            diff=diff,
            message="x",
            author_name=BOT,
            author_email=BOT_EMAIL,
        )


async def test_push_creates_and_moves_a_branch_of_a_local_bare_repository(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    base = make_work(work)
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(work), str(mirror))
    target = tmp_path / "target.git"
    git(tmp_path, "init", "-q", "--bare", str(target))
    diff = change_everything(work)
    first = await commit_diff(
        mirror, base_rev=base, diff=diff, message="one", author_name=BOT, author_email=BOT_EMAIL
    )
    second = await commit_diff(
        mirror, base_rev=base, diff=diff, message="two", author_name=BOT, author_email=BOT_EMAIL
    )

    await push(mirror, first, str(target), "offload/change")
    assert git(target, "rev-parse", "refs/heads/offload/change") == first
    await push(mirror, second, str(target), "offload/change")  # forced: replaces the branch
    assert git(target, "rev-parse", "refs/heads/offload/change") == second
    with pytest.raises(GitError, match="rejected"):
        await push(mirror, first, str(target), "offload/change", force=False)
    with pytest.raises(ValueError, match="not a valid branch name"):
        await push(mirror, first, str(target), "bad..name")


async def test_a_failed_push_does_not_show_the_credentials_in_its_url(tmp_path: Path) -> None:
    work = tmp_path / "work"
    base = make_work(work)
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(work), str(mirror))

    with pytest.raises(GitError) as failed:
        await push(mirror, base, "http://bot:s3cret-token@127.0.0.1:9/project.git", "x")

    assert "s3cret-token" not in str(failed.value)
    assert "s3cret-token" not in failed.value.stderr


async def test_merge_in_a_work_tree_repository_refuses_its_checked_out_branch(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    base = make_work(work)
    git(work, "checkout", "-q", "-b", "feature")
    write(work, "src/app.py", "print('feature')\n")
    head = commit_all(work, "feature")
    git(work, "checkout", "-q", "main")

    with pytest.raises(GitError, match="checked out in the work tree"):
        await merge(
            work,
            base_ref="main",
            head_ref="feature",
            message="m",
            author_name=BOT,
            author_email=BOT_EMAIL,
        )
    assert git(work, "rev-parse", "main") == base

    git(work, "checkout", "-q", "feature")
    merged = await merge(
        work,
        base_ref="main",
        head_ref="feature",
        message="m",
        author_name=BOT,
        author_email=BOT_EMAIL,
    )
    assert git(work, "rev-parse", "main") == merged
    assert git(work, "rev-parse", f"{merged}^1", f"{merged}^2").split() == [base, head]
    # Merging again changes nothing: head is already in base.
    assert (
        await merge(
            work,
            base_ref="main",
            head_ref="feature",
            message="m",
            author_name=BOT,
            author_email=BOT_EMAIL,
        )
        == merged
    )


# pull requests through the built-in host ----------------------------------------------------


async def test_open_get_update_close_and_reopen(hosting: Hosting) -> None:
    host = hosting.host
    await hosting.propose("offload/one", {"src/app.py": "print('one')\n"})
    draft = PullRequestDraft("project", "main", "offload/one", "One", "the body")

    opened = await host.open(draft)
    assert (opened.external_id, opened.state, opened.title, opened.body) == (
        "1",
        "open",
        "One",
        "the body",
    )
    assert opened.url == "offload://project/pulls/1"
    assert (opened.review_state, opened.checks_state) == (None, None)
    assert host.kind == "builtin"
    assert await host.open(draft) == opened  # not a second one
    assert await host.get("project", "1") == opened

    changed = await host.update(
        "project", "1", PullRequestChanges(title="One, better", body="new body", draft=True)
    )
    assert (changed.title, changed.body, changed.state) == ("One, better", "new body", "draft")
    ready = await host.update("project", "1", PullRequestChanges(draft=False))
    assert ready.state == "open"

    closed = await host.close("project", "1")
    assert closed.state == "closed"
    assert await host.close("project", "1") == closed
    assert await host.get("project", "1") == closed
    with pytest.raises(CodeHostError, match="reopen it"):
        await host.update("project", "1", PullRequestChanges(draft=True))
    reopened = await host.update("project", "1", PullRequestChanges(reopen=True))
    assert reopened.state == "open"

    stored = await hosting.store.list("project")
    assert [(pr.number, pr.state, pr.title) for pr in stored] == [(1, "open", "One, better")]


async def test_drafts_and_unknown_pull_requests(hosting: Hosting) -> None:
    host = hosting.host
    await hosting.propose("offload/two", {"src/app.py": "print('two')\n"})
    draft = await host.open(PullRequestDraft("project", "main", "offload/two", "Two", draft=True))
    assert (draft.external_id, draft.state) == ("1", "draft")

    with pytest.raises(PullRequestNotFound, match="no pull request #7"):
        await host.get("project", "7")
    with pytest.raises(PullRequestNotFound):
        await host.get("project", "abc")
    with pytest.raises(PullRequestNotFound, match="no repository named 'elsewhere'"):
        await host.open(PullRequestDraft("elsewhere", "main", "offload/two", "Two"))
    with pytest.raises(CodeHostError, match="has no branch 'offload/missing'"):
        await host.open(PullRequestDraft("project", "main", "offload/missing", "Three"))
    with pytest.raises(CodeHostError, match="has no branch 'nope'"):
        await host.update("project", "1", PullRequestChanges(base_ref="nope"))


async def test_push_url_is_the_hosted_path_and_url_sources_are_not_hosted(
    hosting: Hosting, tmp_path: Path
) -> None:
    assert hosting.host.push_url("project") == str(hosting.bare)

    # A file:// URL is a URL: offload mirrors it but does not host its pull requests.
    await Syncer(hosting.registry, hosting.mirrors).add(f"file://{hosting.bare}", name="remote")
    with pytest.raises(NotHosted, match="is mirrored from file://"):
        hosting.host.push_url("remote")
    with pytest.raises(NotHosted, match="its pull requests live on that host"):
        await hosting.host.open(PullRequestDraft("remote", "main", "x", "y"))
    with pytest.raises(NotHosted, match="repository remote is mirrored from"):
        await hosting.pulls.merge("remote", 1)
    with pytest.raises(CodeHostError, match="has no mirror"):
        hosting.host.push_url("never-registered")


async def test_merge_updates_the_hosted_base_and_resyncs_the_mirror(hosting: Hosting) -> None:
    head = await hosting.propose("offload/change", {"src/app.py": "print('merged')\n"})
    opened = await hosting.host.open(
        PullRequestDraft("project", "main", "offload/change", "Change it")
    )

    merged = await hosting.pulls.merge("project", int(opened.external_id))

    new_main = git(hosting.bare, "rev-parse", "main")
    assert merged.state == "merged" and merged.merge_commit == new_main
    assert git(hosting.bare, "rev-parse", f"{new_main}^1", f"{new_main}^2").split() == [
        hosting.base,
        head,
    ]
    assert git(hosting.bare, "show", "main:src/app.py") == "print('merged')"
    assert "Merge pull request #1 from offload/change" in git(
        hosting.bare, "log", "-1", "--format=%B", "main"
    )
    assert git(hosting.mirror, "rev-parse", "main") == new_main
    repo = await hosting.registry.require("project")
    assert repo.head_commit == new_main and repo.last_error is None
    assert (await hosting.host.get("project", "1")).state == "merged"

    with pytest.raises(PullRequestStateError, match="already merged"):
        await hosting.pulls.merge("project", 1)
    with pytest.raises(CodeHostError, match="merged and cannot be reopened"):
        await hosting.host.update("project", "1", PullRequestChanges(reopen=True))
    assert (await hosting.host.close("project", "1")).state == "merged"


async def test_a_conflicting_merge_names_the_path_and_changes_nothing(hosting: Hosting) -> None:
    await hosting.propose("offload/a", {"src/app.py": "print('a')\n"})
    await hosting.propose("offload/b", {"src/app.py": "print('b')\n", "b.txt": "b\n"})
    first = await hosting.host.open(PullRequestDraft("project", "main", "offload/a", "A"))
    second = await hosting.host.open(PullRequestDraft("project", "main", "offload/b", "B"))
    await hosting.pulls.merge("project", int(first.external_id))
    main_before = git(hosting.bare, "rev-parse", "main")

    with pytest.raises(MergeConflict) as conflict:
        await hosting.pulls.merge("project", int(second.external_id))

    assert conflict.value.paths == ("src/app.py",)
    assert "src/app.py" in str(conflict.value) and "offload/b" in str(conflict.value)
    assert git(hosting.bare, "rev-parse", "main") == main_before
    assert (await hosting.host.get("project", second.external_id)).state == "open"


async def test_a_base_checked_out_in_a_work_tree_is_not_merged_into(hosting: Hosting) -> None:
    await Syncer(hosting.registry, hosting.mirrors).add(str(hosting.work), name="worktree")
    git(hosting.work, "branch", "feature")
    opened = await hosting.host.open(PullRequestDraft("worktree", "main", "feature", "F"))
    git(hosting.work, "checkout", "-q", "feature")
    write(hosting.work, "src/app.py", "print('feature')\n")
    commit_all(hosting.work, "feature")
    git(hosting.work, "checkout", "-q", "main")

    with pytest.raises(CodeHostError, match="checked out in the work tree"):
        await hosting.pulls.merge("worktree", int(opened.external_id))

    assert git(hosting.work, "rev-parse", "main") == hosting.base
    assert (await hosting.host.get("worktree", opened.external_id)).state == "open"


async def test_drafts_and_closed_pull_requests_are_not_merged(hosting: Hosting) -> None:
    await hosting.propose("offload/d", {"src/app.py": "print('d')\n"})
    opened = await hosting.host.open(
        PullRequestDraft("project", "main", "offload/d", "D", draft=True)
    )

    with pytest.raises(PullRequestStateError, match="is a draft: mark it ready"):
        await hosting.pulls.merge("project", 1)
    await hosting.host.update("project", opened.external_id, PullRequestChanges(draft=False))
    await hosting.pulls.close("project", 1)
    with pytest.raises(PullRequestStateError, match="is closed: reopen it"):
        await hosting.pulls.merge("project", 1)
    with pytest.raises(PullRequestNotFound, match="no pull request #2"):
        await hosting.pulls.merge("project", 2)
    assert git(hosting.bare, "rev-parse", "main") == hosting.base


async def test_concurrent_creates_get_distinct_numbers(hosting: Hosting) -> None:
    created = await asyncio.gather(
        *(
            hosting.store.create("project", title=f"PR {i}", base_ref="main", head_ref=f"b{i}")
            for i in range(12)
        )
    )
    assert sorted(pr.number for pr in created) == list(range(1, 13))

    await hosting.propose("offload/same", {"src/app.py": "print('same')\n"})
    draft = PullRequestDraft("project", "main", "offload/same", "Same")
    opened = await asyncio.gather(*(hosting.host.open(draft) for _ in range(6)))
    assert {pr.external_id for pr in opened} == {"13"}
    assert len(await hosting.store.list("project", "open")) == 13
