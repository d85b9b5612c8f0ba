"""The executor's configuration: environment variables, read and checked once at start."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit

from offload.config import parse_duration
from offload.executor.runtimes.base import Limits

DEFAULT_CPUS = 1.0
DEFAULT_MEMORY = 2 * 1024**3
DEFAULT_PIDS = 1024
DEFAULT_DISK = 10 * 1024**3
DEFAULT_TMP = 512 * 1024**2
DEFAULT_OUTPUT = 100 * 1024**2
# Steps of a root executor run as this host uid and gid: owned by nobody else on the host.
DEFAULT_JOB_USER = (100_000, 100_000)


class ConfigError(ValueError):
    """The environment does not describe a working executor; the message lists every problem."""


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


def _size(value: str, name: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    text = value.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a size; write e.g. 512M or 4G") from None


def default_data_dir() -> Path:
    """Where an executor keeps its image store: /var/lib when root, else the user's data dir."""
    if os.geteuid() == 0:
        return Path("/var/lib/offload-executor")
    return Path.home() / ".local" / "share" / "offload-executor"


@dataclass(frozen=True)
class ExecutorConfig:
    """Everything an executor needs to know, from EXECUTOR_* variables."""

    frontend_url: str
    token: str
    queues: list[str]
    backend: str
    max_jobs: int
    max_runtime: float
    job_cpus: float
    job_memory: int
    keep_workspaces: bool
    data_dir: Path
    name: str
    heartbeat_interval: float = 5.0
    poll_wait: float = 10.0
    stop_timeout: float = 30.0
    # Limits on by default (DESIGN.md §8); each is an EXECUTOR_JOB_* setting.
    job_pids: int = DEFAULT_PIDS
    job_disk: int = DEFAULT_DISK
    job_tmp: int = DEFAULT_TMP
    job_output: int = DEFAULT_OUTPUT
    # The host uid:gid steps run as; None: the executor's own (only when it is not root).
    job_user: tuple[int, int] | None = None
    job_allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()

    def limits(self) -> Limits:
        """The limits every step of this executor runs under."""
        uid, gid = self.job_user if self.job_user is not None else (None, None)
        return Limits(
            cpus=self.job_cpus,
            memory_bytes=self.job_memory,
            pids=self.job_pids,
            disk_bytes=self.job_disk,
            tmp_bytes=self.job_tmp,
            output_bytes=self.job_output,
            uid=uid,
            gid=gid,
            allowed_networks=self.job_allowed_networks,
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, default_backend: str = "sandbox"
    ) -> ExecutorConfig:
        """Read the environment; ConfigError listing every problem at once."""
        problems: list[str] = []
        url = (env.get("EXECUTOR_FRONTEND_URL") or "").rstrip("/")
        parts = urlsplit(url)
        if not url:
            problems.append(
                "EXECUTOR_FRONTEND_URL is required (the offload server, e.g. http://offload:8080)"
            )
        elif parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(f"EXECUTOR_FRONTEND_URL={url!r} must be http(s)://host[:port]")
        token = _first(env, "EXECUTOR_REGISTRATION_TOKEN", "EXECUTOR_FRONTEND_PASSWORD")
        if not token:
            problems.append(
                "EXECUTOR_REGISTRATION_TOKEN is required "
                "(see `offload executors token` on the server)"
            )
        one, many = env.get("EXECUTOR_QUEUE_NAME"), env.get("EXECUTOR_QUEUE_NAMES")
        if one and many:
            problems.append("set EXECUTOR_QUEUE_NAME or EXECUTOR_QUEUE_NAMES, not both")
        queues = [q.strip() for q in (many or one or "").split(",") if q.strip()]
        if not queues:
            problems.append(
                "EXECUTOR_QUEUE_NAME (or EXECUTOR_QUEUE_NAMES, comma-separated) is required"
            )
        max_jobs = _first(env, "EXECUTOR_MAX_NUM_JOBS", "EXECUTOR_MAXIMUM_NUM_JOBS") or "1"
        if not max_jobs.isdigit() or int(max_jobs) < 1:
            problems.append(f"EXECUTOR_MAX_NUM_JOBS={max_jobs!r} must be a whole number >= 1")
        try:
            runtime = parse_duration(env.get("EXECUTOR_MAXIMUM_RUNTIME_PER_JOB", "30m"))
        except ValueError as exc:
            problems.append(f"EXECUTOR_MAXIMUM_RUNTIME_PER_JOB: {exc}")
            runtime = None
        cpus_text = _first(env, "EXECUTOR_JOB_NUM_CPUS", "EXECUTOR_FIRECRACKER_NUM_CPUS") or str(
            DEFAULT_CPUS
        )
        try:
            cpus = float(cpus_text)
        except ValueError:
            problems.append(f"EXECUTOR_JOB_NUM_CPUS={cpus_text!r} must be a number")
            cpus = 0.0
        memory = DEFAULT_MEMORY
        memory_text = _first(env, "EXECUTOR_JOB_MEMORY", "EXECUTOR_FIRECRACKER_MEMORY")
        if memory_text:
            try:
                memory = _size(memory_text, "EXECUTOR_JOB_MEMORY")
            except ConfigError as exc:
                problems.append(str(exc))
        sizes: dict[str, int] = {}
        for name, default in (
            ("EXECUTOR_JOB_DISK", DEFAULT_DISK),
            ("EXECUTOR_JOB_TMP_SIZE", DEFAULT_TMP),
            ("EXECUTOR_JOB_OUTPUT_LIMIT", DEFAULT_OUTPUT),
        ):
            try:
                sizes[name] = _size(env[name], name) if env.get(name) else default
            except ConfigError as exc:
                problems.append(str(exc))
        pids_text = env.get("EXECUTOR_JOB_PIDS") or str(DEFAULT_PIDS)
        if not pids_text.isdigit():
            problems.append(f"EXECUTOR_JOB_PIDS={pids_text!r} must be a whole number")
        job_user = _job_user(env.get("EXECUTOR_JOB_USER", ""), problems)
        networks: list[IPv4Network | IPv6Network] = []
        for text in (env.get("EXECUTOR_JOB_ALLOWED_NETWORKS") or "").split(","):
            if text.strip():
                try:
                    networks.append(ip_network(text.strip(), strict=False))
                except ValueError:
                    problems.append(
                        f"EXECUTOR_JOB_ALLOWED_NETWORKS: {text.strip()!r} is not a network; "
                        "write e.g. 10.1.2.0/24,192.168.5.7"
                    )
        if problems:
            raise ConfigError("the executor cannot start:\n  - " + "\n  - ".join(problems))
        assert token is not None and runtime is not None
        return cls(
            frontend_url=url,
            token=token,
            queues=queues,
            backend=env.get("EXECUTOR_BACKEND") or default_backend,
            max_jobs=int(max_jobs),
            max_runtime=runtime.total_seconds(),
            job_cpus=cpus,
            job_memory=memory,
            keep_workspaces=env.get("EXECUTOR_KEEP_WORKSPACES", "").lower() in ("1", "true", "yes"),
            data_dir=Path(env.get("EXECUTOR_DATA_DIR") or default_data_dir()),
            name=env.get("EXECUTOR_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
            heartbeat_interval=parse_duration(
                env.get("EXECUTOR_HEARTBEAT_INTERVAL", "5s")
            ).total_seconds(),
            poll_wait=parse_duration(env.get("EXECUTOR_QUEUE_POLL_WAIT", "10s")).total_seconds(),
            job_pids=int(pids_text),
            job_disk=sizes["EXECUTOR_JOB_DISK"],
            job_tmp=sizes["EXECUTOR_JOB_TMP_SIZE"],
            job_output=sizes["EXECUTOR_JOB_OUTPUT_LIMIT"],
            job_user=job_user,
            job_allowed_networks=tuple(networks),
        )


def _job_user(text: str, problems: list[str]) -> tuple[int, int] | None:
    """EXECUTOR_JOB_USER as (uid, gid): `uid[:gid]`; default 100000:100000 when root."""
    if not text:
        return DEFAULT_JOB_USER if os.geteuid() == 0 else None
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit() or int(uid) == 0 or int(gid or uid) == 0:
        problems.append(
            f"EXECUTOR_JOB_USER={text!r} must be uid[:gid], whole numbers other than 0 "
            "(steps never run as host root), e.g. 100000:100000"
        )
        return None
    return int(uid), int(gid or uid)
