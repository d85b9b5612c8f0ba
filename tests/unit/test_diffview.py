"""The diff view: a unified diff read into files, hunks and numbered lines, within limits."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from jinja2 import Environment

from offload.web.diffview import MAX_FILES, MAX_LINE_CHARS, DiffView, parse_diff
from offload.web.pages import Pages

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


def diff_of(tmp_path: Path, before: dict[str, bytes], after: dict[str, bytes], *opts: str) -> str:
    """The text of the diff git writes from one tree to the other (renames found)."""
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    for trees in (before, after):
        for path in repo.rglob("*"):
            if path.is_file() and ".git" not in path.relative_to(repo).parts:
                path.unlink()
        for name, content in trees.items():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes(content)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", "x")
    raw = git(repo, "diff", "-M", *opts, "HEAD~1", "HEAD")
    return raw.decode("utf-8", errors="replace")


def lines_of(view: DiffView, path: str) -> list[tuple[str, int | None, int | None, str]]:
    """Every rendered line of one file: (sign, old number, new number, text)."""
    (f,) = [f for f in view.files if f.path == path]
    return [(line.mark, line.old, line.new, line.text) for h in f.hunks for line in h.lines]


FIVE = b"one\ntwo\nthree\nfour\nfive\n"


def test_a_modified_file_numbers_its_lines_on_both_sides(tmp_path: Path) -> None:
    text = diff_of(tmp_path, {"a.txt": FIVE}, {"a.txt": b"one\nTWO\nthree\nfour\nfive\nsix\n"})
    view = parse_diff(text)
    assert (view.added, view.deleted, view.truncated, view.total_files) == (2, 1, False, 1)
    (f,) = view.files
    assert (f.old_path, f.new_path, f.status, f.binary) == ("a.txt", "a.txt", "modified", False)
    assert lines_of(view, "a.txt") == [
        (" ", 1, 1, "one"),
        ("-", 2, None, "two"),
        ("+", None, 2, "TWO"),
        (" ", 3, 3, "three"),
        (" ", 4, 4, "four"),
        (" ", 5, 5, "five"),
        ("+", None, 6, "six"),
    ]
    assert f.hunks[0].header == "@@ -1,5 +1,6 @@"


def test_new_deleted_and_renamed_files(tmp_path: Path) -> None:
    text = diff_of(
        tmp_path,
        {"gone.txt": b"bye\n", "old name.txt": FIVE, "same.txt": b"x\n"},
        {
            "new.txt": b"hello\n",
            "docs/new name.txt": FIVE.replace(b"five", b"5"),
            "same.txt": b"x\n",
        },
    )
    view = parse_diff(text)
    files = {f.path: f for f in view.files}
    assert files["new.txt"].status == "added" and files["new.txt"].old_path is None
    assert lines_of(view, "new.txt") == [("+", None, 1, "hello")]
    assert files["gone.txt"].status == "deleted" and files["gone.txt"].new_path is None
    assert lines_of(view, "gone.txt") == [("-", 1, None, "bye")]
    renamed = files["docs/new name.txt"]
    assert (renamed.status, renamed.old_path) == ("renamed", "old name.txt")
    assert renamed.similarity is not None and renamed.similarity < 100
    assert ("-", 5, None, "five") in lines_of(view, "docs/new name.txt")
    assert (view.added, view.deleted) == (2, 2)


def test_a_pure_rename_and_a_mode_change_have_no_hunks(tmp_path: Path) -> None:
    text = diff_of(tmp_path, {"a b.txt": FIVE}, {"c d.txt": FIVE})
    (f,) = parse_diff(text).files
    assert (f.old_path, f.new_path, f.status, f.hunks) == ("a b.txt", "c d.txt", "renamed", [])
    text = "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
    (f,) = parse_diff(text).files
    assert (f.path, f.old_mode, f.new_mode, f.hunks) == ("run.sh", "100644", "100755", [])


def test_binary_files_are_named_and_not_shown(tmp_path: Path) -> None:
    text = diff_of(
        tmp_path, {"k.txt": b"k\n"}, {"k.txt": b"k\n", "img.png": b"\x89PNG\x00\x01\x02"}
    )
    (f,) = parse_diff(text).files
    assert (f.path, f.status, f.binary, f.hunks, f.added) == ("img.png", "added", True, [], 0)
    # With --binary the patch data follows; none of it is read as lines.
    text = diff_of(tmp_path / "b", {"img.png": b"\x00a"}, {"img.png": b"\x00b" * 50}, "--binary")
    (f,) = parse_diff(text).files
    assert (f.path, f.binary, f.hunks, f.added, f.deleted) == ("img.png", True, [], 0, 0)


def test_no_newline_at_end_of_file_marks_its_line(tmp_path: Path) -> None:
    text = diff_of(tmp_path, {"a.txt": b"one\ntwo"}, {"a.txt": b"one\nthree"})
    assert "\\ No newline at end of file" in text
    view = parse_diff(text)
    (hunk,) = view.files[0].hunks
    marked = [(line.mark, line.text) for line in hunk.lines if line.no_newline]
    assert marked == [("-", "two"), ("+", "three")]
    assert (view.added, view.deleted) == (1, 1)


def test_a_hunk_header_keeps_the_function_git_found(tmp_path: Path) -> None:
    body = b"def f():\n" + b"".join(b"    x%d = 1\n" % i for i in range(10))
    text = diff_of(tmp_path, {"m.py": body}, {"m.py": body.replace(b"x8 = 1", b"x8 = 2")})
    (hunk,) = parse_diff(text).files[0].hunks
    assert hunk.section == "def f():"
    assert hunk.header.startswith("@@ -") and hunk.header.endswith("@@ def f():")
    assert (hunk.old_start, hunk.new_start) == (7, 7)


def test_a_deleted_line_that_looks_like_a_header_stays_a_line() -> None:
    text = (
        "diff --git a/x.md b/x.md\n--- a/x.md\n+++ b/x.md\n@@ -1,2 +1,2 @@\n"
        "--- not a header\n+++ nor this\n keep\n"
    )
    view = parse_diff(text)
    assert lines_of(view, "x.md") == [
        ("-", 1, None, "-- not a header"),
        ("+", None, 1, "++ nor this"),
        (" ", 2, 2, "keep"),
    ]
    assert view.total_files == 1


def test_no_prefix_and_plain_unified_diffs(tmp_path: Path) -> None:
    text = diff_of(tmp_path, {"a/b.txt": b"1\n"}, {"a/b.txt": b"2\n"}, "--no-prefix")
    assert [f.path for f in parse_diff(text).files] == ["a/b.txt"]
    plain = (
        "--- old.txt\t2024-01-01 00:00:00\n+++ new.txt\t2024-01-02 00:00:00\n@@ -1 +1 @@\n-a\n+b\n"
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-c\n+d\n"
    )
    view = parse_diff(plain)
    assert [(f.old_path, f.new_path) for f in view.files] == [("old.txt", "new.txt"), ("x", "x")]
    assert (view.added, view.deleted) == (2, 2)


def test_quoted_and_non_utf8_names_and_text(tmp_path: Path) -> None:
    text = diff_of(tmp_path, {"t\u00e9st.txt": "caf\u00e9\n".encode("latin-1")}, {})
    assert '"a/t\\303\\251st.txt"' in text
    view = parse_diff(text)
    (f,) = view.files
    assert (f.path, f.status) == ("t\u00e9st.txt", "deleted")
    # The latin-1 byte arrives already decoded, as a replacement character.
    assert lines_of(view, "t\u00e9st.txt") == [("-", 1, None, "caf\ufffd")]


def test_lines_past_the_limit_are_counted_not_rendered(tmp_path: Path) -> None:
    big = b"".join(b"line %d\n" % i for i in range(300))
    text = diff_of(tmp_path, {}, {"a.txt": big, "b.txt": big})
    view = parse_diff(text, max_lines=250)
    assert (view.truncated, view.added, view.total_files) == (True, 600, 2)
    first, second = view.files
    assert (first.rendered_lines, first.truncated, first.added) == (250, True, 300)
    assert (second.rendered_lines, second.truncated, second.added) == (0, True, 300)
    assert parse_diff(text).truncated is False


def test_files_past_the_limit_are_counted_not_listed() -> None:
    text = "".join(
        f"diff --git a/f{i} b/f{i}\n--- a/f{i}\n+++ b/f{i}\n@@ -1 +1 @@\n-a\n+b\n"
        for i in range(MAX_FILES + 5)
    )
    view = parse_diff(text)
    assert (len(view.files), view.total_files, view.omitted_files) == (MAX_FILES, MAX_FILES + 5, 5)
    assert (view.truncated, view.added, view.deleted) == (True, MAX_FILES + 5, MAX_FILES + 5)


def test_a_very_long_line_is_cut() -> None:
    text = "--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+" + "z" * (MAX_LINE_CHARS * 3) + "\n"
    (line,) = parse_diff(text).files[0].hunks[0].lines
    assert (len(line.text), line.cut) == (MAX_LINE_CHARS, True)


def test_a_huge_diff_stays_fast() -> None:
    hunk = "@@ -1,100 +1,100 @@\n" + "".join(f"-old {i}\n+new {i}\n" for i in range(100))
    text = "".join(
        f"diff --git a/f{i} b/f{i}\n--- a/f{i}\n+++ b/f{i}\n" + hunk for i in range(2000)
    )
    started = time.perf_counter()
    view = parse_diff(text)
    took = time.perf_counter() - started
    assert view.added == 200_000 and sum(f.rendered_lines for f in view.files) == 5000
    assert took < 2.0, f"parsing 400,000 lines took {took:.2f} s"


@pytest.fixture
def render() -> Environment:
    """The pages' template environment (autoescaped, strict), with the real partial."""
    return Pages().env


def test_the_partial_shows_signs_as_text_and_escapes_lines(render: Environment) -> None:
    text = (
        "diff --git a/x.html b/x.html\n--- a/x.html\n+++ b/x.html\n@@ -1 +1 @@ main\n"
        "-<b>old</b>\n+<script>new()</script>\n"
    )
    html = render.from_string(
        '{% with diff=view, diff_url="/full.diff" %}{% include "_diff.html" %}{% endwith %}'
    ).render(view=parse_diff(text, max_lines=1))
    assert "&lt;script&gt;" not in html  # cut by the limit of one line
    assert "&lt;b&gt;old&lt;/b&gt;" in html and "<b>old" not in html
    assert '<td class="mark" aria-label="deleted">-</td>' in html
    assert '<a href="/full.diff">Read the whole diff as text</a>' in html
    assert '<details class="diff-file" open' in html
    whole = render.from_string(
        '{% with diff=view %}{% include "_diff.html" %}{% endwith %}'
    ).render(view=parse_diff(text))
    assert "&lt;script&gt;new()&lt;/script&gt;" in whole and "<script>" not in whole
    assert '<td class="mark" aria-label="added">+</td>' in whole
    assert "Read the whole diff" not in whole
