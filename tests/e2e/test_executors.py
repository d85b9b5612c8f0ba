"""Executors end to end: a real server, real executor processes, bubblewrap, git, secrets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from dockerd import Dockerd, EngineUnavailable
from fleet import Fleet, make_repo, spawn

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(db_url, tmp_path / "data")
    make_repo(
        tmp_path / "src" / "demo", {"README": "hello from demo\n", "count.sh": "echo counted\n"}
    )
    make_repo(tmp_path / "src" / "other", {"README": "other\n"})
    fleet.start_server()
    for name in ("demo", "other"):
        added = fleet.offload("repos", "add", str(tmp_path / "src" / name), "--name", name)
        assert added.returncode == 0, added.stderr
    yield fleet
    fleet.stop_all()


def test_two_executors_run_100_jobs_and_output_streams_while_running(fleet: Fleet) -> None:
    fleet.start_executor("exec-a", slots=4)
    fleet.start_executor("exec-b", slots=4)
    streaming = fleet.submit(
        "demo", ["sh", "-c", "echo printed-at $(date +%s.%N); sleep 4; echo done"]
    )
    # The other 100 jobs go in while the first one runs, so that it streams under load.
    ids: list[int] = []

    def submit_all() -> None:
        for n in range(100):
            ids.append(fleet.submit("demo", ["sh", "-c", f"cat README; echo job-{n}"]))

    submitting = threading.Thread(target=submit_all)
    submitting.start()
    seen_at = None
    deadline = time.monotonic() + 30
    history = []
    while seen_at is None and time.monotonic() < deadline:
        entries = fleet.logs(streaming)
        history.append((time.time(), [(e["key"], str(e["out"])[-40:]) for e in entries][-2:]))
        for entry in entries:
            if entry["key"] == "step.sandbox.run" and "stdout: printed-at" in str(entry["out"]):
                printed = float(str(entry["out"]).split("stdout: printed-at ")[1].split()[0])
                seen_at = time.time()
                assert seen_at - printed <= 2.0, (
                    f"output reached the API {seen_at - printed:.2f}s late; polls: {history}"
                )
                assert entry["exitCode"] is None, "seen only after the step finished"
        time.sleep(0.1)
    assert seen_at is not None, "the running job's output never showed up"
    submitting.join()
    assert len(ids) == 100
    for job_id in [streaming, *ids]:
        fleet.wait_state(job_id, {"completed", "failed"}, timeout=240)
    jobs = [fleet.job(job_id) for job_id in ids]
    assert {j["state"] for j in jobs} == {"completed"}
    assert {j["executor"] for j in jobs} == {"exec-a", "exec-b"}
    assert all(j["exitCode"] == 0 for j in jobs)
    out = next(e for e in fleet.logs(ids[7]) if e["key"] == "step.sandbox.run")["out"]
    assert "stdout: hello from demo" in str(out) and "stdout: job-7" in str(out)


def test_killed_executor_job_completes_on_the_other_and_it_shows_inactive(fleet: Fleet) -> None:
    doomed = fleet.start_executor("exec-doomed", slots=1)
    job_id = fleet.submit("demo", ["sh", "-c", "echo started; sleep 6; echo finished"])
    fleet.wait_state(job_id, {"processing"})
    doomed.stop(signal.SIGKILL)
    fleet.start_executor("exec-survivor", slots=1)
    # The worker's resetter hands the job back once the dead executor's heartbeats stop.
    worker = spawn(
        "worker",
        ["worker", "--job", "queues.resetter"],
        {**fleet.env, "OFFLOAD_RESETTER_INTERVAL": "1s"},
    )
    try:
        job = fleet.wait_state(job_id, {"completed"}, timeout=90)
    finally:
        worker.stop()
    assert job["executor"] == "exec-survivor" and job["numResets"] == 1
    active: dict[str, bool] = {}
    deadline = time.monotonic() + 30  # an executor is inactive 20 s after its last heartbeat
    while active != {"exec-doomed": False, "exec-survivor": True} and time.monotonic() < deadline:
        listing = fleet.offload("executors", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        active = {r["hostname"]: r["active"] for r in json.loads(listing.stdout)}
        time.sleep(1)
    assert active == {"exec-doomed": False, "exec-survivor": True}


def test_cancel_kills_the_whole_process_tree(fleet: Fleet) -> None:
    fleet.start_executor("exec-c", slots=1)
    marker = f"offload-cancel-{time.time_ns()}"
    job_id = fleet.submit(
        "demo", ["sh", "-c", f"trap '' TERM; (sleep 1000; echo {marker}) & sleep 1000 # {marker}"]
    )
    deadline = time.monotonic() + 30
    while not _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker), "the step never started"
    cancel = fleet.offload("jobs", "cancel", str(job_id))
    assert cancel.returncode == 0, cancel.stderr
    began = time.monotonic()
    while _processes_with(marker) and time.monotonic() - began < 15:
        time.sleep(0.1)
    assert not _processes_with(marker), "processes of the canceled step are still running"
    assert time.monotonic() - began <= 10.0 + 1.0  # the heartbeat (1 s) plus the 10 s limit
    assert fleet.wait_state(job_id, {"canceled"})["state"] == "canceled"


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_secrets_and_the_executor_token_never_reach_stored_logs(fleet: Fleet) -> None:
    secret = "s3cr3t-value-" + str(time.time_ns())
    assert fleet.offload("secrets", "set", "API_KEY", stdin=secret).returncode == 0
    token = fleet.token()
    fleet.start_executor("exec-d", slots=1)
    script = (
        'echo "whole: $API_KEY"; '
        'echo "${API_KEY%${API_KEY#??????}}"; echo "${API_KEY#??????}"; '
        f"echo token {token} >&2"
    )
    job_id = fleet.submit("demo", ["sh", "-c", script], secrets=["API_KEY"])
    job = fleet.wait_state(job_id, {"completed", "failed"})
    assert job["state"] == "completed", job
    text = "".join(str(e["out"]) + " ".join(map(str, e["command"])) for e in fleet.logs(job_id))
    assert "${{ secrets.API_KEY }}" in text
    assert secret not in text and token not in text
    assert secret[:6] not in text.replace("${{ secrets.API_KEY }}", ""), (
        "a piece of the secret leaked"
    )
    assert secret[6:] not in text


def test_job_tokens_are_scoped_to_their_repository_and_die_with_the_job(fleet: Fleet) -> None:
    # The test plays the executor: it dequeues with the shared token and uses the job token.
    executor_headers = {"Authorization": f"token-executor {fleet.token()}"}
    job_id = fleet.submit("demo", ["true"])
    leased = httpx.post(
        f"{fleet.base}/.executors/queue/default/dequeue",
        json={"executorName": "probe"},
        headers=executor_headers,
    ).json()
    assert leased["id"] == job_id and leased["repositoryName"] == "demo"
    headers = {
        "Authorization": f"Bearer {leased['token']}",
        "X-Offload-Job-ID": str(job_id),
        "X-Offload-Executor-Name": "probe",
    }
    refs = "/info/refs?service=git-upload-pack"
    own = httpx.get(f"{fleet.base}/.executors/git/demo{refs}", headers=headers)
    assert own.status_code == 200 and b"git-upload-pack" in own.content
    other = httpx.get(f"{fleet.base}/.executors/git/other{refs}", headers=headers)
    # The protocol's answer for what the token does not hold: 404, as for an unknown job.
    assert other.status_code == 404
    done = httpx.post(
        f"{fleet.base}/.executors/queue/default/markComplete",
        json={"executorName": "probe", "jobId": job_id},
        headers=headers,
    )
    assert done.status_code == 204
    after = httpx.get(f"{fleet.base}/.executors/git/demo{refs}", headers=headers)
    assert after.status_code == 401
    assert fleet.job(job_id)["state"] == "completed"


def test_server_restart_while_a_job_runs(fleet: Fleet) -> None:
    fleet.start_executor("exec-h", slots=1)
    job_id = fleet.submit("demo", ["sh", "-c", "echo before; sleep 5; echo after"])
    fleet.wait_state(job_id, {"processing"})
    assert fleet.server is not None
    fleet.server.stop()
    time.sleep(3)
    fleet.start_server()
    job = fleet.wait_state(job_id, {"completed", "failed"}, timeout=60)
    assert job["state"] == "completed", job
    out = "".join(str(e["out"]) for e in fleet.logs(job_id))
    assert "stdout: after" in out


def test_wrong_token_unknown_backend_and_bad_config_say_what_is_wrong(fleet: Fleet) -> None:
    env = {
        "EXECUTOR_FRONTEND_URL": fleet.base,
        "EXECUTOR_REGISTRATION_TOKEN": "wrong-token",
        "EXECUTOR_QUEUE_NAME": "default",
        "EXECUTOR_BACKEND": "shell",
    }
    wrong = subprocess.run(
        [sys.executable, "-m", "offload", "executor"],
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode == 1
    assert "refused the executor token" in wrong.stderr
    assert wrong.stderr.count("refused") == 1, "retried instead of stopping"
    unknown = subprocess.run(
        [sys.executable, "-m", "offload", "executor"],
        env={**_base_env(), **env, "EXECUTOR_BACKEND": "vmware"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unknown.returncode == 2
    for name in ("sandbox", "docker", "shell"):
        assert name in unknown.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "offload", "executor"],
        env=_base_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 2
    assert "EXECUTOR_FRONTEND_URL is required" in missing.stderr
    assert "EXECUTOR_QUEUE_NAME" in missing.stderr


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTOR_", "OFFLOAD_"))}


def test_offload_run_streams_the_log_and_exits_with_the_job_code(fleet: Fleet) -> None:
    fleet.start_executor("exec-r", slots=1)
    result = fleet.offload(
        "run", "--repo", "demo", "--", "sh", "-c", "cat README; echo oops >&2; exit 3"
    )
    assert result.returncode == 3, result.stderr
    assert "hello from demo" in result.stdout
    assert "oops" in result.stderr


def test_offload_run_queue_reaches_only_that_queues_executors(fleet: Fleet) -> None:
    fleet.start_executor("exec-gpu", slots=1, EXECUTOR_QUEUE_NAME="gpu")
    waiting = fleet.submit("demo", ["true"])  # the default queue, which no executor takes
    refused = fleet.offload("run", "--repo", "demo", "--queue", "gpu", "--", "true")
    assert refused.returncode != 0
    assert "admin may not use the gpu queue" in refused.stderr
    assert fleet.offload("queues", "grant", "gpu", "--user", "admin").returncode == 0
    result = fleet.offload("run", "--repo", "demo", "--queue", "gpu", "--", "sh", "-c", "echo hi")
    assert result.returncode == 0, result.stderr
    assert "hi" in result.stdout
    assert "queued in gpu: demo@" in result.stderr
    assert fleet.job(waiting)["state"] == "queued"
    listed = fleet.offload("jobs", "list")
    assert listed.returncode == 0 and " gpu " in listed.stdout and " default " in listed.stdout
    sizes = fleet.offload("queues")
    assert sizes.returncode == 0 and "gpu" in sizes.stdout
    wrong = fleet.offload("run", "--repo", "demo", "--queue", "nope", "--", "true")
    assert wrong.returncode != 0
    assert "no job queue 'nope'; the queues are default, gpu" in wrong.stderr


def test_the_docker_runtime_runs_a_job_through_a_real_engine(fleet: Fleet, tmp_path: Path) -> None:
    image = "offload-test/busybox:latest"
    engine = Dockerd()
    try:
        try:
            engine.start()
            tarball = build_tarball(build_rootfs(tmp_path / "rootfs"), tmp_path / "busybox.tar")
        except (EngineUnavailable, BusyboxMissing) as exc:
            unavailable(f"no Docker engine for the docker runtime: {exc}")
        imported = engine.docker("import", str(tarball), image)
        assert imported.returncode == 0, imported.stderr.decode()
        # The docker CLI the executor runs finds the test's engine through DOCKER_HOST.
        fleet.start_executor("exec-docker", slots=1, backend="docker", DOCKER_HOST=engine.host)
        command = "cat README; echo uid=$(id -u); wget -q -T 2 -O- " + fleet.base + "/healthz"
        result = fleet.offload("run", "--repo", "demo", "--image", image, "--", "sh", "-c", command)
        assert result.returncode != 0  # wget: the container has no network
        assert "hello from demo" in result.stdout
        (job,) = fleet.api("GET", "/api/jobs").json()
        assert (job["state"], job["executor"]) == ("failed", "exec-docker")
        assert job["exitCode"] not in (None, 0)
        assert "step.docker.run" in [str(e["key"]) for e in fleet.logs(int(job["id"]))]
        # Removed with the job (--rm): nothing of it is left in the engine.
        assert engine.docker("ps", "--all", "--quiet").stdout.strip() == b""
    finally:
        fleet.stop_all()
        engine.stop()
