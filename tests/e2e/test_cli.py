"""The `offload` command as users run it: real processes, real databases, real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from offload.db.url import DatabaseURL


def offload(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_of_every_command_has_examples() -> None:
    for command in (
        ["up"],
        ["server"],
        ["worker"],
        ["migrate", "up"],
        ["migrate", "status"],
        ["version"],
        ["queues"],
        ["repos", "add"],
        ["repos", "list"],
        ["repos", "sync"],
        ["codeintel", "infer"],
        ["run"],
        ["jobs", "list"],
        ["jobs", "logs"],
        ["jobs", "cancel"],
        ["jobs", "retry"],
        ["executor"],
        ["executor", "validate"],
        ["executor", "images", "import"],
        ["executors", "token"],
        ["executors", "list"],
        ["secrets", "set"],
        ["secrets", "list"],
        ["secrets", "rotate-key"],
        ["login"],
        ["logout"],
        ["whoami"],
        ["users", "add"],
        ["users", "list"],
        ["users", "disable"],
        ["orgs", "add"],
        ["orgs", "members"],
        ["tokens", "create"],
        ["tokens", "list"],
        ["tokens", "revoke"],
        ["audit"],
        ["queues", "grant"],
        ["queues", "revoke"],
        ["queues", "grants"],
    ):
        result = offload(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Example" in result.stdout, f"offload {' '.join(command)} --help shows no example"


def test_malformed_database_url_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    for command in (["server"], ["worker"], ["migrate", "status"], ["migrate", "up"]):
        result = offload(*command, env={"OFFLOAD_DATABASE_URL": "postgres//nohost"})
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "OFFLOAD_DATABASE_URL" in lines[0] and "expected postgresql://" in lines[0]


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = offload("server", env={"OFFLOAD_PORT": "eighty"})
    assert result.returncode == 2
    assert "OFFLOAD_PORT" in result.stderr and "'eighty'" in result.stderr
    result = offload("server", env={"OFFLOAD_JOB_QUEUES": "default,GPU"})
    assert result.returncode == 2
    assert "OFFLOAD_JOB_QUEUES" in result.stderr and "'GPU' must be lowercase" in result.stderr
    weights = {"OFFLOAD_JOB_QUEUES": "default,gpu", "OFFLOAD_EXECUTOR_QUEUE_WEIGHTS": "gpus=3"}
    result = offload("server", env=weights)
    assert result.returncode == 2
    assert "OFFLOAD_EXECUTOR_QUEUE_WEIGHTS names gpus, which is not a queue" in result.stderr
    assert "the queues are default, gpu" in result.stderr


def test_unknown_worker_job_lists_the_valid_ones() -> None:
    result = offload("worker", "--job", "queues.resetter", "--job", "no.such-job")
    assert result.returncode == 2
    assert "unknown job no.such-job" in result.stderr
    for name in ("queues.resetter", "queues.janitor", "metrics.queue-size"):
        assert name in result.stderr


def test_worker_list_prints_each_job_on_one_line() -> None:
    result = offload("worker", "--list")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.strip().splitlines()]
    assert {"queues.resetter", "queues.janitor", "metrics.queue-size"} <= set(names)
    assert all(len(line.split()) > 1 for line in result.stdout.strip().splitlines())


def test_unreachable_database_is_retried_with_backoff_once_per_attempt() -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/offload"
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "server"],
        env={**os.environ, "OFFLOAD_DATABASE_URL": url},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    # Counted from the first attempt, not from the start: a loaded machine starts Python slowly.
    first = process.stderr.readline()
    assert "attempt 1" in first, first
    time.sleep(5.5)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=10)
    stderr = first + rest
    attempts = re.findall(r"database unavailable \(attempt (\d+)\).*retrying in ([\d.]+)s", stderr)
    # 1 s, 2 s, 4 s between attempts: attempts 2 and 3 come 1 s and 3 s after the first, the
    # fourth only after 7 s: three (or four on a slow wake-up) in 5.5 s, never a tight loop.
    assert 3 <= len(attempts) <= 4, stderr
    assert [int(n) for n, _ in attempts] == list(range(1, len(attempts) + 1))
    delays = [float(d) for _, d in attempts]
    assert delays == sorted(delays) and delays[0] == 1.0 and delays[2] == 4.0
    assert "127.0.0.1" in stderr


def test_migrate_status_and_up(db_url: DatabaseURL, tmp_path: Path) -> None:
    env = {"OFFLOAD_DATABASE_URL": db_url.raw}
    result = offload("migrate", "status", env=env)
    assert result.returncode == 0 and "up to date" in result.stdout
    empty = {"OFFLOAD_DATA_DIR": str(tmp_path / "fresh")}
    assert offload("migrate", "status", env=empty).returncode == 3
    refused = offload("server", "--port", "0", env=empty)
    assert refused.returncode == 1 and "offload migrate up" in refused.stderr
    assert offload("migrate", "up", env=empty).returncode == 0
    shown = offload("migrate", "status", env=empty)
    assert shown.returncode == 0 and "up to date" in shown.stdout


def test_offload_up_runs_server_and_worker_until_sigterm(tmp_path: Path) -> None:
    env = {
        "OFFLOAD_DATA_DIR": str(tmp_path / "data"),
        "OFFLOAD_WORKER_PORT": "0",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "up", "--port", "0"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # The local executor prints its own start line, before or after this one.
        seen = [process.stdout.readline() for _ in range(2)]
        line = next((x for x in seen if "offload is up" in x), "".join(seen))
        match = re.search(r"offload is up at (http://\S+)", line)
        assert match, line
        assert any(f"offload executor {socket.gethostname()}-local connected" in x for x in seen)
        address = match.group(1)
        assert httpx.get(f"{address}/healthz", timeout=5).json()["status"] == "ok"
        metrics = httpx.get(f"{address}/metrics", timeout=5).text
        assert 'offload_queue_records{queue="default",state="queued"} 0.0' in metrics
        worker = re.search(r"worker metrics on (http://\S+)/metrics", line)
        assert worker
        assert httpx.get(f"{worker.group(1)}/healthz", timeout=5).status_code == 200
        assert (tmp_path / "data" / "offload.db").is_file()
        # The laptop mode signs this machine's CLI in as the first site admin.
        me = offload("whoami", env={"XDG_CONFIG_HOME": env["XDG_CONFIG_HOME"]})
        assert me.returncode == 0 and "admin (site admin)" in me.stdout, me.stderr
    finally:
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert stderr.count("offload created the first site admin") == 1, stderr
    assert time.monotonic() - began < 40


@pytest.mark.parametrize("fmt", ["json"])
def test_json_logs_are_one_object_per_line(fmt: str, tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/offload"
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "--log-format", fmt, "server"],
        env={**os.environ, "OFFLOAD_DATABASE_URL": url},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=10)
    entries = [json.loads(line) for line in (first + rest).strip().splitlines()]
    assert entries and entries[0]["level"] == "warning" and entries[0]["attempt"] == 1


def test_server_serves_health_metrics_and_stops_cleanly(db_url: DatabaseURL) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "offload", "server", "--port", "0"],
        env={**os.environ, "OFFLOAD_DATABASE_URL": db_url.raw},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = ""
    while not (match := re.search(r"offload server listening on (http://\S+)", seen)):
        line = process.stderr.readline()
        assert line, seen
        seen += line
    address = match.group(1)
    token = re.search(r"echo (offload_\w+) \| offload login", seen)
    assert token, seen
    try:
        assert httpx.get(f"{address}/healthz", timeout=5).json()["status"] == "ok"
        assert "version" in httpx.get(f"{address}/version", timeout=5).json()
        exposition = httpx.get(f"{address}/metrics", timeout=5).text
        assert 'offload_queue_oldest_queued_seconds{queue="default"} 0.0' in exposition
        assert httpx.get(f"{address}/api/queues", timeout=5).status_code == 401
        headers = {"Authorization": f"token {token.group(1)}"}
        queues = httpx.get(f"{address}/api/queues", headers=headers, timeout=5).json()
        assert queues[0]["queue"] == "default" and queues[0]["counts"]["queued"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "offload server stopped" in rest
