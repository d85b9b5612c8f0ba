"""The executor's configuration: environment variables, read and checked once at start.

Every setting is checked for its type and range before anything runs, and every problem is
listed at once, each naming the variable, the value and what would be valid (`SETTINGS` says
what each one is). `check_data_dir` checks the data directory on disk; `unknown_settings`
names EXECUTOR_* variables that no setting reads (a typo is why a setting "is ignored").
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit

from offload.config import parse_duration, parse_queue_names
from offload.executor.datadir import default_data_dir, is_default
from offload.executor.runtimes.base import Limits
from offload.executor.runtimes.registry import RUNTIMES, RuntimeSettings
from offload.protocol.wire import MAX_LABEL, MAX_NAME, MAX_QUEUES

DEFAULT_CPUS = 1.0
DEFAULT_MEMORY = 2 * 1024**3
DEFAULT_PIDS = 1024
DEFAULT_DISK = 10 * 1024**3
DEFAULT_TMP = 512 * 1024**2
DEFAULT_OUTPUT = 100 * 1024**2
# Steps of a root executor run as this host uid and gid: owned by nobody else on the host.
DEFAULT_JOB_USER = (100_000, 100_000)

# The ranges settings must be in. Slots: one executor process keeps each running job's log
# writer, heartbeat and git proxy; past a few hundred, run more executors instead.
MAX_SLOTS = 256
# The server hands a job to another executor after 25 s without a heartbeat (QueueSpec's
# stalled_after): an interval above 10 s would lose jobs whenever one heartbeat is slow.
HEARTBEAT_RANGE = (0.1, 10.0)
# The server holds a dequeue open this long when it has no job (0: answer at once).
POLL_WAIT_RANGE = (0.0, 60.0)
RUNTIME_RANGE = (1.0, 7 * 86400.0)
# Below these a step cannot even start a shell and git; above, they are typos (or unbounded).
MIN_MEMORY = 64 * 1024**2
DISK_RANGE = (64 * 1024**2, 64 * 1024**4)
MIN_TMP = 1024**2
OUTPUT_RANGE = (1024, 10 * 1024**3)
# The kernel's own most (PID_MAX_LIMIT on 64-bit); under 16 a shell pipeline cannot run.
PIDS_RANGE = (16, 4 * 1024**2)
# cgroup cpu quotas are whole milliseconds of a 100 ms period.
MIN_CPUS = 0.01
# The data directory holds workspaces and unpacked images.
MIN_FREE = 1024**3

# Every EXECUTOR_* variable an executor reads, and what it may be.
SETTINGS: dict[str, str] = {
    "EXECUTOR_FRONTEND_URL": "the server, http(s)://host[:port][/path] (required)",
    "EXECUTOR_REGISTRATION_TOKEN": "the executor token, `offload executors token` (required)",
    "EXECUTOR_FRONTEND_PASSWORD": "another name of EXECUTOR_REGISTRATION_TOKEN",
    "EXECUTOR_QUEUE_NAME": "the queue to take jobs from (this or EXECUTOR_QUEUE_NAMES)",
    "EXECUTOR_QUEUE_NAMES": f"queues, comma-separated, at most {MAX_QUEUES}",
    "EXECUTOR_BACKEND": "the runtime: sandbox, docker or shell",
    "EXECUTOR_MAX_NUM_JOBS": f"jobs at once, 1 to {MAX_SLOTS} (default 1)",
    "EXECUTOR_MAXIMUM_NUM_JOBS": "another name of EXECUTOR_MAX_NUM_JOBS",
    "EXECUTOR_MAXIMUM_RUNTIME_PER_JOB": "a job's wall-clock limit, 1s to 7d (default 30m)",
    "EXECUTOR_HEARTBEAT_INTERVAL": "100ms to 10s (default 5s)",
    "EXECUTOR_QUEUE_POLL_WAIT": "how long a dequeue waits for a job, 0 to 60s (default 10s)",
    "EXECUTOR_JOB_NUM_CPUS": "CPUs per step, 0.01 to this machine's CPUs (default 1)",
    "EXECUTOR_FIRECRACKER_NUM_CPUS": "another name of EXECUTOR_JOB_NUM_CPUS",
    "EXECUTOR_JOB_MEMORY": "memory per step, 64M to this machine's memory (default 2G)",
    "EXECUTOR_FIRECRACKER_MEMORY": "another name of EXECUTOR_JOB_MEMORY",
    "EXECUTOR_JOB_PIDS": "processes per step, 16 to 4194304 (default 1024)",
    "EXECUTOR_JOB_DISK": "a workspace's size on disk, 64M to 64T (default 10G)",
    "EXECUTOR_JOB_TMP_SIZE": "a step's /tmp, 1M to this machine's memory (default 512M)",
    "EXECUTOR_JOB_OUTPUT_LIMIT": "a job's log output, 1K to 10G (default 100M)",
    "EXECUTOR_JOB_USER": "the host uid[:gid] steps run as, not 0 (default 100000:100000 as root)",
    "EXECUTOR_JOB_ALLOWED_NETWORKS": "private networks a job with network may reach",
    "EXECUTOR_KEEP_WORKSPACES": "true or false (default false)",
    "EXECUTOR_DATA_DIR": "a writable directory with 1G free (images and workspaces)",
    "EXECUTOR_NAME": "1 to 255 printable ASCII characters, no spaces (default: host-random)",
}

_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:ib|i|b)?$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}
# Printable ASCII without spaces: names and tokens travel in HTTP headers.
_TOKEN = re.compile(r"^[!-~]+$")


class ConfigError(ValueError):
    """The environment does not describe a working executor; the message lists every problem."""


def cannot_start(problems: list[str]) -> ConfigError:
    """The error that lists `problems`, one a line."""
    return ConfigError("the executor cannot start:\n  - " + "\n  - ".join(problems))


def size_text(value: float) -> str:
    """A byte count the way settings write it: 512M, 2G, 1.5T."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit.lower()]
        if value >= scale:
            return f"{value / scale:.1f}".removesuffix(".0") + unit
    return f"{value:.0f}"


def _seconds(value: float) -> str:
    """A duration the way settings write it: 250ms, 10s, 5m, 7d."""
    if 0 < value < 1:
        return f"{value * 1000:g}ms"
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= scale and value % scale == 0:
            return f"{value / scale:g}{unit}"
    return f"{value:g}s"


def machine_memory() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class _Reader:
    """Reads settings from `env`, collecting a problem for each bad one instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, *aliases: str) -> tuple[str, str] | None:
        """(the variable that was set, its value stripped); None when unset or empty."""
        given = [(n, self.env[n].strip()) for n in (name, *aliases) if self.env.get(n, "").strip()]
        if len({value for _, value in given}) > 1:
            both = " and ".join(n for n, _ in given)
            self.problems.append(f"{both} are both set, to different values; set only {name}")
        return given[0] if given else None

    def whole(self, name: str, *aliases: str, default: int, low: int, high: int) -> int:
        """A whole number in [low, high]."""
        found = self.text(name, *aliases)
        if found is None:
            return default
        used, text = found
        if not text.isdigit() or not low <= int(text) <= high:
            self.problems.append(
                f"{used}={text!r} is not valid: write a whole number from {low} to {high}"
            )
            return default
        return int(text)

    def number(
        self, name: str, *aliases: str, default: float, low: float, high: float, why: str = ""
    ) -> float:
        """A finite decimal number in [low, high] (no NaN, inf or exponent)."""
        found = self.text(name, *aliases)
        if found is None:
            return default
        used, text = found
        if not _NUMBER.match(text) or not low <= float(text) <= high:
            self.problems.append(
                f"{used}={text!r} is not valid: write a number from {low:g} to {high:g}{why}, "
                f"e.g. {default:g} or 0.5"
            )
            return default
        return float(text)

    def duration(self, name: str, *, default: float, low: float, high: float) -> float:
        """A duration (30s, 5m, 250ms) in [low, high] seconds."""
        found = self.text(name)
        if found is None:
            return default
        used, text = found
        valid = (
            f"from {_seconds(low)} to {_seconds(high)}, e.g. {_seconds(default)} "
            "(units: ms, s, m, h, d)"
        )
        try:
            seconds = parse_duration(text).total_seconds()
        except (ValueError, OverflowError):
            self.problems.append(f"{used}={text!r} is not a duration: write one {valid}")
            return default
        if not low <= seconds <= high:
            self.problems.append(f"{used}={text!r} is out of range: write a duration {valid}")
            return default
        return float(seconds)

    def size(
        self, name: str, *aliases: str, default: int, low: int, high: int, why: str = ""
    ) -> int:
        """A size (512M, 4G, 1.5GiB, or bytes) in [low, high] bytes."""
        found = self.text(name, *aliases)
        if found is None:
            return default
        used, text = found
        match = _SIZE.match(text.lower())
        value = float(match.group(1)) * _UNITS[match.group(2)] if match else -1.0
        if not low <= value <= high:
            what = "out of range" if match else "not a size"
            self.problems.append(
                f"{used}={text!r} is {what}: write a size from {size_text(low)} to "
                f"{size_text(high)}{why}, e.g. {size_text(default)}"
            )
            return default
        return int(value)

    def boolean(self, name: str, *, default: bool) -> bool:
        """true/false, yes/no, on/off or 1/0, in any case."""
        found = self.text(name)
        if found is None:
            return default
        used, text = found
        if text.lower() not in _BOOLEANS:
            self.problems.append(f"{used}={text!r} is not valid: write true or false")
            return default
        return _BOOLEANS[text.lower()]


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
    # This start of the executor: names its workspace directory, its lock and its cgroups,
    # so that the next start can tell what a dead run left (executor/rundir.py).
    run_id: str = field(default_factory=lambda: new_run_id("executor"))
    # Whether `offload executor images` finds data_dir without --data-dir (datadir.py): the
    # import a missing image's error suggests names it only when it must.
    data_dir_is_default: bool = False

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

    def runtime_settings(self) -> RuntimeSettings:
        """What the runtimes need of this config (images under the data dir)."""
        return RuntimeSettings(
            images_dir=self.data_dir / "images",
            cgroup_owner=self.run_id,
            images_data_dir=None if self.data_dir_is_default else self.data_dir,
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, default_backend: str = "sandbox"
    ) -> ExecutorConfig:
        """Read the environment; ConfigError listing every problem at once."""
        read = _Reader(env)
        problems = read.problems
        url = _frontend_url(read)
        token = read.text("EXECUTOR_REGISTRATION_TOKEN", "EXECUTOR_FRONTEND_PASSWORD")
        if token is None:
            problems.append(
                "EXECUTOR_REGISTRATION_TOKEN is required "
                "(see `offload executors token` on the server)"
            )
        elif not _TOKEN.match(token[1]):
            # Never repeat a secret in an error message.
            problems.append(
                f"{token[0]} must be printable ASCII without spaces (it is sent in a header); "
                "copy it again from `offload executors token`"
            )
        queues = _queues(read)
        backend = read.text("EXECUTOR_BACKEND")
        if backend is not None and backend[1] not in RUNTIMES:
            problems.append(
                f"EXECUTOR_BACKEND={backend[1]!r} is not a runtime; valid runtimes are: "
                f"{', '.join(sorted(RUNTIMES))}"
            )
        max_jobs = read.whole(
            "EXECUTOR_MAX_NUM_JOBS", "EXECUTOR_MAXIMUM_NUM_JOBS", default=1, low=1, high=MAX_SLOTS
        )
        runtime = read.duration(
            "EXECUTOR_MAXIMUM_RUNTIME_PER_JOB",
            default=1800.0,
            low=RUNTIME_RANGE[0],
            high=RUNTIME_RANGE[1],
        )
        heartbeat = read.duration(
            "EXECUTOR_HEARTBEAT_INTERVAL",
            default=5.0,
            low=HEARTBEAT_RANGE[0],
            high=HEARTBEAT_RANGE[1],
        )
        poll_wait = read.duration(
            "EXECUTOR_QUEUE_POLL_WAIT",
            default=10.0,
            low=POLL_WAIT_RANGE[0],
            high=POLL_WAIT_RANGE[1],
        )
        cpus_here = os.cpu_count() or 1
        cpus = read.number(
            "EXECUTOR_JOB_NUM_CPUS",
            "EXECUTOR_FIRECRACKER_NUM_CPUS",
            default=DEFAULT_CPUS,
            low=MIN_CPUS,
            high=float(cpus_here),
            why=" (this machine's CPUs)",
        )
        memory_here = machine_memory()
        here = " (this machine's memory)"
        memory = read.size(
            "EXECUTOR_JOB_MEMORY",
            "EXECUTOR_FIRECRACKER_MEMORY",
            default=DEFAULT_MEMORY,
            low=MIN_MEMORY,
            high=memory_here,
            why=here,
        )
        pids = read.whole(
            "EXECUTOR_JOB_PIDS", default=DEFAULT_PIDS, low=PIDS_RANGE[0], high=PIDS_RANGE[1]
        )
        disk = read.size(
            "EXECUTOR_JOB_DISK", default=DEFAULT_DISK, low=DISK_RANGE[0], high=DISK_RANGE[1]
        )
        # /tmp is a tmpfs: its pages are memory.
        tmp = read.size(
            "EXECUTOR_JOB_TMP_SIZE", default=DEFAULT_TMP, low=MIN_TMP, high=memory_here, why=here
        )
        output = read.size(
            "EXECUTOR_JOB_OUTPUT_LIMIT",
            default=DEFAULT_OUTPUT,
            low=OUTPUT_RANGE[0],
            high=OUTPUT_RANGE[1],
        )
        keep = read.boolean("EXECUTOR_KEEP_WORKSPACES", default=False)
        job_user = _job_user((read.text("EXECUTOR_JOB_USER") or ("", ""))[1], problems)
        networks = _networks(read)
        data_dir = read.text("EXECUTOR_DATA_DIR")
        name = read.text("EXECUTOR_NAME")
        if name is not None and (len(name[1]) > MAX_NAME or not _TOKEN.match(name[1])):
            problems.append(
                f"EXECUTOR_NAME={env['EXECUTOR_NAME']!r} is not valid: write 1 to {MAX_NAME} "
                "printable ASCII characters without spaces (it is sent in headers and "
                "heartbeats), e.g. build-7"
            )
        if problems:
            raise cannot_start(problems)
        assert token is not None
        directory = Path(data_dir[1]) if data_dir else default_data_dir()
        executor = name[1] if name else f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        return cls(
            frontend_url=url,
            token=token[1],
            queues=queues,
            backend=backend[1] if backend else default_backend,
            max_jobs=max_jobs,
            max_runtime=runtime,
            job_cpus=cpus,
            job_memory=memory,
            keep_workspaces=keep,
            data_dir=directory,
            data_dir_is_default=is_default(directory, env),
            name=executor,
            heartbeat_interval=heartbeat,
            poll_wait=poll_wait,
            job_pids=pids,
            job_disk=disk,
            job_tmp=tmp,
            job_output=output,
            job_user=job_user,
            job_allowed_networks=networks,
            run_id=new_run_id(executor),
        )


def new_run_id(name: str) -> str:
    """A fresh id for one start of the executor called `name`: its name (cut) and a random part."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return f"{safe}-{uuid.uuid4().hex[:12]}"


def _frontend_url(read: _Reader) -> str:
    found = read.text("EXECUTOR_FRONTEND_URL")
    if found is None:
        read.problems.append(
            "EXECUTOR_FRONTEND_URL is required (the offload server, e.g. http://offload:8080)"
        )
        return ""
    url = found[1].rstrip("/")
    # Never repeat a password in an error message.
    shown = re.sub(r"//[^/@]*@", "//***@", url)
    valid = "write http(s)://host[:port][/path], e.g. http://offload:8080"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = urlsplit(""), None
        read.problems.append(f"EXECUTOR_FRONTEND_URL={shown!r} has a bad host or port: {valid}")
        return url
    problem = ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "is not an http(s) URL"
    elif not _TOKEN.match(url):
        problem = "contains spaces or control characters"
    elif parts.username is not None or parts.password is not None:
        problem = "carries credentials (the token goes in EXECUTOR_REGISTRATION_TOKEN)"
    elif parts.query or parts.fragment:
        problem = "has a query or fragment"
    elif port == 0:
        problem = "names port 0"
    if problem:
        read.problems.append(f"EXECUTOR_FRONTEND_URL={shown!r} {problem}: {valid}")
    return url


def _queues(read: _Reader) -> list[str]:
    one, many = read.env.get("EXECUTOR_QUEUE_NAME"), read.env.get("EXECUTOR_QUEUE_NAMES")
    if one and many:
        read.problems.append("set EXECUTOR_QUEUE_NAME or EXECUTOR_QUEUE_NAMES, not both")
        return []
    used = "EXECUTOR_QUEUE_NAMES" if many else "EXECUTOR_QUEUE_NAME"
    text = (many or one or "").strip()
    if not text:
        read.problems.append(
            "EXECUTOR_QUEUE_NAME (or EXECUTOR_QUEUE_NAMES, comma-separated) is required"
        )
        return []
    try:
        queues = parse_queue_names(text)
    except ValueError as exc:
        read.problems.append(f"{used}={text!r} is not valid: {exc}")
        return []
    if used == "EXECUTOR_QUEUE_NAME" and len(queues) > 1:
        read.problems.append(
            f"EXECUTOR_QUEUE_NAME={text!r} names several queues; list them in "
            "EXECUTOR_QUEUE_NAMES instead"
        )
    long = [q for q in queues if len(q) > MAX_LABEL]
    if long or len(queues) > MAX_QUEUES:
        read.problems.append(
            f"{used}={text!r} is not valid: at most {MAX_QUEUES} queues of at most "
            f"{MAX_LABEL} characters each"
        )
    return list(queues)


def _networks(read: _Reader) -> tuple[IPv4Network | IPv6Network, ...]:
    found = read.text("EXECUTOR_JOB_ALLOWED_NETWORKS")
    networks: list[IPv4Network | IPv6Network] = []
    for text in (found[1] if found else "").split(","):
        if text.strip():
            try:
                networks.append(ip_network(text.strip(), strict=False))
            except ValueError:
                read.problems.append(
                    f"EXECUTOR_JOB_ALLOWED_NETWORKS: {text.strip()!r} is not a network; "
                    "write e.g. 10.1.2.0/24,192.168.5.7"
                )
    return tuple(networks)


def _job_user(text: str, problems: list[str]) -> tuple[int, int] | None:
    """EXECUTOR_JOB_USER as (uid, gid): `uid[:gid]`; default 100000:100000 when root."""
    if not text:
        return DEFAULT_JOB_USER if os.geteuid() == 0 else None
    uid, _, gid = text.partition(":")
    ids = (uid, gid or uid)
    # 2**32 - 1 is the kernel's "no id" (-1): ids go up to one below it.
    if not all(i.isdigit() and 0 < int(i) < 2**32 - 1 for i in ids):
        problems.append(
            f"EXECUTOR_JOB_USER={text!r} must be uid[:gid], whole numbers from 1 to "
            "4294967294 (steps never run as host root), e.g. 100000:100000"
        )
        return None
    return int(uid), int(gid or uid)


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    """A warning for each EXECUTOR_* variable no setting reads, naming the closest one."""
    warnings = []
    for name in sorted(env):
        if not name.startswith("EXECUTOR_") or name in SETTINGS:
            continue
        close = difflib.get_close_matches(name, SETTINGS, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is not an executor setting, so it has no effect{hint}")
    return warnings


def check_data_dir(config: ExecutorConfig) -> list[str]:
    """Make sure EXECUTOR_DATA_DIR is a writable directory with room; warnings, or ConfigError.

    Creates the directory (and its workspaces and images directories) when missing, and
    writes and removes a probe file in each.
    """
    root = config.data_dir
    where = f"EXECUTOR_DATA_DIR={str(root)!r}"
    for path in (root, root / "workspaces", root / "images"):
        what = where if path == root else f"{where}: its {path.name} directory {str(path)!r}"
        if path.exists() and not path.is_dir():
            raise cannot_start(
                [
                    f"{what} is not a directory; point EXECUTOR_DATA_DIR at a directory (it "
                    "is created when missing) or move that file away"
                ]
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".offload-probe-{uuid.uuid4().hex}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"offload")
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as exc:
            raise cannot_start(
                [
                    f"{what} is not a writable directory for uid {os.geteuid()} "
                    f"({exc.strerror or exc}); give it to this user, or choose another one"
                ]
            ) from None
    free = shutil.disk_usage(root).free
    if free < MIN_FREE:
        raise cannot_start(
            [
                f"{where} has {size_text(free)} free on its filesystem; an executor needs at "
                f"least {size_text(MIN_FREE)} there for images and workspaces: free some space "
                "or choose a directory on another filesystem"
            ]
        )
    room = config.job_disk * config.max_jobs
    if free < room:
        return [
            f"{where} has {size_text(free)} free, less than EXECUTOR_JOB_DISK "
            f"({size_text(config.job_disk)}) times EXECUTOR_MAX_NUM_JOBS ({config.max_jobs}): "
            "jobs may fill that filesystem before their disk limit stops them"
        ]
    return []
