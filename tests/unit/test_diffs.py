"""Diffs as git writes them: split per file, counted, and joined back byte for byte."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.batches.diffs import (
    ChangedFiles,
    DiffError,
    DiffStat,
    FileDiff,
    changed_files,
    join_diff,
    parse_diff,
    stat,
)

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

Tree = dict[str, bytes]


def git(repo: Path, *args: str) -> bytes:
    """Run git in repo; its standard output."""
    done = subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, check=True)
    return done.stdout


def write_tree(repo: Path, files: Tree) -> None:
    """Make the work tree hold exactly these files."""
    for path in repo.rglob("*"):
        if path.is_file() and ".git" not in path.relative_to(repo).parts:
            path.unlink()
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def staged_diff(repo: Path, before: Tree, after: Tree, *config: str) -> bytes:
    """The diff git gives from before to after, as the executor takes it."""
    repo.mkdir(exist_ok=True)
    git(repo, "init", "-q")
    write_tree(repo, before)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "before")
    write_tree(repo, after)
    git(repo, "add", "-A")
    options = [arg for pair in config for arg in ("-c", pair)]
    return git(repo, *options, "diff", "--cached", "--no-prefix", "--binary")


def by_path(files: list[FileDiff]) -> dict[str, FileDiff]:
    """The file diffs by their path."""
    return {f.path: f for f in files}


BEFORE: Tree = {
    "README.md": b"# hello\nworld\n",
    "go.mod": b"module x\n",
    "old name.txt": b"one\ntwo\nthree\nfour\nfive\n",
    "run.sh": b"#!/bin/sh\necho hi\n",
    "docs/guide.md": b"line 1\nline 2\nline 3\n",
}
AFTER: Tree = {
    "README.md": b"# hello\nthere\nworld\n",
    "new name.txt": b"one\ntwo\nthree\nfour\nfive\n",
    "run.sh": b"#!/bin/sh\necho hi\n",
    "docs/guide.md": b"line 1\nline 3\n",
    "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
    "with space.txt": b"spaced\n",
    "caf\u00e9/\u00fcber.txt": "gr\u00fc\u00dfe\n".encode(),
    "empty": b"",
}


@pytest.fixture
def full(tmp_path: Path) -> tuple[bytes, list[FileDiff]]:
    staged_diff(tmp_path, BEFORE, AFTER)
    (tmp_path / "run.sh").chmod(0o755)
    git(tmp_path, "add", "-A")
    diff = git(tmp_path, "diff", "--cached", "--no-prefix", "--binary")
    return diff, parse_diff(diff)


def test_every_kind_of_change_is_parsed(full: tuple[bytes, list[FileDiff]]) -> None:
    _, files = full
    got = {
        f.path: (f.old_path, f.new_path, f.status, f.added, f.deleted, f.is_binary) for f in files
    }
    assert got == {
        "README.md": ("README.md", "README.md", "modified", 1, 0, False),
        "go.mod": ("go.mod", None, "deleted", 0, 1, False),
        "new name.txt": ("old name.txt", "new name.txt", "renamed", 0, 0, False),
        "run.sh": ("run.sh", "run.sh", "mode", 0, 0, False),
        "docs/guide.md": ("docs/guide.md", "docs/guide.md", "modified", 0, 1, False),
        "logo.png": (None, "logo.png", "added", 0, 0, True),
        "with space.txt": (None, "with space.txt", "added", 1, 0, False),
        "caf\u00e9/\u00fcber.txt": (None, "caf\u00e9/\u00fcber.txt", "added", 1, 0, False),
        "empty": (None, "empty", "added", 0, 0, False),
    }


def test_parse_then_join_gives_back_the_same_bytes(full: tuple[bytes, list[FileDiff]]) -> None:
    diff, files = full
    assert join_diff(files) == diff
    assert all(f.raw.startswith(b"diff --git ") for f in files)
    # Any subset joins to the sections in order, as splitting a diff into changesets needs.
    assert parse_diff(join_diff(files[1::2])) == files[1::2]


def test_stat_and_changed_files(full: tuple[bytes, list[FileDiff]]) -> None:
    _, files = full
    assert stat(files) == DiffStat(added=3, deleted=2, files=9)
    assert stat([]) == DiffStat()
    changed = changed_files(files)
    assert sorted(changed.modified) == ["README.md", "docs/guide.md", "run.sh"]
    assert sorted(changed.added) == [
        "caf\u00e9/\u00fcber.txt",
        "empty",
        "logo.png",
        "with space.txt",
    ]
    assert changed.deleted == ("go.mod",)
    assert changed.renamed == ("new name.txt",)


def test_hunk_lines_that_look_like_headers_are_counted(tmp_path: Path) -> None:
    before = {"q.sql": b"-- a comment\n++ not a header\nselect 1;\n"}
    after = {"q.sql": b"+++ added\n--- added too\nselect 1;\n"}
    diff = staged_diff(tmp_path, before, after)
    [f] = parse_diff(diff)
    assert (f.path, f.added, f.deleted) == ("q.sql", 2, 2)


def test_rename_with_edits_and_spaces_in_both_names(tmp_path: Path) -> None:
    text = b"".join(b"line %d\n" % i for i in range(20))
    diff = staged_diff(tmp_path, {"a dir/old one.txt": text}, {"b dir/new one.txt": text + b"x\n"})
    [f] = parse_diff(diff)
    assert (f.old_path, f.new_path, f.status) == (
        "a dir/old one.txt",
        "b dir/new one.txt",
        "renamed",
    )
    assert (f.added, f.deleted) == (1, 0)


def test_unquoted_non_ascii_names(tmp_path: Path) -> None:
    name = "\u65e5\u672c/\u00e9 t\u00e9.txt"
    diff = staged_diff(tmp_path, {}, {name: b"x\n"}, "core.quotePath=false")
    assert name.encode() in diff.split(b"\n")[0]
    [f] = parse_diff(diff)
    assert f.path == name


def test_names_git_must_quote(tmp_path: Path) -> None:
    names = ["tab\there.txt", 'quote"d.txt', "back\\slash.txt", "new\nline.txt"]
    diff = staged_diff(tmp_path, {}, {n: b"x\n" for n in names})
    assert sorted(f.path for f in parse_diff(diff)) == sorted(names)
    empty = staged_diff(tmp_path / "empty", {}, {n: b"" for n in names})
    assert sorted(f.path for f in parse_diff(empty)) == sorted(names)


def test_binary_files_without_binary_patch(tmp_path: Path) -> None:
    staged_diff(tmp_path, {"b.bin": b"\x00one"}, {"b.bin": b"\x00two"})
    diff = git(tmp_path, "diff", "--cached", "--no-prefix")
    [f] = parse_diff(diff)
    assert b"Binary files" in diff
    assert (f.path, f.status, f.is_binary, f.added, f.deleted) == ("b.bin", "modified", True, 0, 0)
    assert join_diff([f]) == diff


def test_deleted_binary_and_empty_files(tmp_path: Path) -> None:
    diff = staged_diff(tmp_path, {"gone.bin": b"\x00\x01", "gone empty": b""}, {})
    files = by_path(parse_diff(diff))
    assert (files["gone.bin"].new_path, files["gone.bin"].is_binary) == (None, True)
    assert (files["gone empty"].old_path, files["gone empty"].status) == ("gone empty", "deleted")
    assert changed_files(files.values()) == ChangedFiles(deleted=("gone empty", "gone.bin"))


def test_empty_and_malformed_input() -> None:
    assert parse_diff(b"") == []
    assert join_diff([]) == b""
    with pytest.raises(DiffError, match="starts with"):
        parse_diff(b"--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n")


# Names that exercise git's quoting: spaces, non-ASCII, a tab, a quote.
NAMES = ["a.txt", "b c.txt", "d/e.txt", "\u00e9.txt", "f\tg", 'h"i', "-- j", "k/l m/n"]
LINES = [b"alpha\n", b"beta\n", b"-- dash\n", b"++ plus\n", b"\x00\xff\n", b"\r\n", b"gamma"]

trees = st.dictionaries(
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(LINES), max_size=6).map(b"".join),
    max_size=5,
)


@settings(max_examples=25, deadline=None)
@given(before=trees, after=trees, mode=st.booleans())
def test_join_of_parse_is_identity_for_real_diffs(before: Tree, after: Tree, mode: bool) -> None:
    # Two names must not be a file and a directory at once.
    for tree in (before, after):
        if "d/e.txt" in tree and "d" in tree:
            del tree["d"]
    with tempfile.TemporaryDirectory() as directory:
        repo = Path(directory)
        diff = staged_diff(repo, before, after)
        if mode and after:
            (repo / next(iter(after))).chmod(0o755)
            git(repo, "add", "-A")
            diff = git(repo, "diff", "--cached", "--no-prefix", "--binary")
    files = parse_diff(diff)
    assert join_diff(files) == diff
    assert stat(files).files == len(files) == diff.count(b"\ndiff --git ") + bool(diff)
    touched = {f.old_path for f in files} | {f.new_path for f in files}
    assert touched - {None} <= set(before) | set(after)
