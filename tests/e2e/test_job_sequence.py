"""Jobs that interleave runtime steps with host-tool steps: a real server, executor and sandbox."""

from __future__ import annotations

import asyncio
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet import Fleet, git, make_repo

from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.executor.handler import plan
from offload.jobs import queue
from offload.protocol.wire import Job
from offload.queue.consumer import JobFailed
from offload.queue.store import SqlQueueStore

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

README = "hello from demo\n"


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    """A server with the repository `demo`; executors are started by each test."""
    fleet = Fleet(db_url, tmp_path / "data")
    make_repo(tmp_path / "src" / "demo", {"README": README})
    fleet.start_server()
    added = fleet.offload("repos", "add", str(tmp_path / "src" / "demo"), "--name", "demo")
    assert added.returncode == 0, added.stderr
    yield fleet
    fleet.stop_all()


def commit_of(fleet: Fleet) -> str:
    """The commit of `demo` the server knows."""
    return git("rev-parse", "HEAD", cwd=fleet.data_dir.parent / "src" / "demo")


def enqueue(fleet: Fleet, **job: Any) -> int:
    """Put an executor job, written as its JSON, straight into the generic queue; its id.

    The API makes one-step jobs only; any Job JSON is a valid payload. Enqueued before the
    executor starts, so its first dequeue finds it (SQLite wakes only in-process waiters).
    """
    payload = {
        "repositoryName": "demo",
        "repositoryDirectory": "repository",
        "commit": commit_of(fleet),
        "shallowClone": True,
        **job,
    }

    async def put() -> int:
        db = await open_database(fleet.url)
        try:
            return await SqlQueueStore(db, queue.spec("default")).enqueue({"payload": payload})
        finally:
            await db.close()

    return asyncio.run(put())


def wait_for(find: Any, what: str, timeout: float = 60) -> Any:
    """Poll `find()` until it returns something."""
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)
    return found


# The probe waits for the test to hand it the absolute path of the job's host directory.
PROBE = [
    "i=0",
    "while [ ! -f /data/probe-path ]; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.1; done",
    "cat /etc/offload/README",
    "echo changed > /etc/offload/README || echo README-READ-ONLY",
    "host=$(cat /data/probe-path)",
    'cat "$host/host-secret" || echo HOST-DIR-HIDDEN',
    'touch "$host/planted" || echo HOST-DIR-UNWRITABLE',
]


def test_host_and_runtime_steps_run_in_sequence_and_the_host_dir_stays_private(
    fleet: Fleet,
) -> None:
    secret = f"host-only-{time.time_ns()}"
    where = ["git", "-C", "repository", "rev-parse", "--show-toplevel", "HEAD"]
    job_id = enqueue(
        fleet,
        dockerSteps=[
            {
                "key": "probe",
                "commands": PROBE,
                "mounts": [{"source": "repository/README", "target": "/etc/offload/README"}],
            }
        ],
        cliSteps=[
            {"key": "version", "command": ["git", "--version"]},
            {"key": "where", "command": where},
        ],
        sequence=["where", "probe", "version"],
    )
    fleet.start_executor("exec-seq", slots=1)
    # In the directory of this start of the executor (workspaces/<run>/), or on a workspace
    # disk (disks/<disk>/).
    data = fleet.data_dir / "executor-exec-seq"
    host = wait_for(lambda: next(data.glob("*/*/workspace-*.host"), None), "a host directory")
    root = host.with_name(host.name.removesuffix(".host"))
    assert root.is_dir() and root not in host.parents
    assert stat.S_IMODE(host.stat().st_mode) == 0o700
    (host / "host-secret").write_text(secret)  # as a host tool would
    (root / "probe-path.new").write_text(str(host))
    (root / "probe-path.new").rename(root / "probe-path")

    job = fleet.wait_state(job_id, {"completed", "failed", "errored"})
    entries = fleet.logs(job_id)
    assert job["state"] == "completed", (job, entries)
    steps = {str(e["key"]): e for e in entries if str(e["key"]).startswith("step.")}
    assert list(steps) == ["step.host.where", "step.sandbox.probe", "step.host.version"]
    starts = [str(e["startTime"]) for e in steps.values()]
    assert starts == sorted(starts)

    ran_where = steps["step.host.where"]
    assert ran_where["command"] == where and ran_where["exitCode"] == 0
    assert f"stdout: {root}/repository\n" in str(ran_where["out"])
    assert f"stdout: {commit_of(fleet)}\n" in str(ran_where["out"])

    probe = str(steps["step.sandbox.probe"]["out"])
    assert "stdout: hello from demo" in probe  # the mounted README
    assert "stdout: README-READ-ONLY" in probe
    assert "stdout: HOST-DIR-HIDDEN" in probe and "stdout: HOST-DIR-UNWRITABLE" in probe
    assert secret not in "".join(str(e["out"]) for e in entries)

    assert "stdout: git version" in str(steps["step.host.version"]["out"])
    # The host directory goes with the workspace.
    assert not host.exists() and not root.exists()
    assert not list(root.parent.glob("workspace-*"))


def test_jobs_whose_steps_cannot_run_fail_saying_why(fleet: Fleet) -> None:
    first = {"key": "first", "commands": ["echo RAN"]}
    curl = enqueue(
        fleet,
        dockerSteps=[first],
        cliSteps=[{"key": "fetch", "command": ["curl", "https://example.com"]}],
        sequence=["first", "fetch"],
    )
    missing = enqueue(fleet, dockerSteps=[first], sequence=["first", "second"])
    no_source = enqueue(
        fleet,
        dockerSteps=[
            first,
            {
                "key": "needs-file",
                "commands": ["echo NEVER"],
                "mounts": [{"source": "repository/no-such-file", "target": "/etc/x"}],
            },
        ],
    )
    fleet.start_executor("exec-refuse", slots=1)

    job = fleet.wait_state(curl, {"failed", "errored", "completed"})
    assert job["state"] == "failed"
    assert job["failureMessage"] == (
        "cli step fetch asks for host tool curl; this executor runs only: batch-helper, git"
    )
    assert fleet.logs(curl) == []  # refused before anything ran, the checkout included

    job = fleet.wait_state(missing, {"failed", "errored", "completed"})
    assert job["state"] == "failed"
    assert "sequence names step second, but the job has no step with that key" in str(
        job["failureMessage"]
    )
    assert fleet.logs(missing) == []

    job = fleet.wait_state(no_source, {"failed", "errored", "completed"})
    assert job["state"] != "completed"
    entries = {str(e["key"]): e for e in fleet.logs(no_source)}
    assert "stdout: RAN" in str(entries["step.sandbox.first"]["out"])
    refused = entries["step.sandbox.needs-file"]
    assert refused["exitCode"] == -1
    assert "mounts 'repository/no-such-file' at /etc/x, but the workspace has no" in str(
        refused["out"]
    )
    assert "NEVER" not in str(refused["out"])


# -- what plan() refuses before a job starts (no executor needed) ---------------------------


def refusal(**job: Any) -> str:
    """The JobFailed message of planning `job`."""
    with pytest.raises(JobFailed) as raised:
        plan(Job.model_validate({"id": 1, **job}))
    return str(raised.value)


def test_without_a_sequence_docker_steps_run_before_cli_steps() -> None:
    job = Job.model_validate(
        {
            "id": 1,
            "cliSteps": [{"command": ["git", "--version"]}],
            "dockerSteps": [{"commands": ["true"]}, {"key": "b", "commands": ["true"]}],
        }
    )
    assert [step.key for step in plan(job)] == ["0", "b", "cli.0"]


def test_plan_refuses_steps_that_cannot_run() -> None:
    step = {"key": "a", "commands": ["true"]}
    assert "step key a is used by 2 steps" in refusal(
        dockerSteps=[step], cliSteps=[{"key": "a", "command": ["git"]}]
    )
    assert "sequence names step a 2 times" in refusal(dockerSteps=[step], sequence=["a", "a"])
    assert "sequence leaves out step b" in refusal(
        dockerSteps=[step, {**step, "key": "b"}], sequence=["a"]
    )
    assert refusal(cliSteps=[{"key": "sh", "command": ["/bin/sh", "-c", "id"]}]) == (
        "cli step sh asks for host tool /bin/sh; this executor runs only: batch-helper, git"
    )
    for env in ("PATH=/data/bin", "LD_PRELOAD=/data/x.so", "PYTHONPATH=/data", "GIT_DIR=x"):
        name = env.split("=")[0]
        assert f"cli step g sets {name} in its env" in refusal(
            cliSteps=[{"key": "g", "command": ["git", "status"], "env": [env]}]
        )
    for target, problem in [
        ("etc/x", "is not an absolute path"),
        ("/", "is the container's root"),
        ("/etc/../x", "is not normalized"),
        ("/etc//x", "is not normalized"),
        ("/etc/x/", "is not normalized"),
        ("/proc/self", "is under /proc"),
        ("/dev/null", "is under /dev"),
        ("/data", "is where the workspace is mounted"),
    ]:
        mounts = [{"source": "f", "target": target}]
        assert f"mounts onto {target!r}, which {problem}" in refusal(
            dockerSteps=[{**step, "mounts": mounts}]
        )
    twice = [{"source": "f", "target": "/x"}, {"source": "g", "target": "/x"}]
    assert "mounts 2 sources onto /x" in refusal(dockerSteps=[{**step, "mounts": twice}])


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "alias.x=!touch /tmp/x", "x"],
        ["-C", "repository", "status"],
        ["-C", "repository", "rev-parse", "--upload-pack=evil"],
        ["--exec-path=/tmp", "--version"],
    ],
)
def test_host_git_runs_only_read_only_invocations(args: list[str]) -> None:
    message = refusal(
        dockerSteps=[{"key": "a", "commands": ["true"]}],
        cliSteps=[{"key": "g", "command": ["git", *args]}],
    )
    assert "host steps may only run `git --version`" in message
