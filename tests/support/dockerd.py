"""A private Docker engine for tests: dockerd on its own socket, data root and pid file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class EngineUnavailable(RuntimeError):
    """dockerd cannot run here; the message says why."""


def docker_cli() -> str:
    """The docker CLI to use: docker.io's own when installed, else whatever is on PATH."""
    # /usr/local/bin/docker may be a client-only build that shadows the packaged one.
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if found is None:
        raise EngineUnavailable("no docker CLI: apt-get install docker.io")
    return found


class Dockerd:
    """One dockerd (and the containerd it starts) that touches nothing outside its directory."""

    def __init__(self) -> None:
        # Short: the sockets under it must fit in a unix socket path (108 bytes).
        self.base = Path(tempfile.mkdtemp(prefix="offload-dockerd-", dir="/tmp"))
        self.host = f"unix://{self.base}/docker.sock"
        self.cli = ""
        # Container cgroups go under a parent of our own, removed again in stop().
        self.cgroup_parent = f"/{self.base.name}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start dockerd and wait until it answers; EngineUnavailable with its log otherwise."""
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(dockerd).exists():
            raise EngineUnavailable("dockerd is not installed: apt-get install docker.io")
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd needs root; run the tests as root")
        self.cli = docker_cli()
        log = (self.base / "dockerd.log").open("wb")
        # No bridge and no iptables rules: nothing to clean up on the host afterwards, and
        # steps run with --network none anyway.
        self._proc = subprocess.Popen(
            [
                dockerd,
                "--data-root", str(self.base / "data"),
                "--exec-root", str(self.base / "exec"),
                "--pidfile", str(self.base / "dockerd.pid"),
                "--host", self.host,
                "--bridge", "none",
                "--iptables=false",
                "--ip6tables=false",
                "--cgroup-parent", self.cgroup_parent,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EngineUnavailable(
                    f"dockerd exited with {self._proc.returncode}: {self.log()}"
                )
            if self.docker("version").returncode == 0:
                return
            time.sleep(0.2)
        raise EngineUnavailable(f"dockerd did not answer within {timeout:g}s: {self.log()}")

    def docker(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run the docker CLI against this engine."""
        return subprocess.run(
            [self.cli, "--host", self.host, *args],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def log(self) -> str:
        """The last lines dockerd wrote."""
        with contextlib.suppress(OSError):
            lines = (self.base / "dockerd.log").read_text(errors="replace").splitlines()
            return " | ".join(lines[-5:])
        return "no log"

    def stop(self) -> None:
        """Stop dockerd (it stops its containerd), then delete its directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        # containerd normally exits with dockerd; make sure, by its own pid file.
        for pidfile in self.base.glob("exec/containerd/*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        # Mounts of containers that a killed dockerd did not unmount: deepest first.
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(self.base))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        for group in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent.strip('/')}"):
            with contextlib.suppress(OSError):
                group.rmdir()
