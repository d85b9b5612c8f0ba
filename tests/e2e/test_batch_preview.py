"""`offload batch preview` as a user reads it: its exit status when a workspace fails, the
changesets' rendered text and exact diffs (`--diff`, `--json`), and the logs of a workspace
the step cache answered; a served offload, a worker and a sandbox executor.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from batchfleet import IMAGE, Batches, bare, import_image, register
from fleet import Fleet, git, make_repo

from offload.batches.expirer import SpecExpirer
from offload.db.connect import open_database
from offload.db.url import DatabaseURL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

REPOS = ["repo-00", "repo-01", "repo-02"]
# Bytes that are not text: git writes their change as a binary patch.
BINARY = b"\x00\x01\x02\x03offload\xff"

SPEC = f"""\
name: fix-colour
on:
  - repositoriesMatchingQuery: repo:^repo-0[0-2]$
steps:
  - run: |
      echo "editing ${{{{ repository.name }}}}"
      if [ "${{{{ repository.name }}}}" = repo-02 ]; then
        echo "cannot edit repo-02" >&2; exit 3
      fi
      sed -i 's/colour/color/g' README.md
      printf '\\000\\001\\002\\003offload\\377' > data.bin
    container: {IMAGE}
changesetTemplate:
  title: Use color in ${{{{ repository.name }}}}
  body: |
    Changed ${{{{ join steps.modified_files ", " }}}} in ${{{{ repository.name }}}}.

    Added ${{{{ join steps.added_files ", " }}}}.
  branch: batch/fix-colour
  commit:
    message: Fix colour in ${{{{ repository.name }}}}
"""


def expected_body(repo: str) -> str:
    return f"Changed README.md in {repo}.\n\nAdded data.bin."


def expected_diff(tmp: Path, repo: str) -> str:
    """The diff git itself writes for the step's change, as `git diff --binary` prints it."""
    work = tmp / "expected" / repo
    make_repo(work, {"README.md": f"the colour of {repo}\n"})
    (work / "README.md").write_text(f"the color of {repo}\n")
    (work / "data.bin").write_bytes(BINARY)
    git("add", "-A", cwd=work)
    # Not git() (it strips the trailing newline).
    return subprocess.run(
        ["git", "diff", "--cached", "--no-prefix", "--binary"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def batches(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Batches]:
    fleet = Fleet(db_url, tmp_path / "data")
    sources = {
        name: bare(tmp_path / "hosted" / f"{name}.git", {"README.md": f"the colour of {name}\n"})
        for name in REPOS
    }
    asyncio.run(register(db_url, fleet.data_dir, sources))
    import_image(fleet, tmp_path, ["exec-p"])
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    fleet.start_executor("exec-p", slots=3, EXECUTOR_QUEUE_NAME="batches")
    yield setup
    setup.stop()


def _spec_id(stdout: str) -> str:
    found = re.search(r"^batch spec (\w+): ", stdout, re.MULTILINE)
    assert found is not None, stdout
    return found.group(1)


def _command(stdout: str, label: str) -> list[str]:
    """The command the preview printed after `label`, as words."""
    found = re.search(rf"^  {label}\s+offload (.+)$", stdout, re.MULTILINE)
    assert found is not None, stdout
    return found.group(1).split()


def _wait_state(batches: Batches, spec_id: str, repo: str, state: str) -> None:
    deadline = time.monotonic() + 60
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {w["repo"]: w["state"] for w in batches.workspaces(spec_id)}
        if states.get(repo) == state:
            return
        time.sleep(0.3)
    raise AssertionError(f"{repo} is {states.get(repo)}, not {state}")


@pytest.mark.slow
def test_a_failed_workspace_fails_the_preview_that_still_shows_every_changeset(
    batches: Batches, db_url: DatabaseURL
) -> None:
    tmp = batches.tmp
    diffs = {repo: expected_diff(tmp, repo) for repo in REPOS[:2]}
    assert "GIT binary patch" in diffs["repo-00"] and "+the color of repo-00" in diffs["repo-00"]

    # Piped: the table, then how many failed and the exact commands for their logs and retry.
    plain = batches.cli("preview", "-f", "-", stdin=SPEC)
    assert plain.returncode == 1, plain.stderr
    first = _spec_id(plain.stdout)
    rows = [line.split() for line in plain.stdout.splitlines() if line.startswith("repo-")]
    assert [r[:3] for r in rows] == [
        ["repo-00", "batch/fix-colour", "create"],
        ["repo-01", "batch/fix-colour", "create"],
    ], plain.stdout
    assert "1 of 3 workspaces did not finish (1 failed)" in plain.stdout, plain.stdout
    logs_command = _command(plain.stdout, "see why:")
    retry_command = _command(plain.stdout, "run them again:")
    assert logs_command == ["batch", "logs", "fix-colour", "--spec", first]
    assert retry_command == ["batch", "retry", "fix-colour", "--spec", first]
    assert "(the workspaces that failed get no changeset)" in plain.stdout
    assert "\x1b[" not in plain.stdout  # no colors into a pipe

    logs = batches.cli(*logs_command[1:])
    assert logs.returncode == 0, logs.stderr
    assert "== repo-02: failed" in logs.stdout and "cannot edit repo-02" in logs.stdout

    # --diff: each changeset's rendered title, commit message, body and its exact diff.
    shown = batches.cli("preview", "-f", "-", "--diff", stdin=SPEC)
    assert shown.returncode == 1, shown.stderr
    for repo in REPOS[:2]:
        block = f"{repo}  batch/fix-colour  create\ntitle:  Use color in {repo}\n"
        assert block in shown.stdout, shown.stdout
        assert f"commit:\n    Fix colour in {repo}\n" in shown.stdout
        body = "".join(
            f"    {line}\n" if line else "    \n" for line in expected_body(repo).splitlines()
        )
        assert f"body:\n{body}\n{diffs[repo]}" in shown.stdout, shown.stdout
    assert "\x1b[" not in shown.stdout
    second = _spec_id(shown.stdout)

    # --json: the same, with the failed workspace and its failure message.
    answer = batches.cli("preview", "-f", "-", "--json", stdin=SPEC)
    assert answer.returncode == 1, answer.stderr
    assert "1 of 3 workspaces did not finish" in answer.stderr
    view = json.loads(answer.stdout)
    assert view["states"] == {"cached": 2, "failed": 1}, view
    by_repo = {op["repo"]: op for op in view["operations"]}
    assert set(by_repo) == {"repo-00", "repo-01"}
    for repo, op in by_repo.items():
        assert op["diff"] == diffs[repo]
        assert op["diffBase64"] is None
        assert op["body"] == expected_body(repo)
        assert op["title"] == f"Use color in {repo}"
        assert op["commitMessage"] == f"Fix colour in {repo}"
        assert op["branch"] == "batch/fix-colour"
    assert [(w["repo"], w["state"]) for w in view["failedWorkspaces"]] == [("repo-02", "failed")]
    assert view["failedWorkspaces"][0]["error"], view["failedWorkspaces"]

    # The retry command the preview printed queues the failed workspace (it fails again).
    retried = batches.cli(*retry_command[1:])
    assert retried.returncode == 0 and "queued 1 workspace" in retried.stdout, retried.stderr
    _wait_state(batches, first, "repo-02", "failed")

    # A workspace the cache answered: its logs are those of the run that produced its result.
    produced = {w["repo"]: w for w in batches.logs("fix-colour", first)}
    cached = {w["repo"]: w for w in batches.logs("fix-colour", view["id"])}
    source = cached["repo-00"]["cachedFrom"]
    assert cached["repo-00"]["state"] == "cached" and cached["repo-00"]["logs"] == []
    assert (source["spec"], source["repo"], source["steps"]) == (first, "repo-00", 1)
    assert source["logs"] == produced["repo-00"]["logs"] and source["logs"]
    assert second != first  # the --diff preview ran nothing either: first produced it
    shown_logs = batches.cli("logs", "fix-colour", "--spec", view["id"], "--repo", "repo-00")
    assert shown_logs.returncode == 0, shown_logs.stderr
    assert "== repo-00: cached\n" in shown_logs.stdout
    assert f"step 1 came from the step cache, written {source['at'][:10]}" in shown_logs.stdout, (
        shown_logs.stdout
    )
    assert (
        f"by batch spec {first}, workspace repo-00, job {source['job']}; its logs:"
        in shown_logs.stdout
    )
    assert "editing repo-00" in shown_logs.stdout

    # Once the producing run's spec expired, the logs say so.
    applied = batches.cli("apply", "--spec", view["id"])
    assert applied.returncode == 0, applied.stderr
    asyncio.run(_expire_unapplied(db_url))
    expired = batches.cli("logs", "fix-colour", "--spec", view["id"], "--repo", "repo-00")
    assert expired.returncode == 0, expired.stderr
    assert f"by job {source['job']}; that run's batch spec and logs expired" in expired.stdout, (
        expired.stdout
    )
    assert "editing repo-00" not in expired.stdout


async def _expire_unapplied(db_url: DatabaseURL) -> None:
    """batches.spec-expirer's pass, with a TTL that every unapplied spec is past."""
    db = await open_database(db_url)
    try:
        await SpecExpirer(db, timedelta(0), timedelta(days=30)).expire()
    finally:
        await db.close()


def test_a_preview_without_changesets_says_why_instead_of_apply(batches: Batches) -> None:
    # The steps edit nothing: no workspace has a diff.
    idle = "".join(
        line
        for line in SPEC.replace("repo:^repo-0[0-2]$", "repo:^repo-0[01]$").splitlines(True)
        if "sed -i" not in line and "printf" not in line
    )
    unchanged = batches.cli("preview", "-f", "-", stdin=idle)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "nothing to apply: no workspace changed anything" in unchanged.stdout
    assert "apply it" not in unchanged.stdout

    failing = batches.cli(
        "preview", "-f", "-", stdin=SPEC.replace("repo:^repo-0[0-2]$", "repo:^repo-02$")
    )
    assert failing.returncode == 1, failing.stderr
    assert "nothing to apply: every workspace failed" in failing.stdout
    assert "1 of 1 workspace did not finish (1 failed)" in failing.stdout
    assert "apply it" not in failing.stdout


def _on_a_terminal(
    batches: Batches, args: list[str], stdin: str, env: dict[str, str]
) -> tuple[int, str]:
    """Run the batch CLI with its output on a terminal; its exit status and what it showed."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "batch", *args],
        env={
            **{k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "PAGER")},
            **batches.fleet.env,
            "OFFLOAD_TOKEN": batches.token("alice"),
            "TERM": "xterm-256color",
            "COLUMNS": "200",
            **env,
        },
        stdin=subprocess.PIPE,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    assert process.stdin is not None
    process.stdin.write(stdin.encode())
    process.stdin.close()
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the last writer
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    return process.wait(timeout=300), seen.decode(errors="replace")


def test_diffs_are_colored_and_paged_on_a_terminal(batches: Batches) -> None:
    spec = SPEC.replace("repo:^repo-0[0-2]$", "repo:^repo-00$")
    paged = batches.tmp / "paged.txt"
    code, screen = _on_a_terminal(
        batches, ["preview", "-f", "-", "--diff"], spec, {"OFFLOAD_PAGER": f"cat > {paged}"}
    )
    assert code == 0, screen
    text = paged.read_text()
    assert "\x1b[32m+the color of repo-00\x1b[m" in text, text
    assert "\x1b[31m-the colour of repo-00\x1b[m" in text
    assert "\x1b[36m@@ -1 +1 @@\x1b[m" in text
    assert "title:  Use color in repo-00" in text
    # The table and what to do next come after the pager, on the terminal.
    assert "repo-00" in screen and "apply it with: offload batch apply --spec" in screen
    assert "+the color of repo-00" not in screen

    # Without a pager the colored diff goes to the terminal itself.
    code, screen = _on_a_terminal(batches, ["preview", "-f", "-", "--diff"], spec, {})
    assert code == 0, screen
    assert "\x1b[32m+the color of repo-00\x1b[m" in screen, screen
