"""The CLI's output for pipes, scripts and terminals: whole names, one JSON document per
`--json`, suggested commands on one line. Real `offload` processes against a real server."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet import Fleet, make_repo

from offload.db.url import DatabaseURL

# What users register and run is often longer than a terminal line is wide.
LONG_REPO = "github.com/acme-platform-engineering/" + "-".join(
    ["payments-settlement-reconciliation-service"] * 3
)
LONG_QUEUE = "nightly-rebuilds-of-every-service-in-the-platform-monorepo"
# Markup, an emoji code and a word no terminal line holds: all must come out as they are.
LONG_ARGUMENT = "echo [bold]not markup[/bold] :x: " + "z" * 150
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(db_url, tmp_path / "data", job_queues=f"default,{LONG_QUEUE}")
    make_repo(tmp_path / "src" / "service", {"README": "hello\n"})
    fleet.start_server()
    added = fleet.offload("repos", "add", str(tmp_path / "src" / "service"), "--name", LONG_REPO)
    assert added.returncode == 0, added.stderr
    yield fleet
    fleet.stop_all()


def ok(fleet: Fleet, *args: str, stdin: str | None = None) -> str:
    """The stdout of `offload ARGS` into a pipe, which must succeed."""
    done = fleet.offload(*args, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def document(fleet: Fleet, *args: str) -> Any:
    """The one JSON document `offload ARGS --json` prints, and nothing else."""
    return json.loads(ok(fleet, *args, "--json"))


def line_of(listing: str, first: str) -> str:
    """The one line of a plain listing whose first column is `first`."""
    found = [line for line in listing.splitlines() if line.split()[:1] == [first]]
    assert len(found) == 1, listing
    return found[0]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_repos_jobs_and_queues_into_a_pipe_are_whole_and_their_json_parses(
    fleet: Fleet, tmp_path: Path
) -> None:
    assert len(LONG_REPO) > 140 and len(LONG_QUEUE) > 50
    ok(fleet, "queues", "grant", LONG_QUEUE, "--user", "admin")
    job_id = fleet.submit(LONG_REPO, ["sh", "-c", LONG_ARGUMENT], queue=LONG_QUEUE)
    command = str(fleet.job(job_id)["command"])
    assert LONG_ARGUMENT in command

    # `offload repos list | grep NAME` finds the name whole, on one line with its source.
    repos = ok(fleet, "repos", "list")
    assert "…" not in repos and "\x1b" not in repos and "│" not in repos
    lines = repos.splitlines()
    assert lines[0].split()[:2] == ["name", "source"] and len(lines) == 2, repos
    row = line_of(repos, LONG_REPO)
    assert row.split()[1] == str(tmp_path / "src" / "service")
    assert [r["name"] for r in document(fleet, "repos", "list")] == [LONG_REPO]

    jobs = ok(fleet, "jobs", "list")
    assert "…" not in jobs and "\x1b" not in jobs
    row = line_of(jobs, str(job_id))
    assert row.split()[1:5] == ["admin", LONG_QUEUE, "queued", LONG_REPO]
    assert row.endswith(command), row  # markup and emoji codes printed as they are
    (listed,) = document(fleet, "jobs", "list")
    assert (listed["id"], listed["queue"], listed["repository"]) == (job_id, LONG_QUEUE, LONG_REPO)
    assert listed["command"] == command and listed["state"] == "queued"
    shown = ok(fleet, "jobs", "show", str(job_id))
    assert f"command: {command}\n" in shown

    queues = ok(fleet, "queues")
    assert "…" not in queues
    assert line_of(queues, LONG_QUEUE).split()[1:3] == ["1", "0"]  # queued, processing
    counts = {q["queue"]: q["counts"]["queued"] for q in document(fleet, "queues")}
    assert counts["default"] == 0 and counts[LONG_QUEUE] == 1, counts


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_list_command_prints_one_json_document(fleet: Fleet) -> None:
    fleet.user("alice", orgs=("ml",))
    ok(fleet, "queues", "grant", LONG_QUEUE, "--org", "ml")
    ok(fleet, "secrets", "set", "API_KEY", "--global", stdin="value")

    assert [u["username"] for u in document(fleet, "users", "list")] == ["admin", "alice"]
    assert [o["name"] for o in document(fleet, "orgs", "list")] == ["ml"]
    assert [m["username"] for m in document(fleet, "orgs", "members", "ml")] == ["alice"]
    assert [t["note"] for t in document(fleet, "tokens", "list", "--user", "alice")] == ["test"]
    actions = {e["action"] for e in document(fleet, "audit")}
    assert {"user.create", "queue.grant"} <= actions, actions
    granted = document(fleet, "queues", "grants")
    assert [(g["queue"], g["namespace"]) for g in granted["grants"]] == [(LONG_QUEUE, "ml")]
    assert [s["name"] for s in document(fleet, "secrets", "list", "--global")] == ["API_KEY"]
    assert document(fleet, "secrets", "accesses", "API_KEY", "--global") == []
    assert document(fleet, "executors", "list") == []
    assert document(fleet, "repos", "pulls", "list") == []


def on_terminal(fleet: Fleet, *args: str, columns: int) -> str:
    """What `offload ARGS` shows on a terminal `columns` wide, without its colors."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, **fleet.env}
    env.pop("COLUMNS", None)  # the terminal's own size, as a user's shell has it
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return ANSI.sub("", shown.decode().replace("\r\n", "\n"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_terminal_never_cuts_a_name_however_narrow(fleet: Fleet) -> None:
    wide = on_terminal(fleet, "repos", "list", columns=400)
    assert "┃ name" in wide, wide  # a table, as wide as its cells need
    assert f"│ {LONG_REPO} │" in wide
    # Narrower than the name: the name stays whole on one line (the terminal folds it on
    # screen; a copy is still the name), no ellipsis, nothing wrapped by offload.
    narrow = on_terminal(fleet, "repos", "list", columns=60)
    assert "…" not in narrow
    assert any(line.startswith(LONG_REPO + " ") for line in narrow.splitlines()), narrow


def test_suggested_commands_and_paths_print_whole_on_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "specs-of-the-platform-team" / "payments-settlement-reconciliation"
    deep.mkdir(parents=True)
    spec = deep / "rename-the-settlement-batch-job-everywhere.batch.yaml"
    env = {**os.environ, "OFFLOAD_URL": "http://127.0.0.1:9", "OFFLOAD_TOKEN": "x"}
    env.pop("COLUMNS", None)
    wrote = subprocess.run(
        [sys.executable, "-m", "offload", "batch", "new", "-f", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrote.returncode == 0, wrote.stderr
    assert len(str(spec)) > 100
    assert wrote.stdout.splitlines() == [
        f"wrote {spec}; check it with: offload batch validate -f {spec}"
    ]
    unreachable = subprocess.run(
        [sys.executable, "-m", "offload", "repos", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 1
    (line,) = unreachable.stderr.splitlines()
    assert line.startswith("error: cannot reach the offload server at http://127.0.0.1:9")
    assert line.endswith(
        "start it with `offload up`, or sign in to another with `offload login URL` "
        "(or set OFFLOAD_URL)"
    )
