"""Changeset specs: a workspace's diff and outputs become changesets as Sourcegraph builds them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from offload.batches.changeset_spec import (
    ChangesetDraft,
    ChangesetSpecError,
    ImportDraft,
    WorkspaceResult,
    branch_problem,
    build_changesets,
    import_drafts,
    published_for,
    template_context,
)
from offload.batches.diffs import ChangedFiles, changed_files, parse_diff
from offload.batches.spec.model import Author, BatchSpec, Published, PublishedRule
from offload.batches.spec.reader import parse_spec

DEFAULT_AUTHOR = Author(name="alice", email="batch-changes@offload.local")
REPO = "github.com/acme/api"

# A git that reads no user or system configuration, so every machine writes the same diff.
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(repo: Path, *args: str) -> bytes:
    """Run git in repo; its standard output."""
    done = subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, check=True)
    return done.stdout


@pytest.fixture
def make_diff(tmp_path: Path) -> Any:
    """A factory: the staged diff that turns the files `before` into the files `after`."""
    count = 0

    def make(before: dict[str, str], after: dict[str, str]) -> bytes:
        nonlocal count
        count += 1
        repo = tmp_path / f"repo{count}"
        repo.mkdir()
        git(repo, "init", "-q")
        for files in (before, after):
            for path in repo.rglob("*"):
                if path.is_file() and ".git" not in path.relative_to(repo).parts:
                    path.unlink()
            for name, text in files.items():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                (repo / name).write_text(text)
            git(repo, "add", "-A")
            if files is before:
                git(repo, "commit", "-q", "--allow-empty", "-m", "before")
        return git(repo, "diff", "--cached", "--no-prefix", "--binary")

    return make


def spec_of(changeset_template: str, extra: str = "") -> BatchSpec:
    """A batch spec with one step and this changesetTemplate (indented YAML under it)."""
    text = (
        "name: hello-world\n"
        "description: Say hello\n"
        "on:\n  - repository: github.com/acme/api\n"
        "steps:\n  - run: echo hi >> README.md\n    container: alpine:3\n"
        f"{extra}"
        "changesetTemplate:\n"
        f"{changeset_template}"
    )
    return parse_spec(text)


SIMPLE = "  title: Hello\n  branch: hello\n  commit:\n    message: Say hello\n"


def result_of(diff: bytes, **overrides: Any) -> WorkspaceResult:
    """A workspace result for REPO on main with this diff and the files it changes."""
    values: dict[str, Any] = {
        "repo_name": REPO,
        "base_ref": "refs/heads/main",
        "base_rev": "a" * 40,
        "path": "",
        "diff": diff,
        "outputs": {},
        "changed": changed_files(parse_diff(diff)),
        "search_result_paths": (),
    }
    values.update(overrides)
    return WorkspaceResult(**values)


def build(spec: BatchSpec, result: WorkspaceResult) -> list[ChangesetDraft]:
    return build_changesets(spec, result, default_author=DEFAULT_AUTHOR)


def test_a_simple_changeset(make_diff: Any) -> None:
    diff = make_diff({"README.md": "hi\n"}, {"README.md": "hi\nhello\n", "NEW": "x\ny\n"})
    [draft] = build(spec_of(SIMPLE), result_of(diff))
    assert draft == ChangesetDraft(
        repo_name=REPO,
        base_ref="main",
        base_rev="a" * 40,
        head_ref="hello",
        title="Hello",
        body="",
        commit_message="Say hello",
        author_name="alice",
        author_email="batch-changes@offload.local",
        published=None,
        diff=diff,
        diff_added=3,
        diff_deleted=0,
    )


def test_every_name_of_the_template_context(make_diff: Any) -> None:
    diff = make_diff(
        {"services/api/go.mod": "a\n", "services/api/old.go": "o\n", "services/api/x": "x\n"},
        {"services/api/go.mod": "b\n", "services/api/new.go": "n\n", "services/api/y.go": "o\n"},
    )
    template = (
        "  title: ${{ repository.name }} on ${{ repository.branch }}\n"
        "  body: |\n"
        "    paths=${{ repository.search_result_paths }}\n"
        "    change=${{ batch_change.name }}/${{ batch_change.description }}\n"
        "    out=${{ outputs.version }} ${{ .outputs.list }}\n"
        '    m=${{ join steps.modified_files "," }} a=${{ join steps.added_files "," }}\n'
        '    d=${{ join steps.deleted_files "," }} r=${{ join steps.renamed_files "," }}\n'
        "    path=${{ steps.path }} prev=${{ previous_step.stdout }}\n"
        '  branch: batch/${{ replace repository.name "/" "-" }}\n'
        "  commit:\n"
        "    message: ${{ batch_change.name }} in ${{ steps.path }}\n"
    )
    result = result_of(
        diff,
        path="services/api",
        outputs={"version": "1.2.3", "list": ["a", "b"]},
        changed=ChangedFiles(
            modified=("services/api/go.mod",),
            added=("services/api/new.go",),
            deleted=("services/api/x",),
            renamed=("services/api/y.go",),
        ),
        search_result_paths=("services/api/z.go", "services/api/go.mod", "services/api/z.go"),
    )
    [draft] = build(spec_of(template), result)
    assert draft.title == "github.com/acme/api on main"
    assert draft.body == (
        "paths=services/api/go.mod services/api/z.go\n"
        "change=hello-world/Say hello\n"
        "out=1.2.3 [a b]\n"
        "m=services/api/go.mod a=services/api/new.go\n"
        "d=services/api/x r=services/api/y.go\n"
        # No step context for changeset templates: previous_step is an empty map.
        "path=services/api prev=<no value>"
    )
    assert draft.head_ref == "batch/github.com-acme-api"
    assert draft.commit_message == "hello-world in services/api"
    assert template_context(spec_of(template), result)["steps"]["path"] == "services/api"


def test_rendered_fields_are_trimmed_as_go_trims(make_diff: Any) -> None:
    diff = make_diff({}, {"a": "a\n"})
    template = (
        '  title: "  ${{ outputs.t }}\\u00a0\\n"\n'
        "  body: |\n\n    Body\n\n"
        "  branch: |\n    ${{ outputs.b }}\n"
        "  commit:\n    message: |\n      Subject\n\n      Details\n"
        "    author:\n      name: '  ${{ outputs.who }} '\n      email: \" bot@acme.dev\\t\"\n"
    )
    result = result_of(diff, outputs={"t": "Title\x1c", "b": "  feature  ", "who": "Bot"})
    [draft] = build(spec_of(template), result)
    # Go's TrimSpace strips U+00A0 but not U+001C, which Python's str.strip() would.
    assert draft.title == "Title\x1c"
    assert draft.body == "Body"
    assert draft.head_ref == "feature"
    assert draft.commit_message == "Subject\n\nDetails"
    assert (draft.author_name, draft.author_email) == ("Bot", "bot@acme.dev")


def test_author_defaults_unless_the_template_names_one(make_diff: Any) -> None:
    diff = make_diff({}, {"a": "a\n"})
    [default] = build(spec_of(SIMPLE), result_of(diff))
    assert (default.author_name, default.author_email) == ("alice", "batch-changes@offload.local")
    named = SIMPLE + "    author:\n      name: ${{ batch_change.name }}-bot\n      email: b@x.y\n"
    [draft] = build(spec_of(named), result_of(diff))
    assert (draft.author_name, draft.author_email) == ("hello-world-bot", "b@x.y")


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("true", True),
        ("false", False),
        ("draft", "draft"),
        # The last matching rule wins, as overridable.rules.Match does.
        ('\n    - "github.com/*": true\n    - "github.com/acme/*": draft', "draft"),
        ('\n    - "github.com/acme/*": draft\n    - "github.com/*": false', False),
        ('\n    - "github.com/acme/*": true\n    - "gitlab.com/*": false', True),
        ('\n    - "gitlab.com/*": true', None),
        # A rule may be limited to changesets on one branch with "@branch".
        ('\n    - "github.com/*": true\n    - "github.com/acme/*@hello": draft', "draft"),
        ('\n    - "github.com/*": true\n    - "github.com/acme/*@other": draft', True),
        # A glob's `*` crosses slashes, as gobwas/glob without separators does.
        ('\n    - "*api": false', False),
    ],
)
def test_published(make_diff: Any, published: str, expected: object) -> None:
    diff = make_diff({}, {"a": "a\n"})
    [draft] = build(spec_of(SIMPLE + f"  published: {published}\n"), result_of(diff))
    assert draft.published == expected


def test_published_unset_and_direct() -> None:
    assert published_for(None, REPO, "b") is None
    rules = Published(rules=(PublishedRule("github.com/*", True),))
    assert published_for(rules, REPO, "b") is True
    assert published_for(rules, "gitlab.com/x", "b") is None


def test_empty_diff_gives_no_changeset() -> None:
    assert build(spec_of(SIMPLE), result_of(b"")) == []
    # Even when the template could not render: with no changes there is nothing to render.
    broken = SIMPLE.replace("Hello", "${{ outputs.x.y.z }}")
    assert build(spec_of(broken), result_of(b"", outputs={"x": "s"})) == []


GROUPS = """\
transformChanges:
  group:
    - directory: client
      branch: hello-client
    - directory: client/web
      branch: hello-web
    - directory: monitoring
      branch: hello-monitoring
      repository: github.com/acme/other
"""


def test_groups_split_the_diff_into_changesets(make_diff: Any) -> None:
    diff = make_diff(
        {"client/web/a.ts": "a\n", "client/b.ts": "b\n"},
        {
            "client/web/a.ts": "a\nA\n",
            "client/b.ts": "b\nB\nBB\n",
            "monitoring/m.yaml": "m\n",
            "README.md": "r\n",
        },
    )
    drafts = build(spec_of(SIMPLE, GROUPS), result_of(diff))
    files = {d.head_ref: [f.path for f in parse_diff(d.diff)] for d in drafts}
    # Nested directories: the group listed last wins; monitoring's group is another repository's.
    assert files == {
        "hello": ["README.md", "monitoring/m.yaml"],
        "hello-client": ["client/b.ts"],
        "hello-web": ["client/web/a.ts"],
    }
    counts = {d.head_ref: (d.diff_added, d.diff_deleted) for d in drafts}
    assert counts == {"hello": (2, 0), "hello-client": (2, 0), "hello-web": (1, 0)}
    assert {d.title for d in drafts} == {"Hello"}
    assert b"".join(d.diff for d in drafts).count(b"diff --git ") == 4


def test_group_order_decides_nested_directories(make_diff: Any) -> None:
    diff = make_diff({}, {"client/web/a.ts": "a\n", "client/b.ts": "b\n"})
    reversed_groups = (
        "transformChanges:\n  group:\n"
        "    - {directory: client/web, branch: hello-web}\n"
        "    - {directory: client, branch: hello-client}\n"
    )
    drafts = build(spec_of(SIMPLE, reversed_groups), result_of(diff))
    # The outer directory is listed last, so it takes the nested files too; the default
    # changeset and the inner group are left without files and are not produced.
    assert [(d.head_ref, len(parse_diff(d.diff))) for d in drafts] == [("hello-client", 2)]


def test_group_directory_matches_anywhere_in_the_path(make_diff: Any) -> None:
    diff = make_diff({}, {"src/docs/a.md": "a\n", "docsite/b.md": "b\n", "c.md": "c\n"})
    groups = "transformChanges:\n  group:\n    - {directory: docs, branch: hello-docs}\n"
    drafts = build(spec_of(SIMPLE, groups), result_of(diff))
    # Sourcegraph's groupFileDiffs tests strings.Contains(path, directory), not a prefix.
    files = {d.head_ref: sorted(f.path for f in parse_diff(d.diff)) for d in drafts}
    assert files == {"hello": ["c.md"], "hello-docs": ["docsite/b.md", "src/docs/a.md"]}


def test_repository_restricted_group_applies_to_its_repository(make_diff: Any) -> None:
    diff = make_diff({}, {"monitoring/m.yaml": "m\n", "x": "x\n"})
    drafts = build(spec_of(SIMPLE, GROUPS), result_of(diff, repo_name="github.com/acme/other"))
    assert sorted(d.head_ref for d in drafts) == ["hello", "hello-monitoring"]
    assert {d.repo_name for d in drafts} == {"github.com/acme/other"}


def test_groups_need_distinct_branches(make_diff: Any) -> None:
    diff = make_diff({}, {"a/x": "x\n"})
    twice = (
        "transformChanges:\n  group:\n"
        "    - {directory: a, branch: same}\n    - {directory: b, branch: same}\n"
    )
    with pytest.raises(ChangesetSpecError, match=r"github.com/acme/api.*same branch 'same'"):
        build(spec_of(SIMPLE, twice), result_of(diff))
    clash = "transformChanges:\n  group:\n    - {directory: a, branch: hello}\n"
    with pytest.raises(ChangesetSpecError, match="same branch 'hello'"):
        build(spec_of(SIMPLE, clash), result_of(diff))


def test_an_invalid_rendered_branch_names_repository_and_branch(make_diff: Any) -> None:
    diff = make_diff({}, {"a": "a\n"})
    template = SIMPLE.replace("branch: hello", "branch: fix ${{ outputs.name }}")
    with pytest.raises(ChangesetSpecError) as caught:
        build(spec_of(template), result_of(diff, outputs={"name": "it..now"}))
    message = str(caught.value)
    assert "github.com/acme/api" in message
    assert "'fix it..now'" in message
    assert "changesetTemplate.branch" in message


def test_refs_heads_prefix_is_removed_from_branches(make_diff: Any) -> None:
    diff = make_diff({}, {"a": "a\n"})
    template = SIMPLE.replace("branch: hello", "branch: refs/heads/hello")
    [draft] = build(spec_of(template), result_of(diff, base_ref="main"))
    assert (draft.base_ref, draft.head_ref) == ("main", "hello")


def test_template_errors_name_field_and_repository(make_diff: Any) -> None:
    diff = make_diff({}, {"a": "a\n"})
    template = SIMPLE.replace("title: Hello", "title: ${{ outputs.x.y }}")
    with pytest.raises(ChangesetSpecError) as caught:
        build(spec_of(template), result_of(diff, outputs={"x": 3}))
    message = str(caught.value)
    assert "changesetTemplate.title" in message
    assert "github.com/acme/api" in message
    assert "can't evaluate field y" in message


def test_changes_without_a_changeset_template_are_an_error(make_diff: Any) -> None:
    diff = make_diff({}, {"a": "a\n"})
    spec = parse_spec("name: x\nimportChangesets:\n  - repository: a\n    externalIDs: [1]\n")
    with pytest.raises(ChangesetSpecError, match="no changesetTemplate"):
        build(spec, result_of(diff))


BRANCHES = [
    "main",
    "feature/x-1",
    "batch/github.com-acme-api",
    "a.b",
    "\u00fcber",
    "fix it",
    "a..b",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[1]",
    "a\\b",
    "a\tb",
    "a\x7fb",
    ".hidden",
    "a/.b",
    "x.lock",
    "a/b.lock/c",
    "a/",
    "/a",
    "a//b",
    "a.",
    "a@{b",
    "-x",
    "a@b",
]


@pytest.mark.parametrize("name", BRANCHES)
def test_branch_problem_agrees_with_git(tmp_path: Path, name: str) -> None:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name],
        cwd=tmp_path,
        env=GIT_ENV,
        capture_output=True,
    )
    assert (branch_problem(name) is None) == (done.returncode == 0), branch_problem(name)


def test_branch_problem_rejects_names_that_mean_head() -> None:
    assert branch_problem("") == "it is empty"
    # `git branch HEAD` fails; git accepts a branch "@", but most commands read it as HEAD.
    assert branch_problem("HEAD") is not None
    assert branch_problem("@") is not None


def test_import_drafts() -> None:
    spec = parse_spec(
        "name: x\nimportChangesets:\n"
        '  - repository: github.com/acme/api\n    externalIDs: [13323, "13328"]\n'
        "  - repository: github.com/acme/web\n    externalIDs: [7]\n"
    )
    assert import_drafts(spec) == [
        ImportDraft("github.com/acme/api", "13323"),
        ImportDraft("github.com/acme/api", "13328"),
        ImportDraft("github.com/acme/web", "7"),
    ]
    assert import_drafts(spec_of(SIMPLE)) == []
