"""A step's changed files are read from its diff: the same lists `git diff --name-status`
gives, for every kind of change git can record, on a real repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from offload.batches import diffs
from offload.batches.helper import files_of


def _git(repo: Path, *args: str) -> bytes:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        },
    )
    return done.stdout


def _name_status(raw: bytes) -> dict[str, list[str]]:
    """What `git diff --name-status -z` says, by kind (R: renamed, C and A: added, D: deleted,
    anything else: modified)."""
    out: dict[str, list[str]] = {"modified": [], "added": [], "deleted": [], "renamed": []}
    fields = raw.decode(errors="surrogateescape").split("\0")
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i][0]
        if status in "RC":
            out["renamed" if status == "R" else "added"].append(fields[i + 2])
            i += 3
            continue
        out[{"A": "added", "D": "deleted"}.get(status, "modified")].append(fields[i + 1])
        i += 2
    return out


def test_changed_files_from_the_diff_match_git_name_status(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    files = {
        "edit.txt": b"one\ntwo\n",
        "gone.txt": b"bye\n",
        "moved from.txt": b"a long enough text to be found as a rename\n" * 5,
        "script.sh": b"echo hi\n",
        "bin.dat": bytes(range(256)),
        "link-to-be.txt": b"plain\n",
        'we"ird\tname.txt': b"quoted\n",
    }
    for name, data in files.items():
        (repo / name).write_bytes(data)
    _git(repo, "add", "--all")
    _git(repo, "commit", "-qm", "base")

    (repo / "edit.txt").write_bytes(b"one\nTWO\n")
    (repo / "gone.txt").unlink()
    (repo / "moved from.txt").rename(repo / "moved to.txt")
    (repo / "script.sh").chmod(0o755)
    (repo / "bin.dat").write_bytes(bytes(reversed(range(256))))
    (repo / "link-to-be.txt").unlink()
    (repo / "link-to-be.txt").symlink_to("edit.txt")
    (repo / 'we"ird\tname.txt').write_bytes(b"quoted, changed\n")
    (repo / "new dir").mkdir()
    (repo / "new dir" / "ünïcode.txt").write_bytes(b"new\n")
    _git(repo, "add", "--all")

    diff = _git(repo, "diff", "--cached", "--no-prefix", "--binary", "--no-ext-diff")
    expected = _name_status(_git(repo, "diff", "--cached", "--name-status", "-z"))
    got = files_of(diffs.parse_diff(diff))
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}
    assert expected["renamed"] == ["moved to.txt"] and expected["deleted"] == ["gone.txt"]
