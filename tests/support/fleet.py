"""Real offload processes for end-to-end tests: a server, executors, and a repository."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from offload.db.url import DatabaseURL


def git(*args: str, cwd: Path) -> str:
    """Run git in `cwd`; its stdout."""
    result = subprocess.run(
        ["git", "-c", "user.email=dev@example.com", "-c", "user.name=Dev", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository with one commit of `files`; the commit."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


@dataclass
class Process:
    """A child process whose output is collected line by line in the background."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first output line matching `pattern`, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.popen.poll() is not None and not any(re.search(pattern, x) for x in self.lines):
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name} never printed {pattern!r}:\n" + "".join(self.lines[-40:])
        )

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the process and wait for it; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        code = self.popen.wait(timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return code


def spawn(name: str, args: list[str], env: dict[str, str]) -> Process:
    """Start `python -m offload ARGS` with `env` added to ours."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "offload", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Process(name, popen)


@dataclass
class Fleet:
    """A server on a database, and executors attached to it."""

    url: DatabaseURL
    data_dir: Path
    port: int = 0
    # The server's generic job queues (OFFLOAD_JOB_QUEUES); executors take `default` unless told.
    job_queues: str = "default,gpu"
    server: Process | None = None
    worker: Process | None = None
    executors: list[Process] = field(default_factory=list)
    # The first site admin's token, as the server printed it on its first start.
    admin_token: str = ""
    # More settings of the server and worker (OFFLOAD_...), e.g. a test's bundle size.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment that points offload commands at this fleet's database and server."""
        return {
            "OFFLOAD_DATABASE_URL": self.url.raw,
            "OFFLOAD_DATA_DIR": str(self.data_dir),
            "OFFLOAD_URL": self.base,
            "OFFLOAD_WORKER_PORT": "0",
            "OFFLOAD_JOB_QUEUES": self.job_queues,
            **({"OFFLOAD_TOKEN": self.admin_token} if self.admin_token else {}),
            **self.settings,
        }

    @property
    def headers(self) -> dict[str, str]:
        """The site admin's Authorization header."""
        return {"Authorization": f"token {self.admin_token}"}

    @property
    def base(self) -> str:
        """The server's URL."""
        return f"http://127.0.0.1:{self.port}"

    def offload(
        self, *args: str, stdin: str | None = None, timeout: float = 120, token: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run an offload command against this fleet (as the site admin, or with `token`)."""
        return subprocess.run(
            [sys.executable, "-m", "offload", *args],
            env={**os.environ, **self.env, **({"OFFLOAD_TOKEN": token} if token else {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_server(self) -> None:
        """Start (or restart, on the same port) the server."""
        args = ["server", "--port", str(self.port)]
        # Before its first start the port is not known yet: OFFLOAD_URL would name port 0 in
        # what the server prints, so it goes only once the port is known.
        env = self.env if self.port else {k: v for k, v in self.env.items() if k != "OFFLOAD_URL"}
        self.server = spawn("server", args, env)
        found = self.server.wait_for(r"offload server listening on http://127\.0\.0\.1:(\d+)")
        self.port = int(found.group(1))
        if not self.admin_token:
            self.admin_token = self.server.wait_for(r"echo (offload_\w+) \| offload login").group(1)

    def api(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One API call as the site admin (or with `token`)."""
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=60, **kwargs)

    def user(self, username: str, *, orgs: tuple[str, ...] = ()) -> str:
        """A new user (member of `orgs`, created when missing); a token of theirs."""
        created = self.api("POST", "/api/users", json={"username": username})
        assert created.status_code == 201, created.text
        for org in orgs:
            self.api("POST", "/api/orgs", json={"name": org})
            added = self.api("PUT", f"/api/orgs/{org}/members/{username}", json={"role": "member"})
            assert added.status_code == 204, added.text
        made = self.api("POST", f"/api/users/{username}/tokens", json={"note": "test"})
        assert made.status_code == 201, made.text
        return str(made.json()["token"])

    def token(self) -> str:
        """The executor token."""
        result = self.offload("executors", "token")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start_executor(
        self, name: str, *, slots: int = 4, backend: str = "sandbox", **extra: str
    ) -> Process:
        """Start an executor and wait until it is connected."""
        process = self.spawn_executor(
            name, token=self.token(), slots=slots, backend=backend, **extra
        )
        process.wait_for("connected to")
        return process

    def spawn_executor(
        self, name: str, *, token: str, slots: int = 4, backend: str = "sandbox", **extra: str
    ) -> Process:
        """Start an executor with the executor `token`, without waiting for it to connect."""
        env = {
            "EXECUTOR_FRONTEND_URL": self.base,
            "EXECUTOR_REGISTRATION_TOKEN": token,
            "EXECUTOR_QUEUE_NAME": "default",
            "EXECUTOR_BACKEND": backend,
            "EXECUTOR_MAX_NUM_JOBS": str(slots),
            "EXECUTOR_NAME": name,
            "EXECUTOR_DATA_DIR": str(self.data_dir / f"executor-{name}"),
            "EXECUTOR_HEARTBEAT_INTERVAL": "1s",
            **extra,
        }
        process = spawn(name, ["executor"], env)
        self.executors.append(process)
        return process

    def restart_server(self, signum: int = signal.SIGTERM) -> None:
        """Stop the server with `signum` and start it again on the same port."""
        assert self.server is not None, "the server was never started"
        self.server.stop(signum)
        self.start_server()

    def start_worker(
        self, *jobs: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> Process:
        """Start (or restart) `offload worker` (with only `jobs`, if given, and `env` added);
        unless told not to wait, wait until it runs them."""
        args = ["worker", *(a for job in jobs for a in ("--job", job))]
        self.worker = spawn("worker", args, {**self.env, **(env or {})})
        if wait:
            self.worker.wait_for(r"offload worker listening on")
        return self.worker

    def submit(self, repo: str, command: list[str], **fields: object) -> int:
        """Enqueue a generic job through the API; its id."""
        response = self.api("POST", "/api/jobs", json={"repo": repo, "command": command, **fields})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def job(self, job_id: int) -> dict[str, object]:
        """The job as the API shows it."""
        return dict(self.api("GET", f"/api/jobs/{job_id}").json())

    def logs(self, job_id: int) -> list[dict[str, object]]:
        """The job's log entries."""
        return list(self.api("GET", f"/api/jobs/{job_id}/logs").json())

    def wait_state(self, job_id: int, states: set[str], timeout: float = 60) -> dict[str, object]:
        """Poll until the job is in one of `states`."""
        deadline = time.monotonic() + timeout
        job: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                job = self.job(job_id)
            except httpx.TransportError:
                job = {}
            if job.get("state") in states:
                return job
            time.sleep(0.1)
        raise AssertionError(
            f"job {job_id} is {job.get('state')}, not in {states} after {timeout}s"
        )

    def stop_all(self) -> None:
        """Stop every process of the fleet."""
        others = [p for p in (self.worker, self.server) if p is not None]
        for process in [*self.executors, *others]:
            # Also those that already exited: their output pipe is closed here.
            process.stop(timeout=60)
